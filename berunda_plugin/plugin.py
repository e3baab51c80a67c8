"""The plugin object QGIS creates through ``classFactory``."""
from qgis.core import QgsApplication

from .provider import BerundaProvider


class BerundaPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS API)
        if self.provider is None:
            self.provider = BerundaProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
