"""berunda:train — train BerundaNet-late on annotated (+ unannotated) rasters.

The parameters become a training job (engine/job.py) that the engine trains in its own
process (``python -m berunda train``); EXPORT_JOB keeps a complete copy to train elsewhere."""
from __future__ import annotations

import os

from qgis.core import QgsProcessingOutputFile, QgsProcessingOutputNumber, QgsProcessingUtils

from ..engine.job import write_job
from ..engine.paths import checkpoint_path_for
from ..engine.parameters import TRAIN_EXTRA, VALIDATION_IMAGES, VALIDATION_LABELS, help_text
from .base import BerundaAlgorithm
from .parameter_factory import add_parameters
from .training_parameters import add_training_parameters, training_config, training_help

NUMBERS = (("FINAL_LOSS", "Final loss"), ("FINAL_SUPERVISED_LOSS", "Final supervised loss"),
           ("FINAL_AUXILIARY_LOSS", "Final auxiliary loss"),
           ("FINAL_TRAIN_ACCURACY", "Final training pixel accuracy (%)"),
           ("VALIDATION_OVERALL_ACCURACY", "Validation overall accuracy (%)"),
           ("VALIDATION_MEAN_IOU", "Validation mean IoU (%)"))


COST_HELP = (
    "<b>How long?</b> The defaults are the paper's GPU budget (50 epochs × 5000 tiles of "
    "320 px) with the pretrained tu-tf_efficientnet_lite0 encoder: kmeans with them measured "
    "1.13 tiles/s on two CPU cores, about 5 days on a CPU (a multi-core desktop: days, not "
    "hours). On a GPU: resnet34 measured 259 tiles/s on an NVIDIA H100, about 32 min there "
    "(the lite0 default is not measured on a GPU yet). After the first "
    "steps the log gives an estimate for your settings and device (a warning when it exceeds "
    "3 hours, with what to change), then the time left after every epoch. For a first try on "
    "a CPU: ENCODER resnet18, TILE_SIZE 128, EPOCHS 16, SAMPLES_PER_EPOCH 96, LEARNING_RATE "
    "1e-3 (a few minutes on 2 cores, as make demo).<br>")


class TrainAlgorithm(BerundaAlgorithm):
    OUTPUT_MODEL = "OUTPUT_MODEL"

    def name(self):
        return "train"

    def displayName(self):  # noqa: N802
        return "Train segmentation model (semi-supervised)"

    def shortHelpString(self):  # noqa: N802
        return (
            "Trains BerundaNet-late — a U-Net whose encoder and decoder are shared by a supervised "
            "head and an auxiliary head — on annotated rasters (image + label pairs) and, for the "
            "semi-supervised tasks, unannotated rasters. Loss = cross-entropy + λ · auxiliary loss. "
            "The model file carries everything needed to classify (bands, normalisation, classes, "
            "colours, tile size); a checkpoint '<name>.checkpoint.pt' is written after every "
            "epoch. Training runs in Berunda's engine process; Cancel stops it after the current "
            "step and keeps the last checkpoint.<br>" + COST_HELP + training_help()
            + help_text(TRAIN_EXTRA)
            + "<br>Outputs: the model, its CHECKPOINT, the final losses and training accuracy, "
              "and the validation scores when validation pairs are given.")

    def initAlgorithm(self, config=None):  # noqa: N802
        add_training_parameters(self)
        add_parameters(self, TRAIN_EXTRA)
        self.addOutput(QgsProcessingOutputFile("CHECKPOINT", "Checkpoint for RESUME"))
        for key, label in NUMBERS:
            self.addOutput(QgsProcessingOutputNumber(key, label))

    def compute(self, parameters, context, feedback):
        config = training_config(self, parameters, context, feedback,
                                 extra=[VALIDATION_IMAGES, VALIDATION_LABELS])
        output = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        resume = self.parameterAsFile(parameters, "RESUME", context) or None
        export = self.parameterAsFileOutput(parameters, "EXPORT_JOB", context) or None
        job_only = self.parameterAsBool(parameters, "JOB_ONLY", context)
        job = write_job(os.path.join(QgsProcessingUtils.tempFolder(),
                                     f"berunda_job_{os.getpid()}_{id(parameters)}.json"), config)
        args = ["train", job]
        if not job_only:
            args += ["--output", output]
        if resume:
            args += ["--resume", resume]
        if export:
            args += ["--export-job", export]
        if job_only:
            args.append("--job-only")
        try:
            return self.engine(args, feedback, [output, checkpoint_path_for(output), export])
        finally:
            os.remove(job)
