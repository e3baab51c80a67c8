"""The desktop experience: dependency check, the package folder, berunda:install_dependencies
(real pip into a throw-away folder), berunda:diagnostics, `make package` and installing the
zip into a fresh profile, the modeler example run headless, and the real Processing dialog
and the QGIS desktop under Xvfb (screenshots in tests/artifacts/)."""
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from helpers import TINY, image, label, patch_engine, recording_feedback

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / ".build" / "plugins"
# one worker runs the desktop files (xvfb-run -a picks displays racily; dist/ is shared)
pytestmark = pytest.mark.xdist_group("desktop")
ARTIFACTS = REPO / "tests" / "artifacts"
MODEL3 = REPO / "resources" / "models" / "berunda_train_classify_evaluate.model3"
QGIS_PROCESS_BIN = shutil.which("qgis_process.bin") or "qgis_process.bin"


def clean_env(home, **extra):
    """The environment of a fresh user: own HOME (so a fresh QGIS profile), no venv on
    PYTHONPATH, no Berunda package folder override."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "BERUNDA_PACKAGES", "BERUNDA_PYTHON", "QGIS_PLUGINPATH")
           and not k.startswith("XDG_")}
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", **extra)
    return env


def system_python_has(module):
    out = subprocess.run(["/usr/bin/python3", "-c",
                          f"import importlib.util,sys; sys.exit(importlib.util.find_spec({module!r}) is None)"],
                         env={"PATH": os.environ["PATH"]}, capture_output=True)
    return out.returncode == 0


# --- dependency check -----------------------------------------------------------------------

def test_version_check_in_plain_words():
    from berunda.engine import environment as env

    assert env.release("2.14.1+cu130") == (2, 14, 1)
    assert env.classify_version("torch", "2.14.1+cpu", "2.14.1")[0] == "ok"
    state, words = env.classify_version("torch", "2.3.0", "2.14.1")
    assert state == "different" and "tested with 2.14.1" in words
    # numpy follows QGIS: any major on its own, the same major as QGIS's when QGIS says which
    assert env.classify_version("numpy", "2.2.4", None)[0] == "ok"
    assert env.classify_version("numpy", "2.2.4", None, qgis_numpy="2.2.4")[0] == "ok"
    assert env.classify_version("numpy", "1.26.4", None, qgis_numpy="1.24.2")[0] == "ok"
    state, words = env.classify_version("numpy", "2.0.1", None, qgis_numpy="1.24.2")
    assert state == "incompatible" and "QGIS runs numpy 1.24.2" in words
    assert "Install dependencies" in words
    assert env.classify_version("numpy", "1.24.2", None, qgis_numpy="2.2.4")[0] == "incompatible"
    assert env.classify_version("torch", "1.13.1", "2.14.1")[0] == "incompatible"
    assert env.pinned_versions()["segmentation-models-pytorch"] == "0.5.0"
    # this environment (the engine's): all present at the pinned versions, QGIS's numpy
    assert env.version_problems() == ([], [])
    summary = env.device_status().summary
    assert summary.startswith("Device: ") and ("GPU" in summary or "CPU" in summary)


def test_first_run_shows_the_engine_environment_and_version_warnings(qgis_app, monkeypatch,
                                                                      tmp_path):
    """Before an algorithm computes, the engine says what it runs with: its interpreter, the
    package versions and the device the first time in a QGIS session; a version other than
    the tested one is a warning every time; an incompatible one an error before any work."""
    import processing
    from qgis.core import QgsProcessingException

    from berunda.berunda_plugin import engine_process

    pins = tmp_path / "requirements.txt"
    pins.write_text("torch==2.3.0\nrasterio==1.4.3\n")
    patch = tmp_path / "patch"
    patch_engine(monkeypatch, patch, "import berunda.engine.environment as e\n"
                                     f"e.REQUIREMENTS_FILE = {str(pins)!r}\n")
    monkeypatch.setattr(engine_process, "_FIRST_RUN_DONE", False)
    params = {"LABELED_IMAGES": [image("scene1_part1")], "LABELS": [label("scene1_part2")],
              "OUTPUT_MODEL": str(tmp_path / "m.pt"), **TINY}
    for run in (1, 2):
        feedback = recording_feedback()
        with pytest.raises(QgsProcessingException, match="does not overlap"):
            processing.run("berunda:train", params, feedback=feedback)
        assert any("tested with 2.3.0" in w for w in feedback.warnings), run
        device_lines = [i for i in feedback.infos if i.startswith("Device: ")]
        summary = [i for i in feedback.infos if i.startswith("Berunda's dependencies: torch ")]
        engine = [i for i in feedback.infos if i.startswith("Berunda's engine: Python")]
        assert (len(device_lines), len(summary), len(engine)) == ((1, 1, 1) if run == 1
                                                                 else (0, 0, 0)), run
        # the error itself is reported once, as the exception (not also as a log line)
        assert not any("does not overlap" in line for line in feedback.infos + feedback.warnings)
    # an incompatible version is an error that says what to do, before anything is computed
    (patch / "sitecustomize.py").write_text("import berunda.engine.environment as e\n"
                                            "e.MINIMUM['rasterio'] = '9.0'\n")
    with pytest.raises(QgsProcessingException) as err:
        processing.run("berunda:train", params, feedback=recording_feedback())
    assert "rasterio 1.4.3 is too old" in str(err.value) and "Install dependencies" in str(err.value)
    assert "does not overlap" not in str(err.value)


def test_the_package_folder_comes_first_for_the_engine_and_never_enters_qgis(tmp_path):
    """QGIS's Python never gets the package folder on its path; the engine process gets it
    first, so what pip put there wins over QGIS's own older copies (here: a 'six' that
    shadows Debian's)."""
    folder = tmp_path / "pkgs"
    folder.mkdir()
    (folder / "six.py").write_text("BERUNDA_COPY = True\n")
    script = f"""
import sys, json, subprocess
sys.path.insert(0, {str(PLUGINS)!r})
from qgis.core import QgsApplication
app = QgsApplication([], False); app.initQgis()
import berunda
plugin = berunda.classFactory(None)
plugin.initProcessing()
from berunda.berunda_plugin import dependencies, engine_process
env = engine_process.engine_environment()
probe = subprocess.run([dependencies.engine_python(), '-c',
                        'import six, json; print(json.dumps([six.__file__, hasattr(six, "BERUNDA_COPY")]))'],
                       env=env, capture_output=True, text=True)
print(json.dumps({{'on_qgis_path': {str(folder)!r} in sys.path,
                   'engine_path': env['PYTHONPATH'].split(':'),
                   'engine_six': json.loads(probe.stdout),
                   'heavy': [m for m in ('torch', 'segmentation_models_pytorch', 'rasterio') if m in sys.modules]}}))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("BERUNDA_PYTHON", "PYTHONPATH")}
    out = subprocess.run(["/usr/bin/python3", "-c", script], capture_output=True, text=True,
                         timeout=120, env={**env, "BERUNDA_PACKAGES": str(folder),
                                           "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["on_qgis_path"] is False and result["heavy"] == []
    assert result["engine_path"][:2] == [str(folder), str(PLUGINS)]
    assert result["engine_six"] == [str(folder / "six.py"), True]


def test_default_package_folder_is_in_the_qgis_profile(qgis_app, monkeypatch):
    from qgis.core import QgsApplication

    from berunda.berunda_plugin import dependencies as deps

    monkeypatch.delenv("BERUNDA_PACKAGES", raising=False)
    assert deps.package_folder() == os.path.join(QgsApplication.qgisSettingsDirPath(), "python",
                                                  "berunda-packages")


# --- berunda:install_dependencies -------------------------------------------------------------

def test_torch_build_choice():
    from berunda.berunda_plugin import installer

    assert installer.resolve_torch_build("auto", nvidia_smi_path=None) == "cpu"
    assert installer.resolve_torch_build("auto", nvidia_smi_path="/usr/bin/nvidia-smi") == "cuda"
    assert installer.resolve_torch_build("cpu", nvidia_smi_path="/usr/bin/nvidia-smi") == "cpu"
    assert installer.resolve_torch_build("cuda", nvidia_smi_path=None) == "cuda"
    assert installer.resolve_torch_build("auto") == ("cuda" if shutil.which("nvidia-smi") else "cpu")
    with pytest.raises(installer.InstallError, match="TORCH_BUILD"):
        installer.resolve_torch_build("rocm")
    req = str(REPO / "requirements" / "requirements.txt")
    cpu_index = ["--extra-index-url", installer.TORCH_CPU_INDEX]
    assert installer.torch_index_args("cpu", req, "linux") == cpu_index
    assert installer.torch_index_args("cpu", req, "win32") == cpu_index
    assert installer.torch_index_args("cpu", req, "darwin") == []
    assert installer.torch_index_args("cuda", req, "linux") == []      # PyPI's Linux torch has CUDA
    assert installer.torch_index_args("cuda", req, "win32")[0] == "--extra-index-url"


def test_installer_declares_its_parameters(qgis_app):
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition

    from berunda.berunda_plugin import dependencies as deps

    alg = QgsApplication.processingRegistry().algorithmById("berunda:install_dependencies")
    enum = alg.parameterDefinition("TORCH_BUILD")
    assert enum.usesStaticStrings() and enum.options() == ["auto", "cpu", "cuda"]
    assert enum.defaultValue() == "auto"
    assert alg.parameterDefinition("TARGET_FOLDER").defaultValue() == deps.package_folder()
    assert alg.parameterDefinition("REQUIREMENTS").defaultValue() == deps.REQUIREMENTS_FILE
    for name in ("TARGET_FOLDER", "REQUIREMENTS", "TORCH_BUILD"):
        assert alg.parameterDefinition(name).flags() & QgsProcessingParameterDefinition.Flag.FlagAdvanced
        assert name in alg.shortHelpString()
    wheels = alg.parameterDefinition("WHEELHOUSE")   # offline installs: in plain sight
    assert wheels.flags() & QgsProcessingParameterDefinition.Flag.FlagOptional
    assert not wheels.flags() & QgsProcessingParameterDefinition.Flag.FlagAdvanced
    assert "WHEELHOUSE" in alg.shortHelpString() and "numpy 2 on 3.40" in alg.shortHelpString()
    assert {o.name() for o in alg.outputDefinitions()} == {"TARGET_FOLDER", "LOG"}
    assert alg.svgIconPath().endswith("icons/install_dependencies.svg")


def _venv_site():
    return next(Path(p) for p in sys.path if p.startswith(str(REPO / ".venv")) and p.endswith("site-packages"))


def _fingerprint():
    """What must not change: numpy's version and files, the venv's package list, affine in the venv."""
    numpy_dist = metadata.distribution("numpy")
    site = _venv_site()
    return {
        "numpy": metadata.version("numpy"),
        "numpy_files": os.stat(numpy_dist.locate_file("numpy/__init__.py")).st_mtime_ns,
        "venv": sorted(os.listdir(site)),
        "venv_affine": os.stat(site / "affine" / "__init__.py").st_mtime_ns,
    }


def test_installer_installs_into_a_throwaway_folder(qgis_app, tmp_path):
    import processing

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("affine==2.4.0\n")
    target = tmp_path / "target"
    before = _fingerprint()
    feedback = recording_feedback()
    results = processing.run("berunda:install_dependencies", {
        "TARGET_FOLDER": str(target), "REQUIREMENTS": str(requirements), "TORCH_BUILD": "cpu"},
        feedback=feedback)
    assert results["TARGET_FOLDER"] == str(target)
    assert (target / "affine" / "__init__.py").is_file()
    assert list(target.glob("affine-2.4.0.dist-info"))
    assert not (target / "numpy").exists()
    # the pip log streamed to the feedback, and is kept in LOG
    assert any("Successfully installed affine-2.4.0" in line for line in feedback.console)
    log = Path(results["LOG"]).read_text()
    assert "Successfully installed affine-2.4.0" in log
    # the command: QGIS's Python, --target, both constraint files; no torch index for affine
    command = next(line for line in log.splitlines() if line.startswith("# command: "))
    assert f"--target {target}" in command and f"-r {requirements}" in command
    assert "-m pip install" in command and "--extra-index-url" not in command
    constraint_files = [Path(p) for p in command.split(" -c ")[1:]]
    assert len(constraint_files) == 2 and all(p.is_file() for p in constraint_files)
    constraints = "\n".join(p.read_text() for p in constraint_files)
    assert "numpy<" not in constraints   # no bound of our own: numpy follows QGIS
    assert f"numpy=={metadata.version('numpy')}" in constraints
    assert f"GDAL=={metadata.version('GDAL')}" in constraints
    # nothing outside the target changed
    assert _fingerprint() == before


def test_installer_refuses_to_change_qgis_numpy(qgis_app, tmp_path):
    """A requirement for another numpy than QGIS's meets the numpy==<QGIS's> constraint: pip
    fails and the message says what to do."""
    import processing
    from qgis.core import QgsProcessingException

    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"numpy!={metadata.version('numpy')}\n")
    target = tmp_path / "target"
    before = _fingerprint()
    with pytest.raises(QgsProcessingException) as err:
        processing.run("berunda:install_dependencies", {
            "TARGET_FOLDER": str(target), "REQUIREMENTS": str(requirements)}, feedback=recording_feedback())
    message = str(err.value)
    assert "pip failed" in message and "pip install" in message
    assert f"numpy=={metadata.version('numpy')}" in message   # pip's words: the pin stopped it
    assert "The whole pip log: " in message
    assert not (target / "numpy").exists()
    assert _fingerprint() == before


def test_installer_bad_parameters_name_the_parameter(qgis_app, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="REQUIREMENTS: .*does not exist"):
        processing.run("berunda:install_dependencies", {
            "TARGET_FOLDER": str(tmp_path / "t"), "REQUIREMENTS": str(tmp_path / "nope.txt")})
    requirements = tmp_path / "r.txt"
    requirements.write_text("affine==2.4.0\n")
    with pytest.raises(QgsProcessingException, match="TARGET_FOLDER .*QGIS runs with"):
        processing.run("berunda:install_dependencies", {
            "TARGET_FOLDER": str(_venv_site()), "REQUIREMENTS": str(requirements)})


def test_cancelling_kills_pip(qgis_app, tmp_path):
    from berunda.berunda_plugin import installer

    # the runner: a process that would run for a minute is killed at once, with its children
    pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; "
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(pid_file)!r}, 'w').write(str(c.pid)); print('started', flush=True); time.sleep(60)")
    lines = []
    start = time.monotonic()
    with pytest.raises(installer.Cancelled):
        installer.run_streaming([sys.executable, "-c", script], str(tmp_path / "log.txt"),
                                lines.append, lambda: bool(lines))
    assert time.monotonic() - start < 20
    child = int(pid_file.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    assert "cancelled" in (tmp_path / "log.txt").read_text()

    # the algorithm: a cancelled feedback stops pip before it installs anything
    import processing
    from qgis.core import QgsProcessingException

    requirements = tmp_path / "r.txt"
    requirements.write_text("affine==2.4.0\n")
    feedback = recording_feedback()
    feedback.cancel()
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run("berunda:install_dependencies", {
            "TARGET_FOLDER": str(tmp_path / "t"), "REQUIREMENTS": str(requirements)}, feedback=feedback)
    assert not (tmp_path / "t" / "affine").exists()


# --- berunda:diagnostics ----------------------------------------------------------------------

def test_diagnostics_reports_versions_device_and_memory(qgis_app, tmp_path):
    import processing
    from qgis.core import Qgis

    out = tmp_path / "diagnostics.html"
    results = processing.run("berunda:diagnostics", {"OUTPUT_REPORT": str(out)})
    report = results["REPORT"]
    assert report.splitlines()[2].startswith("Ready")
    assert re.search(rf"^  numpy +{re.escape(metadata.version('numpy'))}$", report, re.M)
    assert re.search(rf"^  torch +{re.escape(metadata.version('torch'))} ", report, re.M)
    for needle in (Qgis.QGIS_VERSION, "segmentation-models-pytorch", "rasterio", "GDAL Python bindings",
                   "torch CUDA build", "CUDA usable", "CPU cores", "Memory", "Package folder",
                   "Python interpreter"):
        assert needle in report, needle
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html and "torch" in html
    text = processing.run("berunda:diagnostics", {"OUTPUT_REPORT": str(tmp_path / "d.txt")})
    assert text["OUTPUT_REPORT"] == str(tmp_path / "d.txt")
    assert (tmp_path / "d.txt").read_text().startswith("Berunda diagnostics")
    assert processing.run("berunda:diagnostics", {})["REPORT"]


# --- make package, and installing the zip ------------------------------------------------------

def test_make_package_builds_an_installable_zip(tmp_path):
    out = subprocess.run(["make", "-s", "package"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    meta = configparser.ConfigParser()
    meta.read(REPO / "metadata.txt")
    archive = REPO / "dist" / f"berunda-{meta['general']['version']}.zip"
    assert archive.is_file()
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        zipped.extractall(tmp_path / "plugins")
    assert all(n.startswith("berunda/") for n in names)
    for needed in ("berunda/metadata.txt", "berunda/__init__.py", "berunda/berunda_plugin/plugin.py",
                   "berunda/algorithms/install_dependencies.py", "berunda/engine/trainer.py",
                   "berunda/models/network.py", "berunda/resources/icon.svg",
                   "berunda/resources/icons/train.svg", "berunda/requirements/requirements.txt",
                   "berunda/requirements/constraints.txt", "berunda/README.md",
                   "berunda/resources/models/berunda_train_classify_evaluate.model3"):
        assert needed in names, needed
    for name in names:
        parts = name.split("/")
        assert not {"tests", ".venv", ".build", ".git", "__pycache__", "scripts", "bench", "dist"} & set(parts), name
        assert not name.endswith((".pyc", ".pyo")), name

    # a fresh user: own HOME (fresh profile), the zip's folder on QGIS_PLUGINPATH, no torch
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home, QGIS_PLUGINPATH=str(tmp_path / "plugins"))

    def qgis_process(*args):
        return subprocess.run([QGIS_PROCESS_BIN, *args], env=env, capture_output=True, text=True,
                              timeout=120)

    enabled = qgis_process("plugins", "enable", "berunda")
    assert enabled.returncode == 0, enabled.stderr + enabled.stdout
    listed = qgis_process("list")
    assert listed.returncode == 0
    for alg in ("berunda:train", "berunda:classify", "berunda:evaluate", "berunda:compare",
                "berunda:install_dependencies", "berunda:diagnostics"):
        assert alg in listed.stdout, alg
    diag = qgis_process("--json", "run", "berunda:diagnostics")
    assert diag.returncode == 0, diag.stderr
    report = json.loads(diag.stdout)["results"]["REPORT"]
    assert re.search(rf"^  Plugin folder +{re.escape(str(tmp_path / 'plugins' / 'berunda'))}$", report, re.M)
    assert "berunda-packages (not created yet)" in report
    assert re.search(r"^  Python interpreter +/usr/bin/python3", report, re.M)   # QGIS's, not PATH's
    if not system_python_has("torch"):
        # diagnostics works without torch and says so; the algorithms say how to install it
        assert "Not ready: torch: missing" in report
        assert "Device: unknown — torch is missing" in report
        train = qgis_process("--json", "run", "berunda:train", "--",
                             f"LABELED_IMAGES={image('scene1_part1')}",
                             f"LABELS={label('scene1_part1')}", f"OUTPUT_MODEL={tmp_path / 'm.pt'}")
        assert train.returncode != 0
        assert "berunda:install_dependencies" in train.stderr + train.stdout
        assert "Traceback" not in train.stderr


# --- the modeler example ----------------------------------------------------------------------

def test_model_file_is_what_make_model_builds(qgis_app, tmp_path):
    from qgis.core import QgsProcessingModelAlgorithm

    rebuilt = tmp_path / "rebuilt.model3"
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "make_model.py"), "--out", str(rebuilt)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr

    assert rebuilt.read_bytes() == MODEL3.read_bytes(), (
        "resources/models/berunda_train_classify_evaluate.model3 is out of date with the "
        "algorithms' parameters: run `make model`")

    def describe(path):
        model = QgsProcessingModelAlgorithm()
        assert model.fromFile(str(path))
        return (sorted(p.name() for p in model.parameterDefinitions()),
                sorted(model.childAlgorithms().keys()),
                {k: c.algorithmId() for k, c in model.childAlgorithms().items()})

    params, children, ids = describe(MODEL3)
    assert children == ["classify", "evaluate", "train"]
    assert ids == {"train": "berunda:train", "classify": "berunda:classify",
                   "evaluate": "berunda:evaluate"}
    for name in ("labeled_image", "label_raster", "unlabeled_image", "image_to_classify",
                 "ground_truth", "epochs", "train:model", "classify:classified", "evaluate:report"):
        assert name in params, name
    model = QgsProcessingModelAlgorithm()
    model.fromFile(str(MODEL3))
    ok, errors = model.validate()
    assert ok, errors


def test_provider_exposes_the_example_model_and_an_icon_per_algorithm(qgis_app):
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    listed = registry.algorithmById("berunda:train_classify_evaluate")
    assert listed is not None and listed.group() == "Examples"
    assert listed.displayName() == "Train, classify and evaluate (example model)"
    runnable = registry.createAlgorithmById("berunda:train_classify_evaluate")
    assert runnable.childAlgorithm("train").algorithm() is not None   # children resolved to run
    assert runnable.validate()[0]
    icons = {}
    for alg in registry.providerById("berunda").algorithms():
        path = Path(alg.svgIconPath())
        assert path.is_file() and path.resolve().parent == REPO / "resources" / "icons", alg.id()
        assert not alg.icon().isNull()
        icons[alg.id()] = path.name
    assert len(set(icons.values())) == len(icons) == 8, icons


@pytest.mark.slow
def test_modeler_example_runs_headless(tmp_path):
    """train -> classify -> evaluate on real Dubai tiles, through scripts/qgis_process.  The
    image to classify is a 160 px crop of a Dubai tile (and its labels), to keep CPU time short."""
    from osgeo import gdal

    crop = {}
    for kind, source in (("image", image("scene2_part1")), ("labels", label("scene2_part1"))):
        crop[kind] = str(tmp_path / f"crop_{kind}.tif")
        assert gdal.Translate(crop[kind], source, srcWin=[100, 100, 160, 160]) is not None
    args = {
        "labeled_image": image("scene1_part1"), "label_raster": label("scene1_part1"),
        "unlabeled_image": image("scene3_part1"),
        "image_to_classify": crop["image"], "ground_truth": crop["labels"],
        "epochs": 1, "encoder": TINY["ENCODER"], "tile_size": TINY["TILE_SIZE"],
        "batch_size": TINY["BATCH_SIZE"], "samples_per_epoch": TINY["SAMPLES_PER_EPOCH"],
        "train:model": tmp_path / "model.pt", "classify:classified": tmp_path / "classes.tif",
        "evaluate:report": tmp_path / "report.html",
    }
    proc = subprocess.run([str(REPO / "scripts" / "qgis_process"), "--json", "run", str(MODEL3), "--",
                           *[f"{k}={v}" for k, v in args.items()]],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    results = json.loads(proc.stdout)["results"]
    assert Path(results["train:model"]).stat().st_size > 0
    assert (tmp_path / "classes.tif").is_file() and (tmp_path / "classes.qml").is_file()
    report = (tmp_path / "report.html").read_text()
    assert "building" in report and "water" in report


# --- the real GUI under Xvfb -----------------------------------------------------------------

def xvfb_run(args, env, timeout=120):
    if not shutil.which("xvfb-run"):
        pytest.fail("xvfb-run is missing: scripts/setup.sh installs the xvfb package")
    env = {**env, "QT_QPA_PLATFORM": "xcb"}
    env.pop("DISPLAY", None)
    return subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_real_screenshot(path, min_colours=20):
    from qgis.PyQt.QtGui import QImage

    shot = QImage(str(path))
    assert not shot.isNull() and shot.width() >= 400 and shot.height() >= 300, path
    colours = {shot.pixel(x, y) for y in range(0, shot.height(), 5) for x in range(0, shot.width(), 5)}
    assert len(colours) >= min_colours, f"{path} is nearly a single colour"


def test_train_dialog_under_xvfb(qgis_app, tmp_path):
    """Processing's own dialog for berunda:train in a GUI QgsApplication on a real X server:
    advanced parameters in the collapsed "Advanced Parameters" group."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    prefix = ARTIFACTS / "train_dialog"
    for stale in ARTIFACTS.glob("train_dialog*.png"):
        stale.unlink()
    home = tmp_path / "home"   # fresh settings: the group's collapsed state is remembered
    home.mkdir()
    out = xvfb_run([sys.executable, str(REPO / "tests" / "gui_probe.py"), "berunda:train", str(prefix)],
                   {**os.environ, "HOME": str(home)})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["platform"] == "xcb" and result["title"].startswith("Train segmentation model")
    assert_real_screenshot(f"{prefix}.png")
    assert_real_screenshot(f"{prefix}_advanced.png")
    assert result["advanced_groups"] == 1 and result["advanced_collapsible"]
    assert result["advanced_collapsed_initially"] is True
    params = result["parameters"]
    advanced = {n for n, p in params.items() if p["advanced_flag"]}
    assert {"ENCODER", "TILE_SIZE", "BATCH_SIZE", "SAMPLES_PER_EPOCH", "DEVICE", "SEED",
            "RESUME"} <= advanced
    for name, place in params.items():
        assert place["in_advanced_group"] == place["advanced_flag"], name
        # collapsed: only the basic parameters show; expanded: all
        assert place["visible"] == (not place["advanced_flag"]), name
        assert result["visible_after_expanding"][name], name


def test_qgis_desktop_menu_and_missing_dependency_bar(tmp_path):
    """The real QGIS desktop with the plugin enabled in a fresh profile, without torch on its
    path: Plugins > Berunda has the set-up entries, a message bar offers the installer, and
    "Install dependencies…" opens Processing's dialog.  No network (own namespace)."""
    if shutil.which("qgis") is None:
        pytest.fail("the qgis desktop binary is missing (apt package qgis)")
    profiles = tmp_path / "profiles"
    (profiles / "profiles" / "default" / "QGIS").mkdir(parents=True)
    (profiles / "profiles" / "default" / "QGIS" / "QGIS3.ini").write_text(
        "[PythonPlugins]\nberunda=true\n")
    home = tmp_path / "home"
    home.mkdir()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    result_file = tmp_path / "probe.json"
    no_network = ["unshare", "-n"] if subprocess.run(["unshare", "-n", "true"]).returncode == 0 else []
    env = clean_env(home, QGIS_PLUGINPATH=str(PLUGINS), BERUNDA_PROBE_OUT=str(result_file),
                    BERUNDA_PROBE_SHOTS=str(ARTIFACTS / "desktop"))
    out = xvfb_run([*no_network, "qgis", "--profiles-path", str(profiles), "--noversioncheck",
                    "--nologo", "--code", str(REPO / "tests" / "desktop_probe.py")], env)
    assert result_file.is_file(), out.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert result["errors"] == []
    assert result["plugin_loaded"]
    assert result["menu"] == {"Install dependencies…": "berunda_install_dependencies",
                              "Diagnostics…": "berunda_diagnostics"}
    if not system_python_has("torch"):
        assert any("torch" in text for text in result["message_bar"])
    assert result["dialog_algorithm"] == "berunda:install_dependencies"
    assert result["dialog_class"] == "AlgorithmDialog"
    assert_real_screenshot(result["main_screenshot"])
    assert_real_screenshot(result["dialog_screenshot"])
    assert result["unloaded"] and not result["menu_after_unload"]
    assert not result["provider_after_unload"] and result["message_bar_after_unload"] == 0
