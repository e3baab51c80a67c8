"""The plugin object QGIS creates through ``classFactory``."""
import os

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtGui import QIcon

from .dependencies import missing_packages
from .provider import BerundaProvider

MENU = "&Berunda"
ICONS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "icons")


def open_algorithm_dialog(algorithm_id, parameters=None):
    """Processing's own dialog for one of our algorithms (as from the Toolbox)."""
    import processing  # noqa: PLC0415 - the Processing plugin is loaded by then

    return processing.execAlgorithmDialog(algorithm_id, parameters or {})


class BerundaPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.actions = []
        self.message = None

    def initProcessing(self):  # noqa: N802 (QGIS API)
        if self.provider is None:
            self.provider = BerundaProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()
        if self.iface is None:
            return
        try:   # Qt6 (QGIS 4) moved QAction to QtGui
            from qgis.PyQt.QtGui import QAction  # noqa: PLC0415
        except ImportError:   # Qt5 (QGIS 3)
            from qgis.PyQt.QtWidgets import QAction  # noqa: PLC0415

        window = self.iface.mainWindow()
        for text, algorithm, icon in (
                ("Install dependencies…", "berunda:install_dependencies", "install_dependencies"),
                ("Diagnostics…", "berunda:diagnostics", "diagnostics")):
            action = QAction(QIcon(os.path.join(ICONS, f"{icon}.svg")), text, window)
            action.setObjectName(f"berunda_{icon}")
            action.triggered.connect(lambda _checked=False, a=algorithm: open_algorithm_dialog(a))
            self.iface.addPluginToMenu(MENU, action)
            self.actions.append(action)
        self.warn_if_missing()

    def warn_if_missing(self):
        """A message bar with an 'Install dependencies…' button when torch & co. are missing
        from the engine's environment (found from package metadata, without importing them;
        versions are checked by the engine itself when it runs)."""
        if self.iface is None:
            return
        missing = missing_packages()
        if not missing:
            return
        text = "needs " + ", ".join(missing) + " to train and classify."
        from qgis.PyQt.QtWidgets import QPushButton  # noqa: PLC0415

        bar = self.iface.messageBar()
        item = bar.createMessage("Berunda", text)
        button = QPushButton("Install dependencies…", item)
        button.clicked.connect(lambda: open_algorithm_dialog("berunda:install_dependencies"))
        item.layout().addWidget(button)
        self.message = bar.pushWidget(item, Qgis.MessageLevel.Warning, 0)

    def unload(self):
        for action in self.actions:
            if self.iface is not None:
                self.iface.removePluginMenu(MENU, action)
            action.deleteLater()
        self.actions = []
        if self.message is not None and self.iface is not None:
            try:
                self.iface.messageBar().popWidget(self.message)
            except RuntimeError:   # already closed by the user
                pass
            self.message = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
