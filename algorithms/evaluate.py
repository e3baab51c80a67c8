"""berunda:evaluate — score a classified raster against ground truth."""
from __future__ import annotations

import os

from qgis.core import (QgsProcessingException, QgsProcessingOutputNumber, QgsProcessingParameterField,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterVectorLayer, QgsProcessing, QgsProcessingUtils)

from .base import BerundaAlgorithm, FeedbackReporter


class EvaluateAlgorithm(BerundaAlgorithm):
    PREDICTION = "PREDICTION"
    GROUND_TRUTH = "GROUND_TRUTH"
    GROUND_TRUTH_POLYGONS = "GROUND_TRUTH_POLYGONS"
    CLASS_FIELD = "CLASS_FIELD"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    OUTPUT_TABLE = "OUTPUT_TABLE"

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
            "tables / category names, as written by berunda:classify).<br>"
            "<b>PREDICTION</b>: classified raster.<br>"
            "<b>GROUND_TRUTH</b>: label raster on the same grid, or <b>GROUND_TRUTH_POLYGONS</b> "
            "+ <b>CLASS_FIELD</b> (integer class values), rasterised onto the prediction's grid.<br>"
            "<b>OUTPUT_REPORT</b>: HTML report; it names the model when the classified raster "
            "was made by berunda:classify, and warns when the two rasters share no class value "
            "(labels recoded after training?).<br>"
            "<b>OUTPUT_TABLE</b> (optional): CSV, one row per class: value, name, per-class "
            "scores, its row of the confusion matrix (predicted_&lt;value&gt; columns) and the "
            "overall scores — one table that spreadsheets and pandas read directly.<br>"
            "Missing output folders are created.<br>"
            "Outputs OVERALL_ACCURACY, MEAN_IOU (percent) and KAPPA for use in models.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.PREDICTION, "Classified raster"))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.GROUND_TRUTH, "Ground truth raster", optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.GROUND_TRUTH_POLYGONS, "Ground truth polygons (instead of a raster)",
            [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterField(
            self.CLASS_FIELD, "Class field of the polygons", parentLayerParameterName=self.GROUND_TRUTH_POLYGONS,
            type=QgsProcessingParameterField.Numeric, optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT, "Evaluation report", "HTML files (*.html)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_TABLE, "Confusion matrix and scores (CSV)", "CSV files (*.csv)",
            optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber("OVERALL_ACCURACY", "Overall accuracy (%)"))
        self.addOutput(QgsProcessingOutputNumber("MEAN_IOU", "Mean IoU (%)"))
        self.addOutput(QgsProcessingOutputNumber("KAPPA", "Cohen's kappa"))

    def compute(self, parameters, context, feedback):
        from ..engine.atomic import ensure_folder
        from ..engine.evaluation import evaluate_rasters
        from ..engine.report import write_evaluation_csv, write_evaluation_html

        prediction = self.raster_path(parameters, self.PREDICTION, context)
        truth = self._truth_path(parameters, context, feedback, prediction)
        report = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        table = self.parameterAsFileOutput(parameters, self.OUTPUT_TABLE, context) or None
        for name, path in ((self.OUTPUT_REPORT, report), (self.OUTPUT_TABLE, table)):
            if path and os.path.abspath(path) in (os.path.abspath(prediction), os.path.abspath(truth)):
                raise QgsProcessingException(f"{name} {path} would overwrite an input; choose "
                                             "another file name.")
            if path:
                ensure_folder(path, name)   # a missing folder is created
        result = evaluate_rasters(prediction, truth, reporter=FeedbackReporter(feedback))
        write_evaluation_html(result, report)
        outputs = {self.OUTPUT_REPORT: report}
        if table:
            write_evaluation_csv(result, table)
            outputs[self.OUTPUT_TABLE] = table
        scores = result.scores
        outputs.update(OVERALL_ACCURACY=scores.overall_accuracy, MEAN_IOU=scores.mean_iou,
                       KAPPA=scores.kappa)
        return outputs

    def _truth_path(self, parameters, context, feedback, prediction):
        from ..engine.labels import rasterize_polygons

        raster = self.parameterAsRasterLayer(parameters, self.GROUND_TRUTH, context)
        polygons = self.parameterAsVectorLayer(parameters, self.GROUND_TRUTH_POLYGONS, context)
        if (raster is None) == (polygons is None):
            raise QgsProcessingException("Give exactly one of GROUND_TRUTH (raster) or "
                                         "GROUND_TRUTH_POLYGONS (with CLASS_FIELD).")
        if raster is not None:
            return self.raster_path(parameters, self.GROUND_TRUTH, context)
        field = self.parameterAsString(parameters, self.CLASS_FIELD, context)
        if not field:
            raise QgsProcessingException("GROUND_TRUTH_POLYGONS needs CLASS_FIELD (integer class values).")
        path, layer_name = self.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, self.GROUND_TRUTH_POLYGONS, context, ["gpkg", "shp"], "gpkg", feedback)
        out = os.path.join(QgsProcessingUtils.tempFolder(), "berunda_truth_" + os.path.basename(prediction))
        return rasterize_polygons(path, field, prediction, out, layer_name or None)
