"""Berunda's Processing algorithms: thin wrappers that read parameters, call the
engine and report.  Heavy modules (torch, rasterio) are imported inside
``processAlgorithm`` only."""
