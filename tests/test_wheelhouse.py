"""Installing without internet: berunda:install_dependencies with a WHEELHOUSE (a folder of
wheels) and the network unreachable, the quick refusal without one, and the pip download
command it prints for this machine.  "No network" is a proxy on a closed loopback port and
no pip configuration (so this machine's local wheel folders do not count)."""
import base64
import hashlib
import os
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from helpers import recording_feedback

REPO = Path(__file__).resolve().parents[1]
DEAD_PROXY = "http://127.0.0.1:9"


@pytest.fixture
def offline(monkeypatch):
    """pip (started by the algorithm with this process's environment) can reach nothing."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, DEAD_PROXY)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("PIP_") and name not in ("PIP_CERT",):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)   # pip: no configuration files at all


def make_wheel(folder: Path, name="berunda_probe", version="1.0") -> Path:
    """A real, minimal pure-Python wheel (PEP 427), written by hand: no network, no build."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {f"{name}.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: berunda-tests\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def test_installs_from_a_wheelhouse_with_the_network_unreachable(qgis_app, tmp_path, offline):
    import processing

    wheels = tmp_path / "wheelhouse"
    make_wheel(wheels)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("berunda-probe==1.0\n")
    target = tmp_path / "target"
    feedback = recording_feedback()
    results = processing.run("berunda:install_dependencies", {
        "TARGET_FOLDER": str(target), "REQUIREMENTS": str(requirements),
        "WHEELHOUSE": str(wheels), "TORCH_BUILD": "cpu"}, feedback=feedback)
    assert (target / "berunda_probe.py").read_text() == "VALUE = 42\n"
    assert list(target.glob("berunda_probe-1.0.dist-info"))
    assert any(f"wheelhouse {wheels} alone" in line for line in feedback.infos)
    command = next(line for line in Path(results["LOG"]).read_text().splitlines()
                   if line.startswith("# command: "))
    assert f"--no-index --find-links {wheels}" in command
    assert "--extra-index-url" not in command   # TORCH_BUILD=cpu adds no index to a wheelhouse


def test_without_network_or_wheelhouse_it_fails_within_seconds_naming_wheelhouse(
        qgis_app, tmp_path, offline):
    import processing
    from qgis.core import QgsProcessingException

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("affine==2.4.0\n")
    target = tmp_path / "target"
    start = time.monotonic()
    with pytest.raises(QgsProcessingException) as err:
        processing.run("berunda:install_dependencies", {
            "TARGET_FOLDER": str(target), "REQUIREMENTS": str(requirements)},
            feedback=recording_feedback())
    took = time.monotonic() - start
    message = str(err.value)
    assert took < 15, f"took {took:.1f} s"
    assert "cannot reach its package index" in message
    assert "WHEELHOUSE" in message and "Installing without internet" in message
    # the way out: the download command for this machine's Python, platform and numpy
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"pip download --only-binary=:all: --python-version {version}" in message
    assert f"numpy=={metadata.version('numpy')}" in message and "affine==2.4.0" in message
    assert "GDAL==" not in message   # QGIS's GDAL bindings are not a wheel: never downloaded
    assert not any(target.rglob("*")), "nothing may be written before pip can run"


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_an_unusable_wheelhouse_is_refused_naming_it(qgis_app, tmp_path, case):
    import processing
    from qgis.core import QgsProcessingException

    wheels = tmp_path / "wheels"
    if case == "empty":
        wheels.mkdir()
        (wheels / "notes.txt").write_text("no wheels here")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("affine==2.4.0\n")
    with pytest.raises(QgsProcessingException, match=r"WHEELHOUSE .*(not a folder|holds no wheels)"):
        processing.run("berunda:install_dependencies", {
            "TARGET_FOLDER": str(tmp_path / "target"), "REQUIREMENTS": str(requirements),
            "WHEELHOUSE": str(wheels)})
    assert not (tmp_path / "target").exists()


def test_download_command_targets_the_machine_that_will_install():
    from berunda.berunda_plugin import installer, wheelhouse

    assert wheelhouse.target_platforms("linux", "x86_64", "2.41")[:2] == [
        "manylinux_2_41_x86_64", "manylinux_2_40_x86_64"]
    assert wheelhouse.target_platforms("linux", "x86_64", "2.41")[-2:] == [
        "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    assert wheelhouse.target_platforms("win32", "AMD64") == ["win_amd64"]
    req = str(REPO / "requirements" / "requirements.txt")
    cmd = wheelhouse.download_command([req], [str(REPO / "requirements" / "constraints.txt")],
                                      {"numpy": "2.2.4", "GDAL": "3.10.3"}, "cpu",
                                      python_version="3.13", platforms=["manylinux_2_28_x86_64"])
    assert cmd[:8] == ["python3", "-m", "pip", "download", "--only-binary=:all:",
                       "--python-version", "3.13", "--platform"]
    assert ["--extra-index-url", installer.TORCH_CPU_INDEX] == cmd[9:11]
    assert {"torch==2.14.1", "rasterio==1.4.3", "affine<3", "numpy==2.2.4"} <= set(cmd)
    assert not [c for c in cmd if c.startswith("GDAL")]
