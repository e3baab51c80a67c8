"""berunda:evaluate — score a classified raster against ground truth."""
from __future__ import annotations

from qgis.core import QgsProcessingOutputNumber

from ..engine.parameters import EVALUATE, command_line, help_text
from .base import BerundaAlgorithm
from .parameter_factory import add_parameters, values_of


class EvaluateAlgorithm(BerundaAlgorithm):
    def name(self):
        return "evaluate"

    def displayName(self):  # noqa: N802
        return "Evaluate classification (OA, mIoU, kappa)"

    def shortHelpString(self):  # noqa: N802
        return (
            "Compares a classified raster with ground truth, window by window (any size). Pixels "
            "that are nodata in either raster are left out. Reports overall accuracy and mean IoU "
            "in percent (as in the paper), Cohen's kappa, and per-class IoU, precision, recall, F1 "
            "and the confusion matrix with class names and colours (from the rasters' colour "
            "tables / category names, as written by berunda:classify).<br>" + help_text(EVALUATE)
            + "<br>Outputs OVERALL_ACCURACY, MEAN_IOU (percent) and KAPPA for use in models.")

    def initAlgorithm(self, config=None):  # noqa: N802
        add_parameters(self, EVALUATE)
        self.addOutput(QgsProcessingOutputNumber("OVERALL_ACCURACY", "Overall accuracy (%)"))
        self.addOutput(QgsProcessingOutputNumber("MEAN_IOU", "Mean IoU (%)"))
        self.addOutput(QgsProcessingOutputNumber("KAPPA", "Cohen's kappa"))

    def compute(self, parameters, context, feedback):
        values = values_of(self, EVALUATE, parameters, context)
        args = ["evaluate"]
        if self.parameterAsVectorLayer(parameters, "GROUND_TRUTH_POLYGONS", context) is not None:
            path, layer = self.parameterAsCompatibleSourceLayerPathAndLayerName(
                parameters, "GROUND_TRUTH_POLYGONS", context, ["gpkg", "shp"], "gpkg", feedback)
            values["GROUND_TRUTH_POLYGONS"] = path
            if layer:
                args += ["--layer", layer]
        return self.engine(args + command_line(EVALUATE, values), feedback)
