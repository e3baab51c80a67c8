"""Run inside the QGIS desktop (``qgis --code tests/desktop_run_probe.py``) with the Berunda
plugin enabled and its dependencies installed: trains a tiny model and classifies a raster
through Processing exactly as the Toolbox does (``processing.runAndLoadResults``), checks
that QGIS is still alive and the classified layer is in the project with its paletted style,
screenshots the map with the layer and its legend, writes what it found as JSON to
$BERUNDA_PROBE_OUT and quits.  Inputs come as JSON in $BERUNDA_PROBE_IN.
Used by tests/test_desktop_install.py."""
import json
import os
import sys
import traceback

from qgis.core import QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins

OUT = os.environ["BERUNDA_PROBE_OUT"]
INPUTS = json.loads(os.environ["BERUNDA_PROBE_IN"])
result = {"plugin_loaded": "berunda" in plugins, "errors": [], "steps": [],
          "plugin_file": getattr(sys.modules.get("berunda"), "__file__", None)}
HEAVY = ("torch", "segmentation_models_pytorch", "rasterio", "timm")


def finish():
    with open(OUT, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    os._exit(0)   # QGIS's own exit path asks questions (save project?) and is slow


def run():
    try:
        import processing

        train = processing.runAndLoadResults("berunda:train", INPUTS["train"])
        result["steps"].append("train")
        result["model"] = train["OUTPUT_MODEL"]
        classify = dict(INPUTS["classify"], MODEL=train["OUTPUT_MODEL"])
        classified = processing.runAndLoadResults("berunda:classify", classify)
        result["steps"].append("classify")
        result["classified"] = classified["OUTPUT"]
        QTimer.singleShot(500, inspect)
    except Exception:  # noqa: BLE001 - report, do not hang
        result["errors"].append(traceback.format_exc())
        finish()


def inspect():
    try:
        layers = list(QgsProject.instance().mapLayers().values())
        result["layers"] = [layer.name() for layer in layers]
        target = os.path.realpath(result["classified"])
        layer = next(l for l in layers if os.path.realpath(l.source().split("|")[0]) == target)
        renderer = layer.renderer()
        result["renderer"] = renderer.type()
        result["classes"] = [(c.value, c.label, c.color.name()) for c in renderer.classes()] \
            if renderer.type() == "paletted" else []
        result["heavy_in_qgis"] = [m for m in HEAVY if m in sys.modules]
        canvas = iface.mapCanvas()
        canvas.setExtent(layer.extent())
        canvas.refresh()
        canvas.waitWhileRendering()
        QTimer.singleShot(1500, shoot)
    except Exception:  # noqa: BLE001
        result["errors"].append(traceback.format_exc())
        finish()


def shoot():
    try:
        window = iface.mainWindow()
        QApplication.processEvents()
        image = window.grab().toImage()
        image.save(os.environ["BERUNDA_PROBE_SHOT"])
        result["screenshot"] = os.environ["BERUNDA_PROBE_SHOT"]
        result["alive"] = True
    except Exception:  # noqa: BLE001
        result["errors"].append(traceback.format_exc())
    finish()


QTimer.singleShot(2000, run)
