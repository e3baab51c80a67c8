"""berunda:train — train BerundaNet-late on annotated (+ unannotated) rasters."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingOutputFile, QgsProcessingOutputNumber,
                       QgsProcessingParameterFile, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterMultipleLayers)

from .base import BerundaAlgorithm, FeedbackReporter
from .training_parameters import (SINGLE_TASK_HELP, TRAINING_HELP, add_training_parameters,
                                  training_config)

MODEL_FILTER = "Berunda model (*.pt)"


class TrainAlgorithm(BerundaAlgorithm):
    OUTPUT_MODEL = "OUTPUT_MODEL"
    RESUME = "RESUME"

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
            "epoch.<br>"
            "<b>How long?</b> The defaults are the paper's GPU budget (50 epochs × 5000 tiles "
            "of 320 px, resnet34): kmeans with them measured 0.85 tiles/s on one CPU core, "
            "about 7 days on a CPU (a multi-core desktop: days, not hours). On a GPU "
            "(not measured here; an estimate from typical throughput of 100–300 tiles/s) "
            "about 0.5–1.5 h. After the first steps the log gives an estimate for your "
            "settings and device (a warning when it exceeds 3 hours, with what to change), "
            "then the time left after every epoch. For a first try on a CPU: ENCODER "
            "resnet18, TILE_SIZE 128, EPOCHS 16, SAMPLES_PER_EPOCH 96, LEARNING_RATE 1e-3 "
            "(a few minutes on 2 cores, as make demo).<br>" + SINGLE_TASK_HELP + TRAINING_HELP +
            "<b>VALIDATION_IMAGES</b>, <b>VALIDATION_LABELS</b> (optional): held-out pairs; the "
            "final model is classified on them and its OA / mIoU are stored in the model file "
            "and returned as VALIDATION_OVERALL_ACCURACY / VALIDATION_MEAN_IOU.<br>"
            "<b>RESUME</b>: a '.checkpoint.pt' file to continue from (same data; its settings are "
            "reused, EPOCHS may be raised).<br>"
            "<b>OUTPUT_MODEL</b>: the model file (.pt).")

    def initAlgorithm(self, config=None):  # noqa: N802
        add_training_parameters(self)
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "VALIDATION_IMAGES", "Validation images (optional)", QgsProcessing.TypeRaster,
            optional=True))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "VALIDATION_LABELS", "Validation label rasters (same order)", QgsProcessing.TypeRaster,
            optional=True))
        self.addParameter(self.advanced(QgsProcessingParameterFile(
            self.RESUME, "Resume from checkpoint", extension="pt", optional=True)))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_MODEL, "Output model", MODEL_FILTER))
        self.addOutput(QgsProcessingOutputFile("CHECKPOINT", "Checkpoint for RESUME"))
        for key, label in (("FINAL_LOSS", "Final loss"), ("FINAL_SUPERVISED_LOSS", "Final supervised loss"),
                           ("FINAL_AUXILIARY_LOSS", "Final auxiliary loss"),
                           ("FINAL_TRAIN_ACCURACY", "Final training pixel accuracy (%)"),
                           ("VALIDATION_OVERALL_ACCURACY", "Validation overall accuracy (%)"),
                           ("VALIDATION_MEAN_IOU", "Validation mean IoU (%)")):
            self.addOutput(QgsProcessingOutputNumber(key, label))

    def compute(self, parameters, context, feedback):
        from ..engine.trainer import train

        output = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        config = training_config(self, parameters, context, feedback)
        resume = self.parameterAsFile(parameters, self.RESUME, context) or None
        result = train(config, output, FeedbackReporter(feedback), resume=resume)
        final = result.final
        return {
            self.OUTPUT_MODEL: result.model_path,
            "CHECKPOINT": result.checkpoint_path,
            "FINAL_LOSS": final.get("loss"),
            "FINAL_SUPERVISED_LOSS": final.get("supervised"),
            "FINAL_AUXILIARY_LOSS": final.get("auxiliary"),
            "FINAL_TRAIN_ACCURACY": 100.0 * final.get("train_accuracy", 0.0),
            "VALIDATION_OVERALL_ACCURACY": (result.validation or {}).get("overall_accuracy"),
            "VALIDATION_MEAN_IOU": (result.validation or {}).get("mean_iou"),
        }
