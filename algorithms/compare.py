"""berunda:compare — the paper's experiment on the user's rasters: the supervised
baseline and each auxiliary task (at one or several λ) over several seeds, scored
on validation pairs, written as Table 1 (+ λ-sensitivity plot)."""
from __future__ import annotations

import os

from qgis.core import QgsProcessingOutputNumber, QgsProcessingOutputString, QgsProcessingUtils

from ..engine.job import write_job
from ..engine.parameters import COMPARE_EXTRA, command_line, help_text
from .base import BerundaAlgorithm
from .parameter_factory import add_parameters, values_of
from .training_parameters import add_training_parameters, training_config, training_help


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
            "12 trainings of 50 epochs × 5000 tiles of 320 px, the pretrained "
            "tu-tf_efficientnet_lite0) are the paper's GPU budget: measured 1.13 tiles/s on two "
            "CPU cores, about 51 days on a CPU; on an NVIDIA H100 resnet34 measured 203 tiles/s "
            "supervised, 259 tiles/s kmeans, about 6 h (lite0 not measured on a GPU yet). "
            "The first steps of the first training give an estimate of the whole "
            "comparison in the log (a warning above 3 hours, with what to change) and every "
            "epoch the time left. Try a small budget first (ENCODER resnet18, TILE_SIZE 128, "
            "EPOCHS 16, SAMPLES_PER_EPOCH 96, RUNS 2).<br>"
            + help_text(COMPARE_EXTRA) + "<br>"
            + training_help(single_task=False))

    def initAlgorithm(self, config=None):  # noqa: N802
        add_training_parameters(self, single_task=False)
        add_parameters(self, COMPARE_EXTRA)
        self.addOutput(QgsProcessingOutputString("BEST", "Best configuration"))
        self.addOutput(QgsProcessingOutputNumber("BEST_MEAN_IOU", "Best mean IoU (%)"))
        self.addOutput(QgsProcessingOutputNumber("SUPERVISED_MEAN_IOU", "Supervised mean IoU (%)"))

    def compute(self, parameters, context, feedback):
        config = training_config(self, parameters, context, feedback, task="none", lam=None)
        values = values_of(self, COMPARE_EXTRA, parameters, context)
        job = write_job(os.path.join(QgsProcessingUtils.tempFolder(),
                                     f"berunda_compare_{os.getpid()}_{id(parameters)}.json"), config)
        try:
            return self.engine(["compare", job, *command_line(COMPARE_EXTRA, values)], feedback)
        finally:
            os.remove(job)
