"""Berunda QGIS plugin entry point.

Importing this package must stay cheap and must not import torch, smp or
rasterio: QGIS imports every plugin at start-up.  The QGIS-free core lives in
``engine`` and ``models``; QGIS glue in ``berunda_plugin`` and ``algorithms``.
"""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .berunda_plugin.plugin import BerundaPlugin

    return BerundaPlugin(iface)
