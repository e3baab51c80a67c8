"""berunda:classify — classify a raster with a Berunda model (streaming, any size)."""
from __future__ import annotations

from ..engine.parameters import CLASSIFY, command_line, help_text
from .base import BerundaAlgorithm
from .parameter_factory import add_parameters, values_of


class ClassifyAlgorithm(BerundaAlgorithm):
    OUTPUT = "OUTPUT"

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
            "beside it).<br>" + help_text(CLASSIFY))

    def initAlgorithm(self, config=None):  # noqa: N802
        add_parameters(self, CLASSIFY)

    def compute(self, parameters, context, feedback):
        from ..berunda_plugin.styling import ClassStylePostProcessor, write_qml

        values = values_of(self, CLASSIFY, parameters, context)
        written = [values[k] for k in ("OUTPUT", "OUTPUT_PROBABILITIES", "OUTPUT_CONFIDENCE")]
        outputs = self.engine(["classify", *command_line(CLASSIFY, values)], feedback, written)
        classes = outputs.pop("CLASSES")
        output = outputs[self.OUTPUT]
        write_qml(output, classes)
        if context.willLoadLayerOnCompletion(output):
            details = context.layerToLoadOnCompletionDetails(output)
            details.setPostProcessor(ClassStylePostProcessor.create(classes))
        return outputs
