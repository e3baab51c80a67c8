"""What every Berunda algorithm shares: group, icon, help layout, dependency
check, engine-error translation and the feedback adapter."""
from __future__ import annotations

import os

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingParameterDefinition,
                       QgsRasterLayer)
from qgis.PyQt.QtGui import QIcon

from ..berunda_plugin.dependencies import install_hint, missing_packages
from ..berunda_plugin.engine_process import EngineError, run_engine
from ..engine.progress import Reporter

RESOURCES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources")
ICON = os.path.join(RESOURCES, "icon.svg")
ICONS_DIR = os.path.join(RESOURCES, "icons")


class FeedbackReporter(Reporter):
    """Engine progress -> QgsProcessingFeedback."""

    def __init__(self, feedback):
        self.feedback = feedback

    def progress(self, fraction: float) -> None:
        if self.feedback is not None:
            self.feedback.setProgress(100.0 * fraction)

    def info(self, message: str) -> None:
        if self.feedback is not None:
            self.feedback.pushInfo(message)

    def warning(self, message: str) -> None:
        if self.feedback is not None:
            self.feedback.pushWarning(message)

    def status(self, text: str) -> None:
        if self.feedback is not None:
            self.feedback.setProgressText(text)

    def cancelled(self) -> bool:
        return self.feedback is not None and self.feedback.isCanceled()


class BerundaAlgorithm(QgsProcessingAlgorithm):
    """Subclasses implement ``compute(parameters, context, feedback)`` instead of
    processAlgorithm (QgsProcessingAlgorithm already has a ``run``)."""

    #: resources/icons/<ICON_NAME>.svg; None = the algorithm's name(); the provider icon
    #: when there is no such file.
    ICON_NAME = None
    #: False for the set-up algorithms, which must run while torch & co. are missing.
    REQUIRES_DEPENDENCIES = True

    def createInstance(self):  # noqa: N802 (QGIS API)
        return type(self)()

    def group(self):
        return "Semantic segmentation"

    def groupId(self):  # noqa: N802
        return "segmentation"

    def icon(self):
        return QIcon(self.svgIconPath())

    def svgIconPath(self):  # noqa: N802
        path = os.path.join(ICONS_DIR, f"{self.ICON_NAME or self.name()}.svg")
        return path if os.path.isfile(path) else ICON

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        if self.REQUIRES_DEPENDENCIES:
            missing = missing_packages()
            if missing:
                raise QgsProcessingException(install_hint(missing))
        return self.compute(parameters, context, feedback)

    def engine(self, args, feedback, outputs=()) -> dict:
        """Run ``python -m berunda <args>`` in the engine's own process (see
        berunda_plugin/engine_process.py) with its messages in this feedback; its outputs.
        ``outputs``: the files it writes (cleaned up if the engine process dies)."""
        try:
            return run_engine([str(a) for a in args], FeedbackReporter(feedback), outputs)
        except EngineError as exc:
            raise QgsProcessingException(str(exc)) from None

    def compute(self, parameters, context, feedback):
        raise NotImplementedError

    # --- parameter helpers shared by the algorithms -------------------------------------

    @staticmethod
    def advanced(param):
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        return param

    def raster_paths(self, parameters, name, context):
        """File paths of a (multiple) raster parameter; refuses non-file layers."""
        layers = self.parameterAsLayerList(parameters, name, context)
        return [raster_file(layer, name) for layer in layers]

    def raster_path(self, parameters, name, context):
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(f"{name}: no raster layer given.")
        return raster_file(layer, name)


def raster_file(layer, name: str) -> str:
    if not isinstance(layer, QgsRasterLayer):
        raise QgsProcessingException(f"{name}: layer {layer.name()} is not a raster layer.")
    path = layer.source()
    if layer.providerType() != "gdal" or not os.path.isfile(path):
        raise QgsProcessingException(
            f"{name}: layer {layer.name()} is not a raster file ({path}). Berunda reads rasters "
            "from files: save it first (right-click > Export > Save As… GeoTIFF).")
    return path


class SetupAlgorithm(BerundaAlgorithm):
    """Algorithms that set Berunda up: they run without torch & co."""

    REQUIRES_DEPENDENCIES = False

    def group(self):
        return "Set-up"

    def groupId(self):  # noqa: N802
        return "setup"
