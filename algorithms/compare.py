"""berunda:compare — the paper's experiment on the user's rasters: the supervised
baseline and each auxiliary task (at one or several λ) over several seeds, scored
on validation pairs, written as Table 1 (+ λ-sensitivity plot)."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterEnum,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterFolderDestination,
                       QgsProcessingParameterMultipleLayers, QgsProcessingParameterNumber,
                       QgsProcessingParameterString)

from .base import BerundaAlgorithm, FeedbackReporter
from .training_parameters import (PAPER_LAMBDA_TEXT, TASK_DESCRIPTIONS, TASK_IDS, TRAINING_HELP,
                                  add_training_parameters, training_config)


def parse_lambdas(text: str):
    """'0.5, 1,5' -> [0.5, 1.0, 5.0]; empty -> None (each task's paper value)."""
    text = (text or "").strip()
    if not text:
        return None
    values = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise QgsProcessingException(f"LAMBDAS: {part!r} is not a number; give comma-separated "
                                         "values such as 0.5, 1, 5.") from None
        if value < 0:
            raise QgsProcessingException(f"LAMBDAS: {value} is negative; λ must be >= 0.")
        values.append(value)
    return values or None


class CompareAlgorithm(BerundaAlgorithm):
    def name(self):
        return "compare"

    def displayName(self):  # noqa: N802
        return "Compare auxiliary tasks (paper's Table 1)"

    def shortHelpString(self):  # noqa: N802
        return (
            "Trains the supervised baseline and each chosen auxiliary task (at each λ in LAMBDAS) "
            "for RUNS seeds on the same rasters and budget, classifies the validation images, and "
            "writes the paper's Table 1: OA and mIoU as mean ± std over seeds, the best row marked, "
            "the gain over supervised. With several λ values the HTML report also plots metric vs "
            "λ per task (the paper's Fig. 3). Cancelling stops after the current step and keeps the "
            "finished rows.<br>"
            "<b>How long?</b> The defaults (supervised + kmeans + mumford_shah, 4 runs each: "
            "12 trainings of 50 epochs × 5000 tiles of 320 px, resnet34) are the paper's GPU "
            "budget: measured 0.85 tiles/s on one CPU core, about 68 days on a CPU; on a GPU "
            "(not measured here; an estimate from typical throughput of 100–300 tiles/s) "
            "about 5–14 h. The first steps of the first training give an estimate of the whole "
            "comparison in the log (a warning above 3 hours, with what to change) and every "
            "epoch the time left. Try a small budget first (ENCODER resnet18, TILE_SIZE 128, "
            "EPOCHS 16, SAMPLES_PER_EPOCH 96, RUNS 2).<br>"
            "<b>AUX_TASKS</b>: the auxiliary tasks to compare (default kmeans and "
            "mumford_shah; the supervised baseline is always included): "
            + TASK_DESCRIPTIONS + ".<br>"
            "<b>LAMBDAS</b>: comma-separated λ values tried for every task (e.g. 0.5, 1, 5); "
            "empty = each task's paper value: " + PAPER_LAMBDA_TEXT + ".<br>"
            "<b>RUNS</b>: seeds per configuration (paper: 4); seeds are SEED, SEED+1, …<br>"
            "<b>VALIDATION_IMAGES</b>, <b>VALIDATION_LABELS</b>: held-out pairs, same order.<br>"
            + TRAINING_HELP +
            "<b>OUTPUT_TABLE</b>: CSV table. <b>OUTPUT_REPORT</b>: HTML report. "
            "<b>OUTPUT_FOLDER</b> (optional): keep every trained model there.")

    def initAlgorithm(self, config=None):  # noqa: N802
        add_training_parameters(self, single_task=False)
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "VALIDATION_IMAGES", "Validation images", QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "VALIDATION_LABELS", "Validation label rasters (same order)", QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterEnum(
            "AUX_TASKS", "Auxiliary tasks", [t for t in TASK_IDS if t != "none"], allowMultiple=True,
            defaultValue=["kmeans", "mumford_shah"], usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterString(
            "LAMBDAS", "λ values (comma-separated; empty = paper's)", "", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "RUNS", "Runs (seeds) per configuration", QgsProcessingParameterNumber.Integer, 4,
            minValue=1))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_TABLE", "Comparison table (CSV)", "CSV files (*.csv)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_REPORT", "Comparison report (HTML)", "HTML files (*.html)"))
        self.addParameter(QgsProcessingParameterFolderDestination(
            "OUTPUT_FOLDER", "Folder to keep the trained models", optional=True,
            createByDefault=False))
        self.addOutput(QgsProcessingOutputString("BEST", "Best configuration"))
        self.addOutput(QgsProcessingOutputNumber("BEST_MEAN_IOU", "Best mean IoU (%)"))
        self.addOutput(QgsProcessingOutputNumber("SUPERVISED_MEAN_IOU", "Supervised mean IoU (%)"))

    def compute(self, parameters, context, feedback):
        from ..engine.experiment import run_comparison

        config = training_config(self, parameters, context, feedback, task="none", lam=None)
        tasks = self.parameterAsEnumStrings(parameters, "AUX_TASKS", context)
        validation_images = self.raster_paths(parameters, "VALIDATION_IMAGES", context)
        validation_labels = self.raster_paths(parameters, "VALIDATION_LABELS", context)
        result = run_comparison(
            config, tasks, parse_lambdas(self.parameterAsString(parameters, "LAMBDAS", context)),
            self.parameterAsInt(parameters, "RUNS", context), validation_images, validation_labels,
            table_path=self.parameterAsFileOutput(parameters, "OUTPUT_TABLE", context),
            report_path=self.parameterAsFileOutput(parameters, "OUTPUT_REPORT", context),
            model_folder=self.parameterAsString(parameters, "OUTPUT_FOLDER", context) or None,
            reporter=FeedbackReporter(feedback))
        best, supervised = result.best, result.supervised
        return {
            "OUTPUT_TABLE": result.table_path,
            "OUTPUT_REPORT": result.report_path,
            "OUTPUT_FOLDER": result.model_folder,
            "BEST": best.label if best else "",
            "BEST_MEAN_IOU": best.miou_mean if best else None,
            "SUPERVISED_MEAN_IOU": supervised.miou_mean if supervised else None,
        }
