"""Berunda's heavy dependencies: which are missing or of an unexpected version,
found without importing them, where the plugin installs them, and (when torch
can be imported) which device it will compute on — in plain words.

QGIS imports plugins at start-up, so everything here except ``device_status``
only uses importlib's finders and metadata; torch & co. are imported when an
algorithm runs.  This module imports nothing from QGIS at module level.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Dict, List, Optional, Tuple

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIREMENTS_FILE = os.path.join(PLUGIN_DIR, "requirements", "requirements.txt")
CONSTRAINTS_FILE = os.path.join(PLUGIN_DIR, "requirements", "constraints.txt")
#: Optional: berunda:export_onnx (onnx writes the file, onnxruntime checks it).
ONNX_REQUIREMENTS_FILE = os.path.join(PLUGIN_DIR, "requirements", "onnx.txt")

#: Environment variable overriding the plugin-owned package folder.
PACKAGES_ENV = "BERUNDA_PACKAGES"
PACKAGES_FOLDER_NAME = "berunda-packages"

# (import name, pip name)
REQUIRED: Tuple[Tuple[str, str], ...] = (
    ("torch", "torch"),
    ("segmentation_models_pytorch", "segmentation-models-pytorch"),
    ("rasterio", "rasterio"),
    ("numpy", "numpy"),
)

# Versions outside these bounds cannot work (an error); any other version that differs from
# the pin in requirements.txt is only a warning.  numpy 2 breaks QGIS's own compiled modules.
MINIMUM = {"torch": "2.1", "segmentation-models-pytorch": "0.3", "rasterio": "1.3",
           "numpy": "1.21"}
BELOW = {"numpy": "2"}
WHY_BELOW = {"numpy": "QGIS's own compiled Python modules (and GDAL's) are built for numpy 1 and "
                      "break under numpy 2"}


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


def add_package_folder_to_path(folder: Optional[str] = None) -> bool:
    """Append the package folder to sys.path (once; after QGIS's own folders, so what QGIS
    ships always wins).  Cheap: no import.  Returns whether the folder is on sys.path."""
    folder = os.path.abspath(folder or package_folder())
    if not os.path.isdir(folder):
        return False
    if folder not in (os.path.abspath(p) for p in sys.path if p):
        sys.path.append(folder)
        sys.path_importer_cache.pop(folder, None)
        importlib.invalidate_caches()
    return True


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


# --- versions ----------------------------------------------------------------------------------

def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version: str) -> Tuple[int, ...]:
    """'2.14.1+cpu' -> (2, 14, 1); '1.26.0rc1' -> (1, 26, 0)."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version or "")
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def _cmp(a: Tuple[int, ...], b: Tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (a > b) - (a < b)


def pinned_versions(requirements: Optional[str] = None) -> Dict[str, str]:
    """{canonical pip name: version} of the ``name==version`` lines of a requirements file
    (default: the plugin's)."""
    requirements = requirements or REQUIREMENTS_FILE
    pins: Dict[str, str] = {}
    try:
        with open(requirements, encoding="utf-8") as handle:
            for line in handle:
                line = line.split("#", 1)[0].strip()
                match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([^\s;,]+)",
                                 line)
                if match:
                    pins[_canonical(match.group(1))] = match.group(2)
    except OSError:
        pass
    return pins


def installed_version(distribution: str) -> Optional[str]:
    """Version of an installed distribution (from its metadata; nothing is imported)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - broken metadata
        return None


@dataclass
class PackageStatus:
    pip_name: str
    module: str
    installed: Optional[str]      # version from the metadata, None when not found
    importable: bool              # the module can be found (not imported)
    pinned: Optional[str]         # version in requirements.txt
    state: str                    # ok | missing | different | incompatible
    message: str                  # plain words

    @property
    def problem(self) -> bool:
        return self.state != "ok"


def classify_version(pip_name: str, installed: Optional[str], pinned: Optional[str]) -> Tuple[str, str]:
    """(state, plain words) of an importable package's version: ok, different (a warning) or
    incompatible (outside MINIMUM/BELOW: an error)."""
    key = _canonical(pip_name)
    low, high = MINIMUM.get(key), BELOW.get(key)
    if installed and low and _cmp(release(installed), release(low)) < 0:
        return "incompatible", (f"{pip_name} {installed} is too old: Berunda needs {pip_name} >= "
                                f"{low}" + (f" (tested with {pinned})" if pinned else ""))
    if installed and high and _cmp(release(installed), release(high)) >= 0:
        return "incompatible", (f"{pip_name} {installed} is incompatible: it must stay below {high}"
                                + (f" because {WHY_BELOW[key]}" if key in WHY_BELOW else ""))
    if installed and pinned and _cmp(release(installed), release(pinned)) != 0:
        return "different", (f"{pip_name} {installed} is installed; Berunda is tested with {pinned}. "
                             "It should work, but if something fails, install the tested version.")
    return "ok", f"{pip_name} {installed or 'unknown version'}"


def package_status(module: str, pip_name: str, pins: Optional[Dict[str, str]] = None) -> PackageStatus:
    pins = pinned_versions() if pins is None else pins
    pinned = pins.get(_canonical(pip_name))
    installed = installed_version(pip_name)
    importable = importlib.util.find_spec(module) is not None
    if not importable:
        state = "missing"
        message = f"{pip_name}: missing" + (f" (Berunda uses {pinned})" if pinned else "")
    else:
        state, message = classify_version(pip_name, installed, pinned)
    return PackageStatus(pip_name, module, installed, importable, pinned, state, message)


def package_statuses() -> List[PackageStatus]:
    pins = pinned_versions()
    return [package_status(module, pip, pins) for module, pip in REQUIRED]


def missing_packages() -> List[str]:
    """pip names of the required packages that cannot be found."""
    return [pip for module, pip in REQUIRED if importlib.util.find_spec(module) is None]


def manual_install_command(target: Optional[str] = None) -> str:
    """The pip command a user can run by hand (what berunda:install_dependencies runs)."""
    return (f"\"{python_executable()}\" -m pip install --upgrade --target \"{target or package_folder()}\" "
            f"-r \"{REQUIREMENTS_FILE}\" -c \"{CONSTRAINTS_FILE}\"")


# (import name, pip name) of the optional packages berunda:export_onnx uses
ONNX_PACKAGES: Tuple[Tuple[str, str], ...] = (("onnx", "onnx"), ("onnxruntime", "onnxruntime"))


def missing_onnx_packages() -> List[str]:
    return [pip for module, pip in ONNX_PACKAGES if importlib.util.find_spec(module) is None]


def onnx_install_hint(missing: List[str]) -> str:
    return (
        f"Exporting to ONNX needs the Python package(s) {', '.join(missing)}, which QGIS's Python "
        "cannot find. Install them with 'Install dependencies' (berunda:install_dependencies) "
        "with WITH_ONNX checked, or by hand into Berunda's package folder:\n"
        f"    \"{python_executable()}\" -m pip install --upgrade --target \"{package_folder()}\" "
        f"-r \"{ONNX_REQUIREMENTS_FILE}\" -c \"{CONSTRAINTS_FILE}\"\n"
        "then restart QGIS.")


def install_hint(missing: List[str]) -> str:
    return (
        f"Berunda needs the Python package(s) {', '.join(missing)}, which QGIS's Python "
        "cannot find. Install them with the Berunda algorithm 'Install dependencies' "
        "(Processing Toolbox > Berunda > Set-up, or Plugins menu > Berunda > Install "
        "dependencies…; headless: qgis_process run berunda:install_dependencies), or by hand "
        "into Berunda's package folder, keeping QGIS's numpy 1.x:\n"
        f"    {manual_install_command()}\n"
        "then restart QGIS.")


class DependencyError(RuntimeError):
    """A dependency is missing or incompatible; the message says what to do."""


@dataclass
class DependencyCheck:
    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    infos: List[str] = field(default_factory=list)


def check_dependencies() -> DependencyCheck:
    """Missing packages and incompatible versions are errors; other versions than the pins
    are warnings."""
    check = DependencyCheck()
    missing = missing_packages()
    if missing:
        check.errors.append(install_hint(missing))
    for status in package_statuses():
        if status.state == "incompatible":
            check.errors.append(
                f"{status.message}. Reinstall Berunda's dependencies with the 'Install "
                f"dependencies' algorithm or by hand:\n    {manual_install_command()}")
        elif status.state == "different":
            check.warnings.append(status.message)
        elif status.state == "ok":
            check.infos.append(status.message)
    return check


def require_dependencies() -> None:
    """Raise ImportError with an install hint when something is missing."""
    missing = missing_packages()
    if missing:
        raise ImportError(install_hint(missing))


# --- devices (imports torch: only call when it is importable and about to be used) ------------

def nvidia_smi() -> Optional[str]:
    return shutil.which("nvidia-smi")


def nvidia_gpus(timeout: float = 10.0) -> List[str]:
    """GPU names and memory as nvidia-smi reports them (no torch needed); [] without one."""
    exe = nvidia_smi()
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


@dataclass
class DeviceStatus:
    torch_version: Optional[str] = None
    cuda_build: Optional[str] = None       # torch.version.cuda (None: CPU-only build)
    cuda_available: bool = False
    gpus: List[Tuple[str, int]] = field(default_factory=list)   # (name, total memory bytes)
    mps_available: bool = False
    error: Optional[str] = None
    summary: str = ""


def device_status() -> DeviceStatus:
    """Which device Berunda will use, in plain words.  Imports torch (when it is installed)."""
    status = DeviceStatus()
    if importlib.util.find_spec("torch") is None:
        status.error = "torch is missing"
        status.summary = ("Device: unknown — torch is missing, so Berunda cannot compute yet "
                          "(install the dependencies).")
        if nvidia_gpus():
            status.summary += f" An NVIDIA GPU is present: {'; '.join(nvidia_gpus())}."
        return status
    try:
        import torch  # noqa: PLC0415 - deliberately lazy
    except Exception as exc:  # noqa: BLE001 - a broken install must still be reported
        status.error = f"torch cannot be imported: {exc}"
        status.summary = (f"Device: unknown — torch is installed but cannot be imported ({exc}). "
                          "Reinstall the dependencies.")
        return status
    status.torch_version = torch.__version__
    status.cuda_build = getattr(torch.version, "cuda", None)
    try:
        status.cuda_available = bool(torch.cuda.is_available())
        if status.cuda_available:
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                status.gpus.append((props.name, int(props.total_memory)))
    except Exception as exc:  # noqa: BLE001 - driver trouble
        status.cuda_available = False
        status.error = f"CUDA check failed: {exc}"
    try:
        status.mps_available = bool(torch.backends.mps.is_available())
    except Exception:  # noqa: BLE001
        status.mps_available = False
    if status.cuda_available and status.gpus:
        gpus = ", ".join(f"{name} ({memory / 2**30:.1f} GiB)" for name, memory in status.gpus)
        status.summary = (f"Device: GPU {gpus} with CUDA {status.cuda_build} (torch "
                          f"{status.torch_version}). DEVICE=auto trains and classifies on the GPU.")
    elif status.cuda_build is None:
        status.summary = (f"Device: CPU only — this torch ({status.torch_version}) is a CPU-only "
                          "build. Training works but is slow.")
        if nvidia_gpus():
            status.summary += (f" An NVIDIA GPU is present ({'; '.join(nvidia_gpus())}): run "
                               "'Install dependencies' with TORCH_BUILD=cuda to use it.")
    else:
        status.summary = (f"Device: CPU only — torch {status.torch_version} is built for CUDA "
                          f"{status.cuda_build} but finds no usable NVIDIA GPU (no GPU, or its "
                          "driver is missing or older than this CUDA). Training works but is slow.")
        if status.error:
            status.summary += f" ({status.error})"
    return status


_FIRST_USE_DONE = False


def first_use_messages() -> Tuple[List[str], List[str]]:
    """(infos, warnings) to show before an algorithm runs: the full picture the first time in
    this QGIS session (versions and device, in plain words), only the warnings afterwards.
    Raises DependencyError when something is missing or incompatible."""
    global _FIRST_USE_DONE
    check = check_dependencies()
    if check.errors:
        raise DependencyError("\n".join(check.errors))
    if _FIRST_USE_DONE:
        return [], check.warnings
    _FIRST_USE_DONE = True
    infos = ["Berunda's dependencies: " + ", ".join(
        f"{status.pip_name} {status.installed or '(version unknown)'}" for status in package_statuses())]
    infos.append(device_status().summary)
    return infos, check.warnings
