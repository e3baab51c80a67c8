"""A new desktop user on Linux, for real: a fresh QGIS profile in a temporary HOME, QGIS's own
Python (no venv, PYTHONPATH unset), berunda:install_dependencies with its default target
(torch from this machine's local wheels, the way scripts/setup.sh gets it), then

- berunda:train, berunda:classify and berunda:evaluate through qgis_process;
- the real QGIS desktop under Xvfb (Mesa OpenGL, where importing torch in QGIS's process
  aborts it): train and classify through Processing, QGIS stays alive, the classified layer
  is in the project with its paletted style, a screenshot of the map and legend is saved;
- the same desktop run with the packaged zip installed into that profile.

One installation serves the whole module (it is the slow part: pip copies torch's ~5 GB)."""
import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from helpers import TINY, image, label
from test_desktop import assert_real_screenshot, clean_env, system_python_has, xvfb_run

# one worker runs the desktop files (xvfb-run -a picks displays racily; dist/ is shared)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("desktop")]

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / ".build" / "plugins"
ARTIFACTS = REPO / "tests" / "artifacts"
QGIS_PROCESS_BIN = shutil.which("qgis_process.bin") or "qgis_process.bin"
PROFILE = Path(".local/share/QGIS/QGIS3/profiles/default")


def qgis_process(env, *args, timeout=900):
    proc = subprocess.run([QGIS_PROCESS_BIN, "--json", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    try:
        payload = json.loads(proc.stdout)
    except ValueError:
        payload = None
    return proc.returncode, payload, proc.stderr[-4000:] + proc.stdout[-2000:]


# The current-QGIS CI stage (.ci/current_qgis.sh) sets these: the user's HOME (kept, so the
# next tests there use the packages installed here) and a wheelhouse to install from offline.
STAGE_HOME = os.environ.get("BERUNDA_TEST_HOME")
STAGE_WHEELHOUSE = os.environ.get("BERUNDA_TEST_WHEELHOUSE")


@pytest.fixture(scope="module")
def fresh_user(tmp_path_factory):
    home = Path(STAGE_HOME) if STAGE_HOME else tmp_path_factory.mktemp("home")
    assert not (home / PROFILE).exists(), f"{home} must be a fresh HOME"
    # This machine's pip configuration (where the local torch wheels are) is the user's own.
    for folder in (Path.home() / ".config" / "pip", Path.home() / ".pip"):
        if folder.is_dir() and not STAGE_HOME:
            shutil.copytree(folder, home / folder.relative_to(Path.home()))
    env = clean_env(home, QGIS_PLUGINPATH=str(PLUGINS))
    enabled = subprocess.run([QGIS_PROCESS_BIN, "plugins", "enable", "berunda"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert enabled.returncode == 0, enabled.stderr
    rc, out, log = qgis_process(env, "run", "berunda:diagnostics")
    assert rc == 0, log
    if not system_python_has("torch"):   # nothing installed yet: not ready, and it says why
        assert out["results"]["REPORT"].splitlines()[2].startswith("Not ready: torch"), log
    source = ([f"WHEELHOUSE={STAGE_WHEELHOUSE}", "WITH_ONNX=true"] if STAGE_WHEELHOUSE else [])
    rc, out, log = qgis_process(env, "run", "berunda:install_dependencies", "--",
                                "TORCH_BUILD=cuda", *source, timeout=1800)
    assert rc == 0, log
    target = home / PROFILE / "python" / "berunda-packages"
    assert out["results"]["TARGET_FOLDER"] == str(target)
    assert list(target.glob("torch-2.14.1.dist-info"))
    assert any("engine starts and finds all its packages" in line for line in out["log"]["info"]), \
        out["log"]
    return home, env


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    from osgeo import gdal

    folder = tmp_path_factory.mktemp("crops")
    out = {}
    for kind, source in (("image", image("scene2_part1")), ("label", label("scene2_part1"))):
        out[kind] = str(folder / f"{kind}.tif")
        assert gdal.Translate(out[kind], source, srcWin=[0, 0, 192, 192]) is not None
    return out


def train_params(model):
    return dict(TINY, LABELED_IMAGES=image("scene1_part1"), LABELS=label("scene1_part1"),
                UNLABELED_IMAGES=image("scene3_part1"), AUX_TASK="kmeans", OUTPUT_MODEL=str(model))


def test_diagnostics_is_ready_with_qgis_own_numpy(fresh_user):
    """After the install: 'Ready', and the engine's numpy is the one QGIS runs with (numpy 1
    on QGIS 3.22, numpy 2 on 3.40+), loaded from QGIS's own folders or the package folder."""
    from importlib import metadata

    home, env = fresh_user
    rc, out, log = qgis_process(env, "run", "berunda:diagnostics")
    assert rc == 0, log
    report = out["results"]["REPORT"]
    assert report.splitlines()[2].startswith("Ready"), report
    numpy = metadata.version("numpy")   # this is QGIS's Python
    shipped, engine = report.split("Berunda's dependencies (as the engine sees them)")
    assert re.search(rf"^  numpy +{re.escape(numpy)}$", shipped, re.M), report
    assert re.search(rf"^  numpy +{re.escape(numpy)} ", engine, re.M), report


def test_train_classify_evaluate_with_qgis_own_python(fresh_user, crops, tmp_path):
    home, env = fresh_user
    assert "BERUNDA_PYTHON" not in env and "PYTHONPATH" not in env
    rc, out, log = qgis_process(env, "run", "berunda:train", "--",
                                *[f"{k}={v}" for k, v in train_params(tmp_path / "m.pt").items()])
    assert rc == 0, log
    infos = out["log"]["info"]
    engine = next(line for line in infos if line.startswith("Berunda's engine: Python"))
    assert "/usr/bin/python3" in engine   # QGIS's own interpreter, not a venv
    assert any(line.startswith("Berunda's dependencies: torch 2.14.1") for line in infos)
    rc, out, log = qgis_process(env, "run", "berunda:classify", "--", f"INPUT={crops['image']}",
                                f"MODEL={tmp_path / 'm.pt'}", f"OUTPUT={tmp_path / 'c.tif'}")
    assert rc == 0, log
    assert (tmp_path / "c.tif").is_file() and (tmp_path / "c.qml").is_file()
    rc, out, log = qgis_process(env, "run", "berunda:evaluate", "--",
                                f"PREDICTION={tmp_path / 'c.tif'}", f"GROUND_TRUTH={crops['label']}",
                                f"OUTPUT_REPORT={tmp_path / 'r.html'}")
    assert rc == 0, log
    assert 0 <= out["results"]["OVERALL_ACCURACY"] <= 100


def desktop_run(home, env, crops, tmp_path, shot_name):
    result_file = tmp_path / "probe.json"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{shot_name}.png"
    if shot.exists():
        shot.unlink()
    inputs = {"train": train_params(tmp_path / "m.pt"),
              "classify": {"INPUT": crops["image"], "OUTPUT": str(tmp_path / "classified.tif")}}
    probe_env = dict(env, BERUNDA_PROBE_OUT=str(result_file), BERUNDA_PROBE_IN=json.dumps(inputs),
                     BERUNDA_PROBE_SHOT=str(shot))
    out = xvfb_run(["qgis", "--noversioncheck", "--nologo", "--code",
                    str(REPO / "tests" / "desktop_run_probe.py")], probe_env, timeout=900)
    assert out.returncode == 0, f"QGIS ended with {out.returncode}: {out.stderr[-3000:]}"
    assert result_file.is_file(), out.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert result["errors"] == [], result["errors"]
    assert result["plugin_loaded"] and result["steps"] == ["train", "classify"]
    assert result["alive"] and result["heavy_in_qgis"] == []
    assert result["renderer"] == "paletted"
    assert [c[1] for c in result["classes"]] == ["building", "land", "road", "vegetation", "water"]
    assert_real_screenshot(shot)
    return result


def test_desktop_trains_and_classifies_and_stays_alive(fresh_user, crops, tmp_path):
    home, env = fresh_user
    desktop_run(home, env, crops, tmp_path, "desktop_classified")


def test_desktop_with_the_packaged_zip(fresh_user, crops, tmp_path):
    home, env = fresh_user
    built = subprocess.run(["make", "-s", "package"], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert built.returncode == 0, built.stderr
    archive = next((REPO / "dist").glob("berunda-*.zip"))
    plugins = home / PROFILE / "python" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zipped:   # what "Install from ZIP" does
        zipped.extractall(plugins)
    try:
        zip_env = {k: v for k, v in env.items() if k != "QGIS_PLUGINPATH"}
        result = desktop_run(home, zip_env, crops, tmp_path, "desktop_classified_zip")
        assert result["plugin_file"] == str(plugins / "berunda" / "__init__.py")
        assert os.path.realpath(result["model"]) == os.path.realpath(tmp_path / "m.pt")
    finally:
        shutil.rmtree(plugins / "berunda", ignore_errors=True)
