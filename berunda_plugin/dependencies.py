"""Where Berunda's engine runs, seen from QGIS's process — which never imports torch,
segmentation-models-pytorch, timm or rasterio (importing them inside the QGIS desktop can
crash it, and QGIS's own older copies of their dependencies would shadow them).

The engine runs in a child process (berunda_plugin/engine_process.py): QGIS's own Python
(or ``$BERUNDA_PYTHON``) with Berunda's **package folder first on its path**, so what
berunda:install_dependencies put there always wins over what QGIS ships.  Here: that
folder, that interpreter, and a cheap look (package metadata only, nothing imported) at
whether the packages are there.  Nothing from QGIS is imported at module level.
"""
from __future__ import annotations

import os
import shutil
import sys
from importlib import metadata
from typing import Dict, List, Optional

from ..engine.environment import REQUIRED, REQUIREMENTS_FILE, nvidia_gpus, nvidia_smi  # noqa: F401

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSTRAINTS_FILE = os.path.join(PLUGIN_DIR, "requirements", "constraints.txt")
#: Optional: berunda:export_onnx (onnx writes the file, onnxruntime checks it).
ONNX_REQUIREMENTS_FILE = os.path.join(PLUGIN_DIR, "requirements", "onnx.txt")

#: Environment variable overriding the plugin-owned package folder.
PACKAGES_ENV = "BERUNDA_PACKAGES"
PACKAGES_FOLDER_NAME = "berunda-packages"
#: Environment variable naming another interpreter for the engine (a venv, conda env…): its
#: own packages are used and the package folder is not added.
PYTHON_ENV = "BERUNDA_PYTHON"

# --- the plugin-owned package folder --------------------------------------------------------

def _default_settings_dir() -> str:
    """QGIS's default profile folder when no QgsApplication tells us."""
    if sys.platform.startswith("win"):
        base = os.environ.get("APPDATA", os.path.expanduser("~"))
        return os.path.join(base, "QGIS", "QGIS3", "profiles", "default")
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Application Support/QGIS/QGIS3/profiles/default")
    return os.path.expanduser("~/.local/share/QGIS/QGIS3/profiles/default")


def package_folder() -> str:
    """Where Berunda installs its Python packages: ``$BERUNDA_PACKAGES``, else
    ``<QGIS profile folder>/python/berunda-packages``."""
    override = os.environ.get(PACKAGES_ENV, "").strip()
    if override:
        return os.path.abspath(os.path.expanduser(override))
    settings = ""
    if "qgis.core" in sys.modules:   # never pull QGIS in from here
        try:
            settings = sys.modules["qgis.core"].QgsApplication.qgisSettingsDirPath()
        except Exception:  # noqa: BLE001 - no application yet
            settings = ""
    return os.path.join(settings or _default_settings_dir(), "python", PACKAGES_FOLDER_NAME)


# --- what QGIS ships -------------------------------------------------------------------------

def _module_version(module: str) -> Optional[str]:
    loaded = sys.modules.get(module)
    return getattr(loaded, "__version__", None) if loaded is not None else None


def _dist_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except Exception:  # noqa: BLE001 - not installed, or broken metadata
        return None


def qgis_numpy() -> Optional[str]:
    """The numpy version QGIS's Python runs with (None without numpy)."""
    return _module_version("numpy") or _dist_version("numpy")


def qgis_pins() -> Dict[str, str]:
    """{distribution: version} of what QGIS's Python runs with and must keep: numpy and
    the GDAL bindings (osgeo)."""
    pins = {}
    numpy = qgis_numpy()
    if numpy:
        pins["numpy"] = numpy
    gdal = _dist_version("GDAL") or _module_version("osgeo")
    if gdal is None:
        try:
            from osgeo import gdal as _gdal  # noqa: PLC0415 - cheap, QGIS has loaded GDAL

            gdal = _gdal.__version__
        except Exception:  # noqa: BLE001
            gdal = None
    if gdal:
        pins["GDAL"] = gdal
    return pins


# --- the Python that runs QGIS ---------------------------------------------------------------

def _is_python(path: str) -> bool:
    name = os.path.basename(path or "").lower()
    return bool(path) and name.startswith("python") and os.path.isfile(path)


def _prefixes() -> List[str]:
    return [p for p in {sys.prefix, sys.exec_prefix, getattr(sys, "base_prefix", ""),
                        getattr(sys, "base_exec_prefix", "")} if p]


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.normcase(os.path.abspath(path)), os.path.normcase(os.path.abspath(folder))
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:   # other drive
        return False


def _same_installation(path: str) -> bool:
    """The interpreter belongs to the running Python's installation (or its venv) — not, say,
    a pyenv shim or another Python found on PATH."""
    return any(_inside(p, prefix) for p in (path, os.path.realpath(path)) for prefix in _prefixes())


def python_executable() -> str:
    """The Python interpreter of the running QGIS.  Inside QGIS ``sys.executable`` may be the
    qgis binary itself (Windows, macOS) or whatever ``python3`` comes first on PATH (embedded
    Python on Linux), so only an interpreter inside ``sys.prefix``/``sys.exec_prefix`` counts."""
    exe = sys.executable or ""
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates: List[str] = [exe, getattr(sys, "_base_executable", "") or ""]
    folders = _prefixes()
    if sys.platform.startswith("win"):
        for folder in folders + [os.path.dirname(exe)]:
            candidates += [os.path.join(folder, "python.exe"), os.path.join(folder, "python3.exe")]
    else:
        for folder in folders:
            for name in (f"python{ver}", "python3", "python"):
                candidates.append(os.path.join(folder, "bin", name))
    candidates += [shutil.which(f"python{ver}") or "", shutil.which("python3") or ""]
    runnable = [c for c in candidates if _is_python(c) and os.access(c, os.X_OK)]
    for candidate in runnable:
        if _same_installation(candidate):
            return candidate
    return runnable[0] if runnable else (exe or "python3")


def engine_python() -> str:
    """The interpreter that runs the engine: $BERUNDA_PYTHON, else QGIS's own Python."""
    chosen = os.environ.get(PYTHON_ENV, "").strip()
    return os.path.expanduser(chosen) if chosen else python_executable()


def engine_search_path() -> List[str]:
    """Folders put first on the engine's PYTHONPATH: the package folder (unless
    $BERUNDA_PYTHON names another environment) and the folder holding the plugin, so that
    ``python -m <plugin folder name>`` finds it."""
    folders = []
    if not os.environ.get(PYTHON_ENV, "").strip() and os.path.isdir(package_folder()):
        folders.append(package_folder())
    folders.append(os.path.dirname(PLUGIN_DIR))
    return folders


def missing_packages() -> List[str]:
    """pip names of the required packages the engine would not find, judged without starting
    it: from the package metadata in the package folder and in QGIS's Python.  With
    $BERUNDA_PYTHON nothing is judged here (the engine reports what it lacks)."""
    if os.environ.get(PYTHON_ENV, "").strip():
        return []
    folders = [package_folder()] + [p for p in sys.path if p]
    found = set()
    for dist in metadata.distributions(path=[f for f in folders if os.path.isdir(f)]):
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        found.add(name)
    return [pip for _module, pip in REQUIRED if pip.lower() not in found]


def manual_install_command(target: Optional[str] = None) -> str:
    """The pip command a user can run by hand (what berunda:install_dependencies runs)."""
    return (f"\"{python_executable()}\" -m pip install --upgrade --target \"{target or package_folder()}\" "
            f"-r \"{REQUIREMENTS_FILE}\" -c \"{CONSTRAINTS_FILE}\"")


def install_hint(missing: List[str]) -> str:
    return (
        f"Berunda needs the Python package(s) {', '.join(missing)}, which its engine cannot "
        "find. Install them with the Berunda algorithm 'Install dependencies' "
        "(Processing Toolbox > Berunda > Set-up, or Plugins menu > Berunda > Install "
        "dependencies…; headless: qgis_process run berunda:install_dependencies), or by hand "
        "into Berunda's package folder:\n"
        f"    {manual_install_command()}\n"
        f"or set {PYTHON_ENV} to the Python of an environment that has them.")
