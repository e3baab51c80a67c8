"""Styling classified rasters: a paletted renderer with the model's class names
and colours, applied to the map layer and saved as a .qml beside the GeoTIFF
(QGIS applies it whenever the file is opened, also after qgis_process)."""
from __future__ import annotations

import os
from typing import Dict

from qgis.core import (QgsPalettedRasterRenderer, QgsProcessingLayerPostProcessorInterface,
                       QgsRasterLayer)
from qgis.PyQt.QtGui import QColor


def paletted_renderer(layer: QgsRasterLayer, classes: Dict) -> QgsPalettedRasterRenderer:
    entries = [
        QgsPalettedRasterRenderer.Class(int(value), QColor(color), str(name))
        for value, name, color in zip(classes["values"], classes["names"], classes["colors"])
    ]
    return QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries)


def apply_class_style(layer: QgsRasterLayer, classes: Dict) -> None:
    layer.setRenderer(paletted_renderer(layer, classes))
    layer.triggerRepaint()


def write_qml(raster_path: str, classes: Dict) -> str:
    """Write <raster>.qml (same base name) so QGIS styles the file when it is opened."""
    layer = QgsRasterLayer(raster_path, os.path.basename(raster_path), "gdal")
    if not layer.isValid():
        raise RuntimeError(f"Cannot open {raster_path} to style it")
    apply_class_style(layer, classes)
    qml = os.path.splitext(raster_path)[0] + ".qml"
    message, ok = layer.saveNamedStyle(qml)
    if not ok:
        raise RuntimeError(f"Cannot write style {qml}: {message}")
    return qml


class ClassStylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Applies the class palette when Processing loads the output into the project."""

    instances = []   # Processing keeps only a raw pointer: keep the Python object alive

    def __init__(self, classes: Dict):
        super().__init__()
        self.classes = classes

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        if isinstance(layer, QgsRasterLayer):
            apply_class_style(layer, self.classes)

    @classmethod
    def create(cls, classes: Dict) -> "ClassStylePostProcessor":
        processor = cls(classes)
        cls.instances.append(processor)
        return processor
