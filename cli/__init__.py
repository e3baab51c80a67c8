"""Berunda's command line: a second thin front door over the QGIS-free engine (argument
parsing, exit codes, progress on a terminal or as JSON lines for the QGIS plugin)."""
