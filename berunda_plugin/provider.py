"""The Berunda Processing provider (id ``berunda``): the algorithms, and the example
models in resources/models (e.g. berunda:train_classify_evaluate)."""
import glob
import os

from qgis.core import QgsProcessingModelAlgorithm, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..algorithms.classify import ClassifyAlgorithm
from ..algorithms.compare import CompareAlgorithm
from ..algorithms.diagnostics import DiagnosticsAlgorithm
from ..algorithms.evaluate import EvaluateAlgorithm
from ..algorithms.export_onnx import ExportOnnxAlgorithm
from ..algorithms.install_dependencies import InstallDependenciesAlgorithm
from ..algorithms.train import TrainAlgorithm

RESOURCES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources")
ICON = os.path.join(RESOURCES, "icon.svg")
MODELS_DIR = os.path.join(RESOURCES, "models")
MODEL_ICON = os.path.join(RESOURCES, "icons", "model.svg")


class ExampleModel(QgsProcessingModelAlgorithm):
    """A model shipped with the plugin (a .model3 built by scripts/make_model.py).  Its child
    algorithms are found when an instance is created to run, once the provider is loaded."""

    TITLES = {"train_classify_evaluate": "Train, classify and evaluate (example model)"}

    def displayName(self):  # noqa: N802
        return self.TITLES.get(self.name(), self.name().replace("_", " ").capitalize())

    def icon(self):
        return QIcon(MODEL_ICON)

    def svgIconPath(self):  # noqa: N802
        return MODEL_ICON


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
        for alg in (TrainAlgorithm(), ClassifyAlgorithm(), EvaluateAlgorithm(), CompareAlgorithm(),
                    ExportOnnxAlgorithm(), InstallDependenciesAlgorithm(), DiagnosticsAlgorithm()):
            self.addAlgorithm(alg)
        for path in sorted(glob.glob(os.path.join(MODELS_DIR, "*.model3"))):
            model = ExampleModel()
            if model.fromFile(path):
                self.addAlgorithm(model)
