"""berunda:export_onnx — a Berunda model as an ONNX file for Deepness and ONNX runtimes."""
from __future__ import annotations

from qgis.core import (QgsProcessingException, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterNumber)

from ..berunda_plugin import dependencies
from .base import BerundaAlgorithm, FeedbackReporter

DEFAULT_OPSET = 17   # engine.onnx_export.DEFAULT_OPSET (not imported: it imports torch)


class ExportOnnxAlgorithm(BerundaAlgorithm):
    MODEL = "MODEL"
    OUTPUT = "OUTPUT"
    TILE_SIZE = "TILE_SIZE"
    OPSET = "OPSET"

    def name(self):
        return "export_onnx"

    def displayName(self):  # noqa: N802
        return "Export model to ONNX (Deepness)"

    def shortHelpString(self):  # noqa: N802
        return (
            "Writes a Berunda model as an ONNX file that Deepness (the QGIS deep-learning "
            "inference plugin) and any ONNX runtime can run without torch or Berunda. Only the "
            "inference path is exported (encoder, decoder, supervised head, soft-max). Berunda's "
            "normalisation (the stored per-band statistics, clipping, nodata) is inside the graph, "
            "so the classes are Berunda's.<br>"
            "The graph's input is what Deepness feeds: float32 (batch, bands, tile, tile), each "
            "band's raster value divided by 255, bands in the training order. UInt8 models are "
            "reproduced exactly. For UInt16, Int16 and Float32 models the graph undoes the "
            "division exactly too, but Deepness documents 8-bit input only: the log warns, and "
            "such rasters are safest with 'Classify raster'. The output is the class "
            "probabilities (batch, classes, tile, tile); channel i is the model's i-th class. The "
            "batch is dynamic; height and width are fixed to the tile size (Deepness reads its "
            "tile size from the model). The metadata holds Deepness's fields (model_type, "
            "class_names, resolution in cm/px when the training rasters' pixel size is known, "
            "tiles_size, tiles_overlap, seg_thresh 0, identity standardisation) and the model's "
            "whole Berunda header ('berunda'). The file is checked with onnxruntime against "
            "Berunda's own computation before it is written. Needs the Python package onnx "
            "(and onnxruntime for the check): 'Install dependencies' with WITH_ONNX.<br>"
            "<b>MODEL</b>: a Berunda model file (.pt) written by 'Train segmentation model' (not "
            "its .checkpoint.pt).<br>"
            "<b>OUTPUT</b>: the .onnx file to write.<br>"
            "<b>TILE_SIZE</b>: tile side in pixels of the exported graph, a multiple of 32 "
            "(others are rounded up); empty or 0 = the model's training tile size. Larger tiles "
            "classify faster in Deepness.<br>"
            f"<b>OPSET</b>: ONNX operator set version ({DEFAULT_OPSET} suits Deepness and "
            "onnxruntime 1.13 or newer).")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(self.MODEL, "Berunda model", extension="pt"))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, "ONNX model", fileFilter="ONNX models (*.onnx)"))
        self.addParameter(self.advanced(QgsProcessingParameterNumber(
            self.TILE_SIZE, "Tile size (empty = model's)", QgsProcessingParameterNumber.Integer,
            optional=True, minValue=0)))
        self.addParameter(self.advanced(QgsProcessingParameterNumber(
            self.OPSET, "ONNX opset", QgsProcessingParameterNumber.Integer, DEFAULT_OPSET,
            minValue=11, maxValue=20)))

    def compute(self, parameters, context, feedback):
        missing = dependencies.missing_onnx_packages()
        if "onnx" in missing:
            raise QgsProcessingException(dependencies.onnx_install_hint(missing))
        from ..engine.onnx_export import export_onnx

        result = export_onnx(
            self.parameterAsFile(parameters, self.MODEL, context),
            self.parameterAsFileOutput(parameters, self.OUTPUT, context),
            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context) or None,
            opset=self.parameterAsInt(parameters, self.OPSET, context),
            reporter=FeedbackReporter(feedback))
        return {self.OUTPUT: result["output"]}
