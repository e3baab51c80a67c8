"""The Python environment the engine runs in, as the engine process sees it: Berunda's
packages (version, where they were found, compared with the tested pins), the compute
device in plain words, and import failures explained (which package, which copy shadows
which, where).  Used by ``python -m berunda diagnostics``, by the first lines of every
engine run started from QGIS, and by the command line's error messages.

Nothing heavy is imported at module level; ``device_status`` imports torch.
"""
from __future__ import annotations

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

# (import name, pip name)
REQUIRED: Tuple[Tuple[str, str], ...] = (
    ("torch", "torch"),
    ("segmentation_models_pytorch", "segmentation-models-pytorch"),
    ("rasterio", "rasterio"),
    ("numpy", "numpy"),
)

# Optional: berunda:export_onnx (onnx writes the file, onnxruntime checks it).
OPTIONAL: Tuple[Tuple[str, str], ...] = (("onnx", "onnx"), ("onnxruntime", "onnxruntime"))

# Versions below these cannot work (an error); any other version that differs from the pin in
# requirements.txt is only a warning.  numpy has no pin and no upper bound: it follows QGIS.
MINIMUM = {"torch": "2.1", "segmentation-models-pytorch": "0.3", "rasterio": "1.3",
           "numpy": "1.21"}
#: Set by the QGIS side for the engine it starts: the numpy version QGIS's Python runs with.
#: The engine's path ends with QGIS's own folders, whose compiled modules are built for that
#: numpy's major version, so the engine's numpy must have the same major (1 on QGIS 3.22,
#: 2 on 3.40+).
QGIS_NUMPY_ENV = "BERUNDA_QGIS_NUMPY"


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


def classify_version(pip_name: str, installed: Optional[str], pinned: Optional[str],
                     qgis_numpy: Optional[str] = None) -> Tuple[str, str]:
    """(state, plain words) of an importable package's version: ok, different (a warning) or
    incompatible (an error: below MINIMUM, or a numpy of another major version than QGIS's
    ``qgis_numpy``)."""
    key = _canonical(pip_name)
    low = MINIMUM.get(key)
    if installed and low and _cmp(release(installed), release(low)) < 0:
        return "incompatible", (f"{pip_name} {installed} is too old: Berunda needs {pip_name} >= "
                                f"{low}" + (f" (tested with {pinned})" if pinned else ""))
    if (key == "numpy" and installed and qgis_numpy and release(installed)[:1]
            != release(qgis_numpy)[:1]):
        return "incompatible", (
            f"numpy {installed} is installed for Berunda's engine, but QGIS runs numpy "
            f"{qgis_numpy}: the compiled modules QGIS ships are built for numpy "
            f"{release(qgis_numpy)[0]} and break under numpy {release(installed)[0]}. Run "
            "'Install dependencies' again: it installs QGIS's own numpy version")
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
        state, message = classify_version(pip_name, installed, pinned,
                                          os.environ.get(QGIS_NUMPY_ENV, "").strip() or None)
    return PackageStatus(pip_name, module, installed, importable, pinned, state, message)


def package_statuses() -> List[PackageStatus]:
    pins = pinned_versions()
    return [package_status(module, pip, pins) for module, pip in REQUIRED]


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


# --- what the engine process runs with, in plain words ----------------------------------------

def summary_lines() -> List[str]:
    """The first lines of an engine run started from QGIS: interpreter, packages, device."""
    statuses = package_statuses()
    packages = ", ".join(f"{s.pip_name} {s.installed or '(version unknown)'}" for s in statuses)
    return [f"Berunda's engine: Python {sys.version.split()[0]} ({sys.executable})",
            f"Berunda's dependencies: {packages}", device_status().summary]


def version_problems() -> Tuple[List[str], List[str]]:
    """(errors, warnings) about the packages: missing or incompatible ones are errors,
    versions other than the tested pins are warnings."""
    errors, warnings = [], []
    for status in package_statuses():
        if status.state in ("missing", "incompatible"):
            errors.append(status.message)
        elif status.state == "different":
            warnings.append(status.message)
    return errors, warnings


def report() -> dict:
    """Everything ``python -m berunda diagnostics`` reports (JSON-able)."""
    device = device_status()
    return {
        "python": sys.version.split()[0], "interpreter": sys.executable,
        "path": [p for p in sys.path if p],
        "packages": [{"name": s.pip_name, "module": s.module, "version": s.installed,
                      "location": _location(s.module), "pinned": s.pinned, "state": s.state,
                      "message": s.message} for s in package_statuses()],
        "device": {"summary": device.summary, "torch": device.torch_version,
                   "cuda_build": device.cuda_build, "cuda_available": device.cuda_available,
                   "gpus": [{"name": n, "memory": m} for n, m in device.gpus],
                   "error": device.error},
        "optional": [{"name": pip, "version": installed_version(pip) if _location(module) else None,
                      "location": _location(module)} for module, pip in OPTIONAL],
        "nvidia_smi": nvidia_gpus(),
    }


def _location(module: str) -> Optional[str]:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    origin = os.path.dirname(spec.origin)
    return os.path.dirname(origin) if os.path.basename(spec.origin) == "__init__.py" else origin


# --- import failures, explained ------------------------------------------------------------------

def copies_on_path(top: str) -> List[Tuple[str, Optional[str]]]:
    """(folder, version) of every copy of the top-level package ``top`` on sys.path, in the
    order Python searches them: the first one is the one that is imported."""
    found = []
    for entry in sys.path:
        folder = entry or os.getcwd()
        if not os.path.isdir(folder):
            continue
        if os.path.isdir(os.path.join(folder, top)) or os.path.isfile(os.path.join(folder, top + ".py")):
            found.append((folder, _version_in(folder, top)))
    return found


def _version_in(folder: str, top: str) -> Optional[str]:
    for dist in metadata.distributions(path=[folder]):
        try:
            tops = (dist.read_text("top_level.txt") or "").split()
            if not tops:
                tops = {str(f).split("/")[0].removesuffix(".py") for f in (dist.files or [])}
        except Exception:  # noqa: BLE001 - broken metadata
            continue
        if top in tops:
            return dist.version
    return None


def explain_import_error(exc: ImportError) -> str:
    """The real cause of an import failure and a fix that works."""
    name = getattr(exc, "name", None) or ""
    if not name:
        match = re.search(r"No module named '([^']+)'", str(exc))
        name = match.group(1) if match else ""
    top = name.split(".")[0] or "?"
    copies = copies_on_path(top)
    lines = [f"Berunda's engine cannot import {name or 'a package'}: {exc}"]
    if not copies:
        lines.append(f"The package '{top}' is not installed for {sys.executable}.")
    elif len(copies) > 1:
        (first, v1), (second, v2) = copies[0], copies[1]
        lines.append(f"'{top}' {v1 or '(unknown version)'} in {first} shadows '{top}' "
                     f"{v2 or '(unknown version)'} in {second}: Python imports the first copy on "
                     "its path.")
    else:
        folder, version = copies[0]
        lines.append(f"The only copy of '{top}' ({version or 'unknown version'}) is in {folder}; "
                     "it is broken or of a version that does not fit the other packages.")
    lines.append("Fix: run 'Install dependencies' (berunda:install_dependencies) again — it "
                 "installs into Berunda's package folder, which the engine puts first on its "
                 "path — or set BERUNDA_PYTHON to the Python of an environment that has Berunda's "
                 "requirements (requirements/requirements.txt). Engine search path: "
                 + os.pathsep.join(p for p in sys.path[:6] if p))
    return "\n".join(lines)
