"""berunda:export_onnx — a Berunda model as an ONNX file for Deepness and ONNX runtimes."""
from __future__ import annotations

from ..engine.parameters import EXPORT_ONNX, command_line, help_text
from .base import BerundaAlgorithm
from .parameter_factory import add_parameters, values_of


class ExportOnnxAlgorithm(BerundaAlgorithm):
    OUTPUT = "OUTPUT"

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
            + help_text(EXPORT_ONNX))

    def initAlgorithm(self, config=None):  # noqa: N802
        add_parameters(self, EXPORT_ONNX)

    def compute(self, parameters, context, feedback):
        values = values_of(self, EXPORT_ONNX, parameters, context)
        return self.engine(["export-onnx", *command_line(EXPORT_ONNX, values)], feedback,
                           [values["OUTPUT"]])
