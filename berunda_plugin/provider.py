"""The Berunda Processing provider (id ``berunda``)."""
import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..algorithms.classify import ClassifyAlgorithm
from ..algorithms.compare import CompareAlgorithm
from ..algorithms.evaluate import EvaluateAlgorithm
from ..algorithms.train import TrainAlgorithm

ICON = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "icon.svg")


class BerundaProvider(QgsProcessingProvider):
    def id(self):
        return "berunda"

    def name(self):
        return "Berunda"

    def longName(self):
        return "Berunda – semi-supervised semantic segmentation"

    def icon(self):
        return QIcon(ICON)

    def svgIconPath(self):
        return ICON

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802 (QGIS API)
        return ["tif"]

    def loadAlgorithms(self):
        for alg in (TrainAlgorithm(), ClassifyAlgorithm(), EvaluateAlgorithm(), CompareAlgorithm()):
            self.addAlgorithm(alg)
