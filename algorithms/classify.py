"""berunda:classify — classify a raster with a Berunda model (streaming, any size)."""
from __future__ import annotations

import os

from qgis.core import (QgsProcessingException, QgsProcessingParameterEnum, QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer)

from .base import BerundaAlgorithm, FeedbackReporter
from .training_parameters import DEVICES


class ClassifyAlgorithm(BerundaAlgorithm):
    INPUT = "INPUT"
    MODEL = "MODEL"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    DEVICE = "DEVICE"
    PROBABILITY_TYPE = "PROBABILITY_TYPE"
    OUTPUT = "OUTPUT"
    OUTPUT_PROBABILITIES = "OUTPUT_PROBABILITIES"
    OUTPUT_CONFIDENCE = "OUTPUT_CONFIDENCE"
    PROBABILITY_TYPES = ["float32", "uint8"]

    def name(self):
        return "classify"

    def displayName(self):  # noqa: N802
        return "Classify raster with a Berunda model"

    def shortHelpString(self):  # noqa: N802
        return (
            "Classifies a raster with a model trained by 'Train segmentation model'. The raster is "
            "read and written window by window (any size); overlapping tiles are blended so no "
            "seams show. Nodata pixels stay nodata. The result holds the original class values "
            "with the model's colours and class names, and is styled in the map (a .qml is saved "
            "beside it).<br>"
            "<b>INPUT</b>: raster with the same bands (order, data type family) as the training "
            "images.<br><b>MODEL</b>: a Berunda model file (.pt).<br>"
            "<b>TILE_SIZE</b>: tile side in pixels, multiple of 32; empty or 0 (default) = "
            "chosen for speed: 512 px on a CPU, 1024 px on a GPU, at least twice the model's "
            "training tile, smaller when the device's free memory asks for it (the network is "
            "fully convolutional, so a model trained on small tiles classifies large ones "
            "as well). The log says which tile was used.<br>"
            "<b>OVERLAP</b>: overlap between tiles, in pixels (≥ 1) or as a fraction of the tile "
            "(< 1); empty (default) = a quarter of the model's training tile, which hides "
            "seams; 0 = none (fastest).<br>"
            "<b>BATCH_SIZE</b>: tiles per forward pass (default 4).<br>"
            "<b>DEVICE</b>: auto (default: the GPU when there is one), cuda or cpu.<br>"
            "<b>OUTPUT</b>: classified GeoTIFF (its metadata names the model, which "
            "berunda:evaluate reports). Missing folders are created.<br>"
            "<b>OUTPUT_PROBABILITIES</b> (optional): one band of probability per class "
            "(PROBABILITY_TYPE float32 0–1 or uint8 0–255), each band described by its "
            "class name.<br>"
            "<b>OUTPUT_CONFIDENCE</b> (optional): the winning class's probability.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        self.addParameter(QgsProcessingParameterFile(self.MODEL, "Berunda model", extension="pt"))
        self.addParameter(self.advanced(QgsProcessingParameterNumber(
            self.TILE_SIZE, "Tile size (empty = model's)", QgsProcessingParameterNumber.Integer,
            optional=True, minValue=0)))
        self.addParameter(self.advanced(QgsProcessingParameterNumber(
            self.OVERLAP, "Overlap (pixels, or fraction of the tile if < 1)",
            QgsProcessingParameterNumber.Double, optional=True, minValue=0.0)))
        self.addParameter(self.advanced(QgsProcessingParameterNumber(
            self.BATCH_SIZE, "Batch size", QgsProcessingParameterNumber.Integer, 4, minValue=1)))
        self.addParameter(self.advanced(QgsProcessingParameterEnum(
            self.DEVICE, "Device", DEVICES, defaultValue="auto", usesStaticStrings=True)))
        self.addParameter(self.advanced(QgsProcessingParameterEnum(
            self.PROBABILITY_TYPE, "Probability data type", self.PROBABILITY_TYPES,
            defaultValue="float32", usesStaticStrings=True)))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Classified raster"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_PROBABILITIES, "Class probabilities", optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_CONFIDENCE, "Confidence", optional=True, createByDefault=False))

    def compute(self, parameters, context, feedback):
        from ..berunda_plugin.styling import ClassStylePostProcessor, write_qml
        from ..engine.inference import classify_raster
        from ..engine.model_file import load_model

        source = self.raster_path(parameters, self.INPUT, context)
        model = load_model(self.parameterAsFile(parameters, self.MODEL, context))
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        probabilities = self.parameterAsOutputLayer(parameters, self.OUTPUT_PROBABILITIES, context) or None
        confidence = self.parameterAsOutputLayer(parameters, self.OUTPUT_CONFIDENCE, context) or None
        for name, path in ((self.OUTPUT, output), (self.OUTPUT_PROBABILITIES, probabilities),
                           (self.OUTPUT_CONFIDENCE, confidence)):
            if path and not path.lower().endswith((".tif", ".tiff")):
                raise QgsProcessingException(f"{name}: Berunda writes GeoTIFF; give a .tif file name "
                                             f"instead of {path}.")
        tile = self.parameterAsInt(parameters, self.TILE_SIZE, context) or None
        overlap = parameters.get(self.OVERLAP)
        if overlap not in (None, ""):
            overlap = self.parameterAsDouble(parameters, self.OVERLAP, context)
            overlap = int(overlap) if overlap >= 1 or overlap == 0 else overlap
        else:
            overlap = None
        result = classify_raster(
            source, model, output, tile_size=tile, overlap=overlap,
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            device=self.parameterAsEnumString(parameters, self.DEVICE, context),
            probabilities_path=probabilities,
            probabilities_dtype=self.parameterAsEnumString(parameters, self.PROBABILITY_TYPE, context),
            confidence_path=confidence, reporter=FeedbackReporter(feedback))
        classes = model.metadata["classes"]
        write_qml(result.output, classes)
        if context.willLoadLayerOnCompletion(result.output):
            details = context.layerToLoadOnCompletionDetails(result.output)
            details.setPostProcessor(ClassStylePostProcessor.create(classes))
        outputs = {self.OUTPUT: result.output}
        if probabilities:
            outputs[self.OUTPUT_PROBABILITIES] = result.probabilities
        if confidence:
            outputs[self.OUTPUT_CONFIDENCE] = result.confidence
        return outputs
