"""Sliding-window classification: grid, values, colours and nodata of the output
on a real crop, seams, borders, refusals, cancellation, side outputs."""
import os

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from berunda.engine import inference
from berunda.engine.errors import (Cancelled, InvalidParameterError, ModelFileError,
                                   OutputError, RasterError)
from berunda.engine.inference import classify_raster
from berunda.engine.model_file import ModelPackage, save_model
from berunda.engine.normalization import normalize
from berunda.engine.progress import Reporter
from berunda.engine.rasters import valid_mask
from berunda.engine.tiling import BlockPlan, axis_grid
from berunda.models.network import build_network, describe_network

VALUES = [1, 2, 3, 4, 5]
NAMES = ["building", "land", "road", "vegetation", "water"]
COLORS = ["#3C1098", "#8429F6", "#6EC1E4", "#FEDD3A", "#E2A929"]
STATS = {"low": [0.0] * 3, "high": [255.0] * 3, "mean": [100.0] * 3, "std": [50.0] * 3}
IMAGE = "scene1_part1"
PAD = 32   # reflection margin of the whole-raster reference forward pass


class Log(Reporter):
    def __init__(self):
        self.lines, self.fractions = [], []

    def info(self, message):
        self.lines.append(message)

    def progress(self, fraction):
        self.fractions.append(fraction)


def local_network(seed=0):
    """A random resnet18 BerundaNet-late whose decoder only listens to the stride-2
    skip: its receptive field is ~20 px, so tiled and whole-raster predictions must
    agree away from tile edges (a random net otherwise mixes in the whole tile)."""
    torch.manual_seed(seed)
    arch = describe_network(3, 5, "resnet18", 0, 0)
    net = build_network(arch).eval()
    with torch.no_grad():
        for block in net.unet.decoder.blocks:
            deep = block.conv1[0].in_channels - _skip_channels(block)
            if _skip_channels(block):
                block.conv1[0].weight[:, :deep] = 0
    return arch, net


def _skip_channels(block):
    return {768: 256, 384: 128, 192: 64, 128: 64}.get(block.conv1[0].in_channels, 0)


def reference(net, data, nodata=None):
    """Whole-raster forward pass, reflection-padded to a multiple of 32 (0-based indices)."""
    h, w = data.shape[1:]
    ph, pw = (-(h + 2 * PAD)) % 32, (-(w + 2 * PAD)) % 32
    x = normalize(data, valid_mask(data, nodata), STATS)
    x = np.pad(x, ((0, 0), (PAD, PAD + ph), (PAD, PAD + pw)), mode="reflect")
    with torch.inference_mode():
        logits = net(torch.from_numpy(x)[None]).seg[0]
    return logits[:, PAD:PAD + h, PAD:PAD + w]


def package(arch, net):
    meta = {"architecture": arch,
            "bands": {"count": 3, "dtype": "uint8", "dtype_family": "uint", "nodata": None},
            "normalization": STATS,
            "classes": {"values": VALUES, "names": NAMES, "colors": COLORS, "nodata": 0},
            "tile_size": 320, "task": {"id": "none", "params": {}, "lambda": 0.0}}
    return ModelPackage(meta, {k: v.clone() for k, v in net.state_dict().items()})


def write_crop(path, data_dir, row, col, height, width, nodata=None, dtype=None, bands=None):
    with rasterio.open(data_dir / "images" / f"{IMAGE}.tif") as src:
        data = src.read(window=Window(col, row, width, height))
        profile = dict(driver="GTiff", width=width, height=height, count=data.shape[0],
                       dtype=data.dtype, crs=src.crs,
                       transform=src.window_transform(Window(col, row, width, height)))
    if bands is not None:
        data = np.concatenate([data] * 2)[:bands]
    if dtype is not None:
        data = data.astype(dtype)
    profile.update(count=data.shape[0], dtype=data.dtype, nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return data


@pytest.fixture(scope="module")
def small(tmp_path_factory, data_dir):
    """A 96x160 real crop and a local model whose classes are balanced on it."""
    folder = tmp_path_factory.mktemp("small")
    path = str(folder / "small.tif")
    data = write_crop(path, data_dir, 300, 300, 96, 160)
    arch, net = local_network()
    with torch.no_grad():   # shift the logits so every class wins somewhere
        net.unet.segmentation_head[0].bias -= reference(net, data).mean(dim=(1, 2))
    return path, data, net, package(arch, net)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, small):
    path = str(tmp_path_factory.mktemp("model") / "model.pt")
    save_model(path, small[3])
    return path


@pytest.fixture(scope="module")
def crop(tmp_path_factory, data_dir):
    """A 200x300 real crop with a nodata block (nodata = 0)."""
    path = str(tmp_path_factory.mktemp("crop") / "crop.tif")
    with rasterio.open(data_dir / "images" / f"{IMAGE}.tif") as src:
        data = src.read(window=Window(40, 60, 300, 200))
        transform = src.window_transform(Window(40, 60, 300, 200))
        crs = src.crs
    data[:, 50:110, 120:200] = 0
    with rasterio.open(path, "w", driver="GTiff", width=300, height=200, count=3, dtype="uint8",
                       crs=crs, transform=transform, nodata=0) as dst:
        dst.write(data)
    return path, data


def test_real_crop_grid_values_colours_and_nodata(tmp_path, crop, model_file):
    path, data = crop
    out = str(tmp_path / "classes.tif")
    log = Log()
    result = classify_raster(path, model_file, out, tile_size=128, device="cpu", reporter=log)
    with rasterio.open(path) as src, rasterio.open(out) as dst:
        assert (dst.width, dst.height, dst.count) == (src.width, src.height, 1)
        assert dst.transform == src.transform and dst.crs == src.crs
        assert dst.dtypes[0] == "uint8" and dst.nodata == 0
        assert dst.profile["tiled"] and dst.compression.name.lower() == "deflate"
        classes = dst.read(1)
        cmap = dst.colormap(1)
    invalid = ~valid_mask(data, 0)
    assert invalid[50:110, 120:200].all()
    np.testing.assert_array_equal(classes == 0, invalid)     # nodata exactly where input is
    assert set(np.unique(classes[~invalid])) <= set(VALUES)
    assert len(np.unique(classes[~invalid])) >= 3
    for value, color in zip(VALUES, COLORS):
        assert "#%02X%02X%02X" % cmap[value][:3] == color
    assert cmap[0][3] == 0                                    # nodata transparent
    from osgeo import gdal

    ds = gdal.Open(out)
    band = ds.GetRasterBand(1)
    band.GetMetadata()
    assert band.GetCategoryNames()[1:6] == NAMES
    ds = None
    assert sorted(os.listdir(tmp_path)) == ["classes.tif", "classes.tif.aux.xml"]
    assert result.classes == VALUES and result.nodata == 0
    assert sum(result.class_pixels.values()) == int((~invalid).sum())
    assert result.pixels == 300 * 200
    assert log.fractions[-1] == pytest.approx(1.0)
    assert any("Mpx/s" in line for line in log.lines)


def test_tiled_agrees_with_whole_raster_pass(tmp_path, small):
    path, data, net, pkg = small
    whole = np.asarray(VALUES)[reference(net, data).argmax(0).numpy()]
    out = str(tmp_path / "tiled.tif")
    result = classify_raster(path, pkg, out, tile_size=64, overlap=32, device="cpu")
    with rasterio.open(out) as dst:
        tiled = dst.read(1)
    assert result.tiles > 4
    assert min(np.bincount(whole.ravel(), minlength=6)[1:]) > 0.03 * whole.size  # not trivial
    assert (tiled == whole).mean() >= 0.99


def test_borders_of_a_raster_smaller_than_a_tile(tmp_path, data_dir, small):
    _, _, net, pkg = small
    for h, w in ((37, 45), (1, 70)):
        path = str(tmp_path / f"tiny{h}.tif")
        data = write_crop(path, data_dir, 200, 200, h, w)
        out = str(tmp_path / f"tiny{h}_out.tif")
        classify_raster(path, pkg, out, tile_size=64, overlap=16, device="cpu")
        with rasterio.open(out) as dst:
            tiled = dst.read(1)
        assert (tiled != 0).all()                                  # every border pixel classified
        if h > 1:
            whole = np.asarray(VALUES)[reference(net, data).argmax(0).numpy()]
            assert (tiled == whole).mean() >= 0.99


@pytest.mark.parametrize("overlap", [0, 8])
def test_small_blocks_give_the_same_result(tmp_path, small, monkeypatch, overlap):
    path, _, _, pkg = small
    one = str(tmp_path / "one.tif")
    classify_raster(path, pkg, one, tile_size=32, overlap=overlap, device="cpu",
                    probabilities_path=str(tmp_path / "one_p.tif"))
    monkeypatch.setattr(inference, "BLOCK_BUDGET_BYTES", 6 * 4 * 32 * 64)  # 1-2 tiles/block
    many = str(tmp_path / "many.tif")
    result = classify_raster(path, pkg, many, tile_size=32, overlap=overlap, device="cpu",
                             probabilities_path=str(tmp_path / "many_p.tif"))
    plan = BlockPlan(96, 160, 32, overlap, 32, 5, inference.BLOCK_BUDGET_BYTES)
    blocks = list(plan.blocks())
    assert len({b.row for b in blocks}) > 1 and len({b.col for b in blocks}) > 1
    if overlap == 0:   # each tile once
        assert result.tiles == plan.rows.count * plan.cols.count
    else:              # tiles shared along a block row are reused, across block rows recomputed
        assert result.tiles == plan.total_tiles() < sum(
            len(b.tile_rows) * len(b.tile_cols) for b in blocks)
    with rasterio.open(one) as a, rasterio.open(many) as b:
        assert (a.read(1) == b.read(1)).mean() > 0.999
    with rasterio.open(str(tmp_path / "one_p.tif")) as a, \
            rasterio.open(str(tmp_path / "many_p.tif")) as b:
        np.testing.assert_allclose(a.read(), b.read(), atol=1e-4)


def test_probabilities_and_confidence(tmp_path, crop, small):
    path, data = crop
    pkg = small[3]
    out, prob, conf = (str(tmp_path / n) for n in ("c.tif", "p.tif", "k.tif"))
    stale = tmp_path / "p.tif.aux.xml"   # e.g. QGIS statistics of an older p.tif
    stale.write_text("<PAMDataset><Metadata><MDI key='old'>1</MDI></Metadata></PAMDataset>")
    classify_raster(path, pkg, out, tile_size=128, device="cpu", probabilities_path=prob,
                    confidence_path=conf)
    invalid = ~valid_mask(data, 0)
    assert not stale.exists()
    with rasterio.open(out) as c, rasterio.open(prob) as p, rasterio.open(conf) as k:
        assert p.count == 5 and p.dtypes[0] == "float32" and list(p.descriptions) == NAMES
        assert (p.transform, p.crs, k.transform, k.crs) == (c.transform, c.crs, c.transform, c.crs)
        probs, classes, confidence = p.read(), c.read(1), k.read(1)
    assert np.isnan(probs[:, invalid]).all() and np.isnan(confidence[invalid]).all()
    ok = ~invalid
    np.testing.assert_allclose(probs[:, ok].sum(axis=0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(VALUES)[probs[:, ok].argmax(axis=0)], classes[ok])
    np.testing.assert_allclose(confidence[ok], probs[:, ok].max(axis=0), atol=1e-6)

    prob8 = str(tmp_path / "p8.tif")
    classify_raster(path, pkg, str(tmp_path / "c8.tif"), tile_size=128, device="cpu",
                    probabilities_path=prob8, probabilities_dtype="uint8")
    with rasterio.open(prob8) as p:
        assert p.dtypes[0] == "uint8"
        scaled, mask = p.read(), p.read_masks(1)
    np.testing.assert_allclose(scaled[:, ok] / 255.0, probs[:, ok], atol=1 / 255)
    np.testing.assert_array_equal(mask == 0, invalid)
    assert not any(name.endswith(".msk") or ".partial" in name for name in os.listdir(tmp_path))


def test_nodata_tiles_are_not_computed(tmp_path, data_dir, small):
    path = str(tmp_path / "half.tif")
    data = write_crop(path, data_dir, 100, 100, 64, 256, nodata=0)
    data[:, :, 128:] = 0
    with rasterio.open(path, "r+") as dst:
        dst.write(data)
    out = str(tmp_path / "half_out.tif")
    result = classify_raster(path, small[3], out, tile_size=64, overlap=0, device="cpu")
    with rasterio.open(out) as dst:
        classes = dst.read(1)
    assert result.tiles == 2                       # the 2 of 4 tiles that hold data
    assert (classes[:, 128:] == 0).all()


def test_refuses_bands_and_dtype_the_model_was_not_trained_on(tmp_path, data_dir, model_file):
    four = str(tmp_path / "four.tif")
    write_crop(four, data_dir, 0, 0, 40, 40, bands=4, dtype="float32")
    with pytest.raises(RasterError, match=r"expects 3 bands of uint type; four.tif has 4 bands "
                                          r"of float"):
        classify_raster(four, model_file, str(tmp_path / "o.tif"), device="cpu")
    floats = str(tmp_path / "floats.tif")
    write_crop(floats, data_dir, 0, 0, 40, 40, dtype="float32")
    with pytest.raises(RasterError, match=r"expects 3 bands of uint type; floats.tif has 3 bands "
                                          r"of float"):
        classify_raster(floats, model_file, str(tmp_path / "o.tif"), device="cpu")
    assert not (tmp_path / "o.tif").exists()


def test_refuses_corrupt_and_code_running_models(tmp_path, crop, model_file):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(open(model_file, "rb").read()[:20000])
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.pt"
    torch.save({"berunda": "{}", "state_dict": {}, "x": Evil()}, str(evil))
    for bad in (garbage, truncated, evil):
        with pytest.raises(ModelFileError):
            classify_raster(crop[0], str(bad), str(tmp_path / "o.tif"), device="cpu")
    assert not marker.exists()
    assert not (tmp_path / "o.tif").exists()


def test_cancel_leaves_no_file(tmp_path, crop, model_file):
    class CancelLater(Reporter):
        calls = 0

        def cancelled(self):
            self.calls += 1
            return self.calls > 3

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(Cancelled):
        classify_raster(crop[0], model_file, str(out_dir / "c.tif"), tile_size=64, batch_size=1,
                        device="cpu", probabilities_path=str(out_dir / "p.tif"),
                        confidence_path=str(out_dir / "k.tif"), reporter=CancelLater())
    assert os.listdir(out_dir) == []


def test_output_paths_are_checked(tmp_path, crop, model_file):
    path = crop[0]
    with pytest.raises(OutputError, match="input raster"):
        classify_raster(path, model_file, path, device="cpu")
    out = str(tmp_path / "c.tif")
    with pytest.raises(OutputError, match="same file"):
        classify_raster(path, model_file, out, probabilities_path=out, device="cpu")
    with pytest.raises(OutputError, match="same file"):
        classify_raster(path, model_file, out, probabilities_path=str(tmp_path / "p.tif"),
                        confidence_path=str(tmp_path / "p.tif"), device="cpu")
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(OutputError, match="cannot be created"):
        classify_raster(path, model_file, str(blocked / "c.tif"), device="cpu")
    blocked.unlink()
    if os.geteuid() != 0:   # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(OutputError, match="locked"):
            classify_raster(path, model_file, str(locked / "c.tif"), device="cpu")
    assert os.listdir(tmp_path) in ([], ["locked"])


def test_missing_output_folders_are_created(tmp_path, crop, model_file):
    out = tmp_path / "new" / "deeper" / "c.tif"
    prob = tmp_path / "other" / "p.tif"
    classify_raster(crop[0], model_file, str(out), tile_size=128, probabilities_path=str(prob),
                    device="cpu")
    assert out.is_file() and prob.is_file()


def test_parameters_are_checked(tmp_path, crop, small):
    path, pkg, out = crop[0], small[3], str(tmp_path / "c.tif")
    log = Log()
    classify_raster(path, pkg, out, tile_size=50, overlap=0.25, device="cpu", reporter=log)
    assert any("using 64" in line for line in log.lines)
    for bad in (64, 100, -1, 2.5, "a", float("nan")):
        with pytest.raises(InvalidParameterError, match="OVERLAP"):
            classify_raster(path, pkg, out, tile_size=64, overlap=bad, device="cpu")
    with pytest.raises(InvalidParameterError, match="TILE_SIZE"):
        classify_raster(path, pkg, out, tile_size=-32, device="cpu")
    with pytest.raises(InvalidParameterError, match="Probability data type"):
        classify_raster(path, pkg, out, probabilities_dtype="int16", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError, match="cuda"):
            classify_raster(path, pkg, out, device="cuda")


@pytest.mark.parametrize("length,tile,overlap", [(1, 64, 16), (100, 64, 0), (1000, 320, 80),
                                                 (333, 96, 33), (5000, 256, 0)])
def test_tile_grid_covers_the_raster_with_margin(length, tile, overlap):
    grid = axis_grid(length, tile, overlap, 32)
    assert grid.tile % 32 == 0 and grid.tile <= max(tile, 32)
    covered = np.zeros(length, bool)
    for k in range(grid.count):
        lo = grid.start(k) + overlap // 2
        hi = grid.start(k) + grid.tile - overlap // 2
        covered[max(lo, 0):max(min(hi, length), 0)] = True
    assert covered.all()   # every pixel is at least overlap/2 inside some tile


def test_without_overlap_every_tile_is_computed_once():
    plan = BlockPlan(1000, 1300, 64, 0, 32, 5, budget_bytes=6 * 4 * 300 * 200)
    seen = [(i, j) for b in plan.blocks() for i in b.tile_rows for j in b.new_cols]
    assert len(seen) == len(set(seen)) == plan.rows.count * plan.cols.count
    assert all(len(b.tile_rows) == plan.block_rows // 64 or b.r1 == 1000 for b in plan.blocks())
