"""ONNX export (engine, no QGIS): models trained here on real Dubai crops, exported, run in
onnxruntime fed the way Deepness feeds them (each band's value ÷ 255, float32, NCHW) and
compared with Berunda's own classification (berunda classify, no overlap, same tiles)."""
import glob
import json
import os

import numpy as np
import pytest
import rasterio
import torch

from conftest import dubai_pair
from helpers import read_crop, write_raster

from berunda.engine.config import TrainingConfig
from berunda.engine.errors import (Cancelled, InvalidParameterError, MissingDependencyError,
                                   ModelFileError, OutputError)
from berunda.engine.inference import classify_raster
from berunda.engine.model_file import load_model
from berunda.engine.onnx_check import compare, decided_pixels
from berunda.engine.onnx_export import export_onnx
from berunda.engine.progress import Reporter
from berunda.engine.rasters import valid_mask
from berunda.engine.trainer import checkpoint_path_for, train

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TILE = 64
TEST_SIDE = 128            # the compared raster: 2 × 2 tiles of 64 px


class Log(Reporter):
    def __init__(self, cancel=False):
        self.lines, self.warnings, self.cancel = [], [], cancel

    def info(self, message):
        self.lines.append(message)

    def warning(self, message):
        self.warnings.append(message)

    def cancelled(self):
        return self.cancel


def _as_kind(data, kind):
    """Real RGB values -> the raster of each kind of model (bands, dtype, nodata)."""
    if kind == "rgb_uint8":
        return data, None
    if kind == "4band_uint16":   # 16-bit RGB + a fourth band, nodata 0 in a block
        rgb = data.astype(np.uint16) * 257
        fourth = (65535 - rgb[1] // 2).astype(np.uint16)[None]
        out = np.concatenate([rgb, fourth])
        out[:, 10:30, 40:70] = 0
        return out, 0
    # float32 reflectance with a nodata block (-9999) and NaN pixels
    out = data.astype(np.float32) / 255
    out[:, 5:20, 5:25] = -9999
    out[1, 60:64, 90:100] = np.nan
    return out, -9999.0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """kind -> (model, its ONNX export, the export's result, a test raster) for three tiny
    models: RGB UInt8 (auxiliary task l2: an auxiliary head to leave out), 4-band UInt16
    with nodata (kmeans) and Float32 with nodata and NaN (none)."""
    folder = tmp_path_factory.mktemp("onnx")
    img, lab = dubai_pair("scene1_part1")
    train_rgb, geo, _ = read_crop(img, 0, 560, 160)
    train_label, lgeo, lcmap = read_crop(lab, 0, 560, 160)
    test_rgb, tgeo, _ = read_crop(img, 320, 0, TEST_SIDE)
    label = write_raster(folder / "label.tif", train_label, lgeo, lcmap)
    out = {}
    for kind, task in (("rgb_uint8", "l2"), ("4band_uint16", "kmeans"), ("float32", "none")):
        data, nodata = _as_kind(train_rgb, kind)
        image = write_raster(folder / f"{kind}_train.tif", data, dict(geo, nodata=nodata))
        test, _ = _as_kind(test_rgb, kind)
        test_path = write_raster(folder / f"{kind}_test.tif", test, dict(tgeo, nodata=nodata))
        model = str(folder / f"{kind}.pt")
        config = TrainingConfig([image], [label], aux_task=task, encoder="resnet18", encoder_weights="none",
                                tile_size=TILE, batch_size=2, samples_per_epoch=4, epochs=1,
                                device="cpu")
        train(config, model)
        log = Log()
        result = export_onnx(model, str(folder / f"{kind}.onnx"), reporter=log)
        out[kind] = dict(model=model, onnx=result["output"], result=result, log=log,
                         test=test_path, nodata=nodata)
    return out


def deepness_tiles(path, tile):
    """Cut the raster into tile × tile pieces and scale them as Deepness does: the band values
    in their own type, ÷ 255 to float32, (N, bands, tile, tile)."""
    with rasterio.open(path) as ds:
        data = ds.read()
    tiles, where = [], []
    for r in range(0, data.shape[1], tile):
        for c in range(0, data.shape[2], tile):
            hwc = data[:, r:r + tile, c:c + tile].transpose(1, 2, 0)
            tiles.append(np.float32(hwc * (1. / 255.)).transpose(2, 0, 1))
            where.append((r, c))
    return np.stack(tiles), where, data


def onnx_probabilities(onnx_path, path, tile):
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    tiles, where, data = deepness_tiles(path, tile)
    probs = np.zeros((session.get_outputs()[0].shape[1],) + data.shape[1:], np.float32)
    for start in range(0, len(tiles), 2):    # batches of 2: the batch axis is dynamic
        batch = session.run(None, {"input": tiles[start:start + 2]})[0]
        for p, (r, c) in zip(batch, where[start:start + 2]):
            probs[:, r:r + tile, c:c + tile] = p
    return probs, data


@pytest.mark.parametrize("kind", ["rgb_uint8", "4band_uint16", "float32"])
def test_onnxruntime_fed_like_deepness_matches_berunda_classify(models, kind, tmp_path):
    m = models[kind]
    classes_path, probs_path = str(tmp_path / "classes.tif"), str(tmp_path / "probs.tif")
    result = classify_raster(m["test"], m["model"], classes_path, tile_size=TILE, overlap=0,
                             device="cpu", probabilities_path=probs_path)
    with rasterio.open(probs_path) as ds:
        berunda = ds.read()
    with rasterio.open(classes_path) as ds:
        berunda_classes = ds.read(1)
    probs, data = onnx_probabilities(m["onnx"], m["test"], TILE)
    valid = valid_mask(data, m["nodata"])
    assert 0.5 < valid.mean() < 1 if m["nodata"] is not None else valid.all()
    # the export's own criterion: float32 rounding, not a fixed 1e-4 (issue 32)
    check = compare(probs, berunda, valid, m["result"]["tolerance"], everywhere=False)
    assert check.passed, check.words()
    values = np.asarray(result.classes)
    same = values[probs.argmax(0)][valid] == berunda_classes[valid]
    decided = decided_pixels(berunda, valid, check.tolerance)[valid]
    assert same[decided].mean() >= 0.999, same[decided].mean()
    assert len(np.unique(berunda_classes[valid])) >= 2   # not a trivially constant model


def test_input_and_output_shapes_batch_dynamic_tile_fixed(models):
    for kind, bands in (("rgb_uint8", 3), ("4band_uint16", 4), ("float32", 3)):
        session = ort.InferenceSession(models[kind]["onnx"], providers=["CPUExecutionProvider"])
        (inp,), (out,) = session.get_inputs(), session.get_outputs()
        assert (inp.name, inp.type, inp.shape) == ("input", "tensor(float)", ["batch", bands, TILE, TILE])
        classes = len(load_model(models[kind]["model"]).metadata["classes"]["values"])
        assert (out.name, out.shape) == ("probabilities", ["batch", classes, TILE, TILE])
        result = models[kind]["result"]
        assert result["dynamic_batch"] and not result["dynamic_height_width"]


def test_metadata_is_deepness_format_and_the_berunda_header_round_trips(models):
    m = models["rgb_uint8"]
    session = ort.InferenceSession(m["onnx"], providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    header = load_model(m["model"]).metadata
    names = header["classes"]["names"]
    assert len(names) == 4
    assert meta["model_type"] == "Segmentor"
    assert meta["class_names"] == {str(i): n for i, n in enumerate(names)}   # output channels
    assert meta["resolution"] == 50.0                  # the Dubai rasters: 0.5 m pixels
    assert meta["tiles_size"] == meta["tile_size"] == TILE
    assert meta["tiles_overlap"] == 25 and meta["seg_thresh"] == 0.0
    assert meta["standardization_mean"] == [0.0] * 3 and meta["standardization_std"] == [1.0] * 3
    assert meta["berunda"] == header
    assert meta["berunda"]["classes"]["values"] == [2, 3, 4, 5]
    assert meta["berunda_input"]["scale"] == "raster value / 255"
    assert m["result"]["resolution_cm"] == 50.0
    assert "pixel size stored in the model file" in m["result"]["resolution_source"]
    assert m["result"]["checked"] and m["result"]["max_difference"] <= m["result"]["tolerance"]
    assert 1e-4 <= m["result"]["tolerance"] <= 1e-2 and m["result"]["class_agreement"] >= 0.999
    assert any("same class on" in line and "allowed" in line for line in m["log"].lines)
    assert json.dumps(m["result"])   # plain values only


def test_only_the_inference_path_is_exported(models):
    m = models["rgb_uint8"]
    arch = load_model(m["model"]).metadata["architecture"]
    assert arch["aux_channels"] == 3 and arch["num_classes"] == 4   # l2 reconstructs the bands
    proto = onnx.load(m["onnx"])
    shapes = [tuple(t.dims) for t in proto.graph.initializer]
    assert (4, 16, 3, 3) in shapes          # the supervised head
    assert (3, 16, 3, 3) not in shapes      # the auxiliary head is left out
    assert len(proto.graph.output) == 1


def test_dtype_messages(models):
    assert models["rgb_uint8"]["result"]["deepness_faithful"]
    assert not models["rgb_uint8"]["log"].warnings
    for kind, dtype in (("4band_uint16", "uint16"), ("float32", "float32")):
        m = models[kind]
        assert not m["result"]["deepness_faithful"]
        (warning,) = m["log"].warnings
        assert dtype in warning and "Deepness documents 8-bit input only" in warning


def test_tile_size_override_rounds_to_the_stride(models, tmp_path):
    log = Log()
    result = export_onnx(models["rgb_uint8"]["model"], str(tmp_path / "big.onnx"), tile_size=100,
                         reporter=log)
    assert result["tile_size"] == 128
    assert any("not a multiple of 32" in line for line in log.lines)
    session = ort.InferenceSession(result["output"], providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, 128, 128]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["tiles_size"]) == 128
    assert json.loads(meta["tiles_overlap"]) == 12   # a quarter of the 64-px training tile


def test_without_onnxruntime_it_exports_unchecked_and_says_so(models, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    log = Log()
    result = export_onnx(models["rgb_uint8"]["model"], str(tmp_path / "m.onnx"), reporter=log)
    assert not result["checked"] and result["max_difference"] is None
    assert os.path.isfile(result["output"])
    assert any("onnxruntime is not installed" in w and "pip install" in w for w in log.warnings)


def _nothing_written(folder, output):
    assert not os.path.exists(output)
    assert not glob.glob(os.path.join(str(folder), ".*.partial"))


def test_missing_onnx_is_refused_with_the_pip_command(models, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    out = str(tmp_path / "m.onnx")
    with pytest.raises(MissingDependencyError, match=r"pip install onnx==[\d.]+ onnxruntime=="):
        export_onnx(models["rgb_uint8"]["model"], out)
    _nothing_written(tmp_path, out)


def test_bad_models_are_refused_and_nothing_is_written(models, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, str(plain))
    checkpoint = checkpoint_path_for(models["rgb_uint8"]["model"])
    assert os.path.isfile(checkpoint)
    cases = [(garbage, "not a readable Berunda model"), (plain, "not a Berunda model"),
             (checkpoint, "training checkpoint"), (tmp_path / "missing.pt", "does not exist")]
    for model, message in cases:
        out = str(tmp_path / "out.onnx")
        with pytest.raises(ModelFileError, match=message):
            export_onnx(str(model), out)
        _nothing_written(tmp_path, out)


def test_bad_outputs_and_parameters_are_refused(models, tmp_path):
    model = models["rgb_uint8"]["model"]
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "folder.onnx").mkdir()
    # (a missing folder is created, issue 13; a "folder" that is a file cannot be)
    cases = [(str(a_file / "m.onnx"), "cannot be created"),
             (str(tmp_path / "folder.onnx"), "is a folder"),
             (str(tmp_path / "m.tif"), "must end in .onnx")]
    for out, message in cases:
        with pytest.raises(OutputError, match=message):
            export_onnx(model, out)
    out = str(tmp_path / "m.onnx")
    for kwargs, message in (({"tile_size": 8}, "TILE_SIZE"), ({"tile_size": 10000}, "TILE_SIZE"),
                            ({"opset": 5}, "OPSET"), ({"opset": 99}, "OPSET")):
        with pytest.raises(InvalidParameterError, match=message):
            export_onnx(model, out, **kwargs)
    with pytest.raises(Cancelled):
        export_onnx(model, out, reporter=Log(cancel=True))
    _nothing_written(tmp_path, out)
    assert sorted(os.listdir(tmp_path)) == ["a_file", "folder.onnx"]


def test_the_graph_takes_nodata_only_where_every_band_is_nodata(models):
    """GDAL's rule (engine/rasters.py), as berunda classify: a pixel with nodata in one band
    is data; the graph must not zero it."""
    from berunda.engine.normalization import normalize
    from berunda.engine.onnx_export import INPUT_SCALE, DeepnessGraph

    package = load_model(models["4band_uint16"]["model"])
    meta = package.metadata
    net = package.build_network("cpu")
    graph = DeepnessGraph(net.unet, meta["normalization"], "uint", 0).eval()
    raw = np.full((4, TILE, TILE), 30000, np.uint16)
    raw[:, :8] = 0          # every band nodata
    raw[0, 8:16] = 0        # one band only: data
    with torch.inference_mode():
        ours = graph(torch.from_numpy(raw[None].astype(np.float32) / INPUT_SCALE))[0]
        x = normalize(raw, valid_mask(raw, 0), meta["normalization"])
        berunda = torch.softmax(net(torch.from_numpy(x[None])).seg, dim=1)[0]
    assert valid_mask(raw, 0)[8:16].all() and not valid_mask(raw, 0)[:8].any()
    assert torch.allclose(ours, berunda, atol=1e-5)


def _broken(kind):
    """A DeepnessGraph with one real mistake an exporter could make."""
    from berunda.engine import onnx_export

    class Broken(onnx_export.DeepnessGraph):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if kind == "standardisation_skipped":
                self.mean.zero_()
                self.std.fill_(1.0)

        def forward(self, x):
            if kind == "bands_swapped":
                x = x.flip(1)
            out = super().forward(x)
            return out.flip(1) if kind == "classes_reordered" else out

    return Broken


@pytest.mark.parametrize("kind", ["bands_swapped", "standardisation_skipped", "classes_reordered"])
def test_a_wrong_graph_is_refused_and_nothing_is_written(models, tmp_path, monkeypatch, kind):
    from berunda.engine import onnx_export
    from berunda.engine.errors import ExportError

    monkeypatch.setattr(onnx_export, "DeepnessGraph", _broken(kind))
    out = str(tmp_path / "wrong.onnx")
    with pytest.raises(ExportError, match="does not compute what Berunda computes") as err:
        export_onnx(models["rgb_uint8"]["model"], out)
    assert "allowed" in str(err.value) and "same class on" in str(err.value)
    _nothing_written(tmp_path, out)
