"""The engine in its own process, seen from QGIS: QGIS's Python never imports torch & co.,
the engine's messages arrive once, a crash of the engine is a clear Processing error (QGIS
lives on), a missing interpreter is explained, and noise on the engine's stdout cannot
break the protocol."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TINY, image, label, patch_engine

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / ".build" / "plugins"
HEAVY = ("torch", "segmentation_models_pytorch", "rasterio", "timm")


def test_qgis_never_imports_torch_smp_timm_or_rasterio(tmp_path, data_dir):
    """A fresh QGIS Python trains, classifies and evaluates through Processing; afterwards
    none of the heavy modules is in its sys.modules (they live in the engine process)."""
    from osgeo import gdal

    crop = str(tmp_path / "crop.tif")
    truth = str(tmp_path / "truth.tif")
    gdal.Translate(crop, image("scene2_part1"), srcWin=[0, 0, 128, 128])
    gdal.Translate(truth, label("scene2_part1"), srcWin=[0, 0, 128, 128])
    params = dict(TINY, LABELED_IMAGES=[image("scene1_part1")], LABELS=[label("scene1_part1")],
                  AUX_TASK="none", OUTPUT_MODEL=str(tmp_path / "m.pt"))
    script = f"""
import sys, json
sys.path.insert(0, {str(PLUGINS)!r}); sys.path.insert(0, '/usr/share/qgis/python/plugins')
from qgis.core import QgsApplication
app = QgsApplication([], False); app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import berunda, processing
plugin = berunda.classFactory(None); plugin.initProcessing()
model = processing.run('berunda:train', {params!r})['OUTPUT_MODEL']
classified = processing.run('berunda:classify', {{'INPUT': {crop!r}, 'MODEL': model,
                            'OUTPUT': {str(tmp_path / 'c.tif')!r}}})['OUTPUT']
scores = processing.run('berunda:evaluate', {{'PREDICTION': classified, 'GROUND_TRUTH': {truth!r},
                        'OUTPUT_REPORT': {str(tmp_path / 'r.html')!r}}})
print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules],
                   'oa': scores['OVERALL_ACCURACY']}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert 0 <= result["oa"] <= 100
    assert (tmp_path / "c.tif").is_file() and (tmp_path / "r.html").is_file()


def _classify(tmp_path, feedback=None):
    import processing

    from berunda.engine.model_file import ModelPackage  # noqa: F401 - a model must exist
    model = tmp_path / "m.pt"
    if not model.exists():
        processing.run("berunda:train", dict(TINY, LABELED_IMAGES=[image("scene1_part1")],
                                             LABELS=[label("scene1_part1")], AUX_TASK="none",
                                             OUTPUT_MODEL=str(model)))
    return processing.run("berunda:classify", {"INPUT": image("scene2_part1"), "MODEL": str(model),
                                               "OUTPUT": str(tmp_path / "c.tif")},
                          feedback=feedback)


CRASH = """
import os, signal, threading
# the engine dies mid-run, as under the kernel's out-of-memory killer
threading.Timer(4.0, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
print("noise on stdout before anything")   # must not break the JSON lines
"""


def test_an_engine_crash_is_a_clear_error_and_qgis_lives_on(qgis_app, tmp_path, monkeypatch):
    from qgis.core import QgsProcessingException

    _classify(tmp_path)   # a model, made by a healthy engine
    (tmp_path / "c.tif").unlink()
    patch_engine(monkeypatch, tmp_path / "patch", CRASH)
    with pytest.raises(QgsProcessingException) as err:
        _classify(tmp_path)
    message = str(err.value)
    assert "stopped unexpectedly" in message and "SIGKILL" in message
    assert "out of memory" in message and "engine.log" in message
    assert "Traceback" not in message
    assert not (tmp_path / "c.tif").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".c.tif")]   # no partial file


def test_noise_on_the_engine_stdout_does_not_break_it(qgis_app, tmp_path, monkeypatch):
    patch_engine(monkeypatch, tmp_path / "patch", "print('hello from a library', flush=True)\n")
    assert Path(_classify(tmp_path)["OUTPUT"]).is_file()


def test_an_interpreter_that_does_not_exist_is_named(qgis_app, tmp_path, monkeypatch):
    from qgis.core import QgsProcessingException

    monkeypatch.setenv("BERUNDA_PYTHON", str(tmp_path / "no-python"))
    with pytest.raises(QgsProcessingException) as err:
        _classify(tmp_path)
    assert str(tmp_path / "no-python") in str(err.value)
    assert "BERUNDA_PYTHON" in str(err.value)


def test_import_failures_name_the_copy_that_shadows_the_other(tmp_path):
    """Two copies of a package on the engine's path, the first one too old: the message
    names both, with versions and folders, and a fix."""
    for folder, version, body in (("old", "1.11", "OTHER = 1\n"),
                                  ("new", "1.14", "equal_valued = 1\n")):
        pkg = tmp_path / folder / "fakesym"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(body)
        dist = tmp_path / folder / f"fakesym-{version}.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakesym\nVersion: {version}\n")
        (dist / "top_level.txt").write_text("fakesym\n")
    script = ("import sys; sys.path.insert(0, %r)\n"
              "from berunda.engine.environment import explain_import_error\n"
              "try:\n    from fakesym import equal_valued\n"
              "except ImportError as exc:\n    print(explain_import_error(exc))\n") % str(PLUGINS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "old"), str(tmp_path / "new")])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"'fakesym' 1.11 in {tmp_path / 'old'} shadows 'fakesym' 1.14 in {tmp_path / 'new'}" in text
    assert "equal_valued" in text and "Install dependencies" in text
