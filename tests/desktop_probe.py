"""Run inside the QGIS desktop application (``qgis --code tests/desktop_probe.py``) with the
Berunda plugin enabled: checks the Plugins menu > Berunda entries, triggers "Install
dependencies…" (Processing's dialog opens, as for a user), screenshots the main window and
the dialog, writes what it found as JSON to $BERUNDA_PROBE_OUT and quits.  Used by
tests/test_desktop.py."""
import json
import os

from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins

OUT = os.environ["BERUNDA_PROBE_OUT"]
PREFIX = os.environ["BERUNDA_PROBE_SHOTS"]
result = {"plugin_loaded": "berunda" in plugins, "menu": {}, "errors": []}


def finish():
    with open(OUT, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    os._exit(0)   # QGIS's own exit path asks questions (save project?) and is slow


def berunda_menu():
    for action in iface.pluginMenu().actions():
        if action.menu() is not None and action.text().replace("&", "") == "Berunda":
            return action.menu()
    return None


def grab(widget, name):
    image = QApplication.primaryScreen().grabWindow(int(widget.winId())).toImage()
    if image.isNull() or image.width() < 50:
        image = widget.grab().toImage()
    path = f"{PREFIX}_{name}.png"
    image.save(path)
    return path


def dialog_open():
    try:
        # without a window manager nothing is "active": look for the visible dialog
        dialog = QApplication.activeModalWidget() or next(
            (w for w in QApplication.topLevelWidgets()
             if w.isVisible() and w is not iface.mainWindow() and hasattr(w, "algorithm")), None)
        result["dialog_title"] = dialog.windowTitle() if dialog is not None else None
        result["dialog_class"] = type(dialog).__name__ if dialog is not None else None
        if dialog is not None:
            result["dialog_screenshot"] = grab(dialog, "install_dialog")
            alg = dialog.algorithm() if hasattr(dialog, "algorithm") else None
            result["dialog_algorithm"] = alg.id() if alg is not None else None
            dialog.reject()
    except Exception as exc:  # noqa: BLE001 - report, do not hang
        result["errors"].append(repr(exc))
    QTimer.singleShot(300, unload)


def unload():
    """Unloading the plugin removes its menu, message bar and provider."""
    try:
        from qgis.core import QgsApplication
        from qgis.utils import unloadPlugin

        result["unloaded"] = bool(unloadPlugin("berunda"))
        result["menu_after_unload"] = berunda_menu() is not None and bool(berunda_menu().actions())
        result["provider_after_unload"] = QgsApplication.processingRegistry().providerById("berunda") is not None
        result["message_bar_after_unload"] = len(iface.messageBar().items())
    except Exception as exc:  # noqa: BLE001
        result["errors"].append(repr(exc))
    QTimer.singleShot(200, finish)


def start():
    try:
        window = iface.mainWindow()
        window.resize(1200, 800)
        menu = berunda_menu()
        result["menu"] = {a.text(): a.objectName() for a in menu.actions()} if menu else {}
        result["message_bar"] = [w.text() if hasattr(w, "text") else type(w).__name__
                                 for w in iface.messageBar().items()]
        result["main_screenshot"] = grab(window, "main_window")
        action = next((a for a in (menu.actions() if menu else []) if a.text().startswith("Install")),
                      None)
        if action is None:
            finish()
            return
        QTimer.singleShot(2500, dialog_open)   # runs inside the dialog's modal loop
        action.trigger()
    except Exception as exc:  # noqa: BLE001
        result["errors"].append(repr(exc))
        finish()


QTimer.singleShot(60000, finish)   # never hang the test
QTimer.singleShot(1500, start)
