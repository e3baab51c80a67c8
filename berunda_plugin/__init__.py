"""QGIS glue that is not an algorithm: plugin class, provider, dependency check, styling."""
