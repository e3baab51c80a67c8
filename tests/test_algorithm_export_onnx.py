"""berunda:export_onnx through Processing (a real QgsApplication) and headless qgis_process,
on a tiny model trained here on Dubai imagery; the installer's WITH_ONNX option."""
import glob
import json
import os

import numpy as np
import pytest

from conftest import dubai_pair
from helpers import as_cli, patch_engine, qgis_process, recording_feedback

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dubai_model(tmp_path_factory):
    """A tiny kmeans model trained on the Dubai scene 1 (RGB UInt8, 0.5 m pixels)."""
    from berunda.engine.config import TrainingConfig
    from berunda.engine.trainer import train

    folder = tmp_path_factory.mktemp("dubai_model")
    img, lab = dubai_pair("scene1_part1")
    model = str(folder / "dubai.pt")
    train(TrainingConfig([img], [lab], [dubai_pair("scene2_part1")[0]], aux_task="kmeans",
                         encoder="resnet18", encoder_weights="none", tile_size=64, batch_size=2, samples_per_epoch=4,
                         epochs=1, device="cpu"), model)
    return model


def metadata(path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}


def test_processing_exports_a_model_deepness_can_read(qgis_app, dubai_model, tmp_path):
    import processing

    out = tmp_path / "dubai.onnx"
    fb = recording_feedback()
    result = processing.run("berunda:export_onnx", {"MODEL": dubai_model, "OUTPUT": str(out),
                                                    "TILE_SIZE": 96}, feedback=fb)
    assert result["OUTPUT"] == str(out) and out.is_file()
    session, meta = metadata(out)
    assert session.get_inputs()[0].shape == ["batch", 3, 96, 96]
    assert meta["model_type"] == "Segmentor" and meta["resolution"] == 50.0
    assert meta["tiles_size"] == 96
    assert meta["class_names"] == {"0": "building", "1": "land", "2": "road", "3": "vegetation",
                                   "4": "water"}
    assert any("Checked with onnxruntime" in line for line in fb.infos)
    assert not fb.warnings   # UInt8 RGB: nothing Deepness cannot feed
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 96, 96)).astype(np.float32) / 255
    probs = session.run(None, {"input": x})[0]
    assert probs.shape == (2, 5, 96, 96) and np.allclose(probs.sum(1), 1, atol=1e-5)


def _refused(params, tmp_path, *fragments):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as err:
        processing.run("berunda:export_onnx", params)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "Traceback" not in message
    assert not glob.glob(os.path.join(str(tmp_path), "*.onnx"))
    assert not glob.glob(os.path.join(str(tmp_path), ".*.partial"))
    return message


def test_processing_refuses_bad_inputs_without_leaving_a_file(qgis_app, dubai_model, tmp_path):
    from berunda.engine.trainer import checkpoint_path_for

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(1).bytes(2048))
    out = str(tmp_path / "m.onnx")
    _refused({"MODEL": str(garbage), "OUTPUT": out}, tmp_path, "garbage.pt",
             "not a readable Berunda model", "berunda:train")
    _refused({"MODEL": checkpoint_path_for(dubai_model), "OUTPUT": out}, tmp_path,
             "training checkpoint", "OUTPUT_MODEL")
    (tmp_path / "a_file").write_text("not a folder")   # a missing folder would be created
    _refused({"MODEL": dubai_model, "OUTPUT": str(tmp_path / "a_file" / "m.onnx")}, tmp_path,
             "cannot be created")
    _refused({"MODEL": dubai_model, "OUTPUT": str(tmp_path / "m.txt")}, tmp_path,
             "must end in .onnx")


def test_processing_says_how_to_install_onnx(qgis_app, dubai_model, tmp_path, monkeypatch):
    # an engine environment without onnx
    patch_engine(monkeypatch, tmp_path.parent / f"{tmp_path.name}_patch",
                 "import sys\nsys.modules['onnx'] = None\n")
    _refused({"MODEL": dubai_model, "OUTPUT": str(tmp_path / "m.onnx")}, tmp_path,
             "needs the Python package onnx", "WITH_ONNX", "pip install onnx==")


def test_installer_with_onnx_adds_the_onnx_requirements(qgis_app, tmp_path):
    """A real pip run that fails at once (a missing wheel) shows the command it ran.  From a
    wheelhouse, so that it needs no network (it also runs in the offline QGIS 3.44 stage)."""
    import processing
    from qgis.core import QgsProcessingException
    from test_wheelhouse import make_wheel

    from berunda.berunda_plugin import dependencies

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("./no-such-package-1.0-py3-none-any.whl\n")
    make_wheel(tmp_path / "wheels")
    alg_params = {"TARGET_FOLDER": str(tmp_path / "t"), "REQUIREMENTS": str(requirements),
                  "TORCH_BUILD": "cpu", "WHEELHOUSE": str(tmp_path / "wheels")}
    for with_onnx in (True, False):
        with pytest.raises(QgsProcessingException) as err:
            processing.run("berunda:install_dependencies", dict(alg_params, WITH_ONNX=with_onnx))
        command = next(line for line in str(err.value).splitlines() if "-m pip install" in line)
        assert (f"-r {dependencies.ONNX_REQUIREMENTS_FILE}" in command) == with_onnx
    assert not list((tmp_path / "t").glob("onnx*"))


def test_qgis_process_exports_a_dubai_model(dubai_model, tmp_path):
    out = tmp_path / "dubai.onnx"
    rc, payload, err = qgis_process("berunda:export_onnx", "--",
                                    *as_cli({"MODEL": dubai_model, "OUTPUT": out}))
    assert rc == 0, err
    assert payload["results"]["OUTPUT"] == str(out)
    session, meta = metadata(out)
    assert session.get_inputs()[0].shape == ["batch", 3, 64, 64]
    assert meta["model_type"] == "Segmentor" and meta["tiles_size"] == 64
    assert meta["resolution"] == 50.0
    assert meta["berunda"]["task"]["id"] == "kmeans"
    assert len(meta["class_names"]) == 5
