"""Which heavy dependencies are missing, found without importing them.

QGIS imports plugins at start-up, so this module only uses importlib's
finders; torch & co. are imported when an algorithm runs.
"""
from __future__ import annotations

import importlib.util
import os
from typing import List, Tuple

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIREMENTS_FILE = os.path.join(PLUGIN_DIR, "requirements", "requirements.txt")
CONSTRAINTS_FILE = os.path.join(PLUGIN_DIR, "requirements", "constraints.txt")

# (import name, pip name)
REQUIRED: Tuple[Tuple[str, str], ...] = (
    ("torch", "torch"),
    ("segmentation_models_pytorch", "segmentation-models-pytorch"),
    ("rasterio", "rasterio"),
    ("numpy", "numpy"),
)


def missing_packages() -> List[str]:
    """pip names of the required packages that cannot be found."""
    return [pip for module, pip in REQUIRED if importlib.util.find_spec(module) is None]


def install_hint(missing: List[str]) -> str:
    return (
        f"Berunda needs the Python package(s) {', '.join(missing)}, which QGIS's Python "
        f"cannot find. Install them into the Python that runs QGIS, keeping QGIS's numpy 1.x:\n"
        f"    python3 -m pip install -r \"{REQUIREMENTS_FILE}\" -c \"{CONSTRAINTS_FILE}\"\n"
        "then restart QGIS."
    )


def require_dependencies() -> None:
    """Raise ImportError with an install hint when something is missing."""
    missing = missing_packages()
    if missing:
        raise ImportError(install_hint(missing))
