"""Berunda's QGIS-free engine: rasters -> tiles -> training steps -> model file
-> sliding-window inference -> GeoTIFF, plus evaluation.  Never imports qgis."""

__version__ = "0.1.0"
