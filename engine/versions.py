"""Versions of the libraries a model was made with (stored in the model file)."""
import platform
from importlib import metadata

from . import __version__


def library_versions() -> dict:
    versions = {"berunda": __version__, "python": platform.python_version()}
    for dist in ("torch", "segmentation-models-pytorch", "rasterio", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions
