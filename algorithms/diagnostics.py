"""berunda:diagnostics — what Berunda runs with: QGIS, Python, numpy, GDAL, torch,
segmentation-models-pytorch, rasterio (or "missing"), the device and memory."""
from __future__ import annotations

import html
import os
import platform
import sys
from typing import List, Tuple

from qgis.core import (Qgis, QgsProcessingOutputString, QgsProcessingParameterFileDestination)

from ..berunda_plugin import dependencies
from ..berunda_plugin.dependencies import qgis_pins
from .base import SetupAlgorithm

Section = Tuple[str, List[Tuple[str, str]]]


def plugin_version() -> str:
    try:
        with open(os.path.join(dependencies.PLUGIN_DIR, "metadata.txt"), encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("version="):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def system_memory() -> Tuple[int, int]:
    """(total, available) bytes; 0 when unknown."""
    try:
        if sys.platform.startswith("linux"):
            info = {}
            with open("/proc/meminfo", encoding="ascii") as handle:
                for line in handle:
                    key, value = line.split(":", 1)
                    info[key] = int(value.split()[0]) * 1024
            return info.get("MemTotal", 0), info.get("MemAvailable", info.get("MemFree", 0))
        if sys.platform.startswith("win"):
            import ctypes  # noqa: PLC0415

            class MemoryStatus(ctypes.Structure):
                _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                            ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                            ("ullTotalPageFile", ctypes.c_ulonglong),
                            ("ullAvailPageFile", ctypes.c_ulonglong),
                            ("ullTotalVirtual", ctypes.c_ulonglong),
                            ("ullAvailVirtual", ctypes.c_ulonglong),
                            ("sullAvailExtendedVirtual", ctypes.c_ulonglong)]

            status = MemoryStatus()
            status.dwLength = ctypes.sizeof(MemoryStatus)
            ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status))
            return int(status.ullTotalPhys), int(status.ullAvailPhys)
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return int(total), 0
    except Exception:  # noqa: BLE001 - diagnostics must not fail
        return 0, 0


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n else "unknown"


def engine_record(run) -> Tuple[dict, str]:
    """(what the engine process reports about itself, '' or why it could not start)."""
    try:
        return run(["diagnostics", "--json"])["ENVIRONMENT"], ""
    except Exception as exc:  # noqa: BLE001 - diagnostics must report, not fail
        return {}, str(exc)


def collect(run) -> Tuple[List[Section], List[str]]:
    """The report's sections and the problems found (plain words).  ``run`` runs an engine
    command (the engine reports its own interpreter, packages and device)."""
    problems: List[str] = []
    folder = dependencies.package_folder()
    berunda = [
        ("Berunda version", plugin_version()),
        ("Plugin folder", dependencies.PLUGIN_DIR),
        ("Package folder", folder + (" (exists)" if os.path.isdir(folder) else " (not created yet)")),
        (f"${dependencies.PACKAGES_ENV}", os.environ.get(dependencies.PACKAGES_ENV) or "not set"),
        (f"${dependencies.PYTHON_ENV}", os.environ.get(dependencies.PYTHON_ENV) or "not set"),
    ]
    try:
        from qgis.PyQt.QtCore import QT_VERSION_STR  # noqa: PLC0415
    except Exception:  # noqa: BLE001
        QT_VERSION_STR = "unknown"  # noqa: N806
    host = [
        ("QGIS", Qgis.QGIS_VERSION),
        ("Qt", QT_VERSION_STR),
        ("Python", platform.python_version()),
        ("Python interpreter", dependencies.python_executable()),
        ("Operating system", platform.platform()),
    ]
    pins = qgis_pins()
    shipped = [("numpy", pins.get("numpy", "missing")),
               ("GDAL Python bindings", pins.get("GDAL", "missing"))]
    try:
        from osgeo import gdal  # noqa: PLC0415

        shipped.append(("GDAL library", gdal.VersionInfo("RELEASE_NAME")))
    except Exception:  # noqa: BLE001
        pass

    record, failure = engine_record(run)
    engine = [("Interpreter", record.get("interpreter") or dependencies.engine_python()),
              ("Search path", os.pathsep.join(dependencies.engine_search_path()))]
    deps, dev = [], []
    if failure:
        problems.append(f"Berunda's engine does not start: {failure}")
        engine.append(("Status", "does not start (see above)"))
    else:
        engine.append(("Python", record["python"]))
        for p in record["packages"]:
            value = p["version"] or "missing"
            if p["state"] != "ok" and p["state"] != "missing":
                value += f" — {p['message']}"
            if p["state"] in ("missing", "incompatible"):
                problems.append(p["message"] + ".")
            if p["location"]:
                value += f" (in {p['location']})"
            if p["pinned"]:
                value += f"; tested with {p['pinned']}"
            deps.append((p["name"], value))
        for p in record.get("optional", []):
            deps.append((f"{p['name']} (optional, ONNX export)",
                         f"{p['version']} (in {p['location']})" if p["location"] else
                         "not installed — 'Install dependencies' with WITH_ONNX adds it"))
        device = record["device"]
        dev = [("Summary", device["summary"])]
        if device["torch"]:
            dev += [("torch CUDA build", device["cuda_build"] or "none (CPU-only build)"),
                    ("CUDA usable", "yes" if device["cuda_available"] else "no")]
            for i, gpu in enumerate(device["gpus"]):
                dev.append((f"GPU {i}", f"{gpu['name']}, {gib(gpu['memory'])}"))
        if device["error"] and not device["error"].startswith("torch is missing"):
            problems.append(device["error"])
    smi = dependencies.nvidia_gpus()
    dev.append(("nvidia-smi", "; ".join(smi) if smi else
                ("found, lists no GPU" if dependencies.nvidia_smi() else "not found (no NVIDIA driver)")))

    total, available = system_memory()
    system = [("CPU cores", str(os.cpu_count() or "unknown")),
              ("Memory", f"{gib(total)} total, {gib(available)} available" if available else gib(total))]

    sections = [("Berunda", berunda), ("QGIS and Python", host), ("What QGIS ships", shipped),
                ("Berunda's engine (its own process)", engine),
                ("Berunda's dependencies (as the engine sees them)", deps), ("Device", dev),
                ("System", system)]
    return sections, problems


def verdict(problems: List[str]) -> str:
    if not problems:
        return "Ready: Berunda's dependencies are installed."
    return ("Not ready: " + " ".join(problems) + " Run 'Install dependencies' "
            "(berunda:install_dependencies) or: " + dependencies.manual_install_command())


def as_text(sections: List[Section], problems: List[str]) -> str:
    lines = ["Berunda diagnostics", "==================", verdict(problems), ""]
    for title, rows in sections:
        lines.append(title)
        width = max(len(k) for k, _ in rows)
        lines += [f"  {key.ljust(width)}  {value}" for key, value in rows]
        lines.append("")
    return "\n".join(lines)


def as_html(sections: List[Section], problems: List[str]) -> str:
    esc = html.escape
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Berunda diagnostics</title>",
           "<style>body{font-family:sans-serif}td{padding:2px 10px;vertical-align:top}"
           "th{text-align:left;padding-top:10px}</style></head><body>",
           "<h1>Berunda diagnostics</h1>",
           f"<p style='color:{'#1a7f37' if not problems else '#b42318'}'><b>{esc(verdict(problems))}</b></p>",
           "<table>"]
    for title, rows in sections:
        out.append(f"<tr><th colspan='2'>{esc(title)}</th></tr>")
        out += [f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows]
    out.append("</table></body></html>")
    return "\n".join(out)


class DiagnosticsAlgorithm(SetupAlgorithm):
    OUTPUT_REPORT = "OUTPUT_REPORT"
    REPORT = "REPORT"

    def name(self):
        return "diagnostics"

    def displayName(self):  # noqa: N802
        return "Diagnostics (versions, GPU, memory)"

    def shortHelpString(self):  # noqa: N802
        return (
            "Reports what Berunda runs with, in plain words: the QGIS, Python, numpy and GDAL "
            "versions; Berunda's engine process as it sees itself — its interpreter, torch, "
            "segmentation-models-pytorch and rasterio (version and folder, or 'missing', compared "
            "with the tested versions), whether torch can use a CUDA GPU, its name and memory; "
            "the system memory; and Berunda's package folder. Attach it to bug reports.<br>"
            "<b>OUTPUT_REPORT</b> (optional): the report as an HTML (.html) or text (.txt) file.<br>"
            "Output <b>REPORT</b>: the report as text.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT, "Diagnostics report", "HTML files (*.html);;Text files (*.txt)",
            optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputString(self.REPORT, "Diagnostics"))

    def compute(self, parameters, context, feedback):
        sections, problems = collect(lambda args: self.engine(args, None))
        text = as_text(sections, problems)
        for line in text.splitlines():
            feedback.pushInfo(line)
        results = {self.REPORT: text}
        path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        if path:
            from ..engine.atomic import ensure_folder   # no torch: fine for a set-up algorithm

            ensure_folder(path, self.OUTPUT_REPORT)   # a missing folder is created
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(as_html(sections, problems) if path.lower().endswith((".html", ".htm"))
                             else text + "\n")
            results[self.OUTPUT_REPORT] = path
        return results
