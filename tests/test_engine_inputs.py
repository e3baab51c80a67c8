"""Inputs real users have (issue 13), engine level, no QGIS: RGBA orthophotos and extra bands
(BANDS), GDAL's validity mask (mask band / alpha / all bands nodata), the training pixel size,
label colour tables that do not tell classes apart, labels on another grid or CRS, ENCODER
typos and the supervised losses.  Real rasters cut from the Dubai sample and written with
rasterio in tmp_path; tiny real trainings (resnet18, 64-px tiles, 1 epoch)."""
import os

import numpy as np
import pytest
import rasterio
import torch
from rasterio.enums import ColorInterp
from rasterio.warp import Resampling, calculate_default_transform, reproject

from conftest import dubai_pair
from helpers import read_crop, write_raster

from berunda.engine.config import TrainingConfig
from berunda.engine.errors import InvalidParameterError, RasterError
from berunda.engine.inference import classify_raster
from berunda.engine.labels import scan_classes
from berunda.engine.model_file import load_model
from berunda.engine.normalization import compute_statistics
from berunda.engine.palette import default_color
from berunda.engine.progress import Reporter
from berunda.engine.sampling import WindowSampler
from berunda.engine.trainer import train
from berunda.models import IGNORE_INDEX

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(encoder="resnet18", encoder_weights="none", tile_size=64, batch_size=2, samples_per_epoch=4, epochs=1,
            device="cpu", aux_task="none")
CROP = 128
LOSSES = ["ce", "weighted_ce", "ce_dice"]
DUBAI_COLORS = ["#3C1098", "#8429F6", "#6EC1E4", "#FEDD3A", "#E2A929"]


class Log(Reporter):
    def __init__(self):
        self.lines, self.warnings = [], []

    def info(self, message):
        self.lines.append(message)

    def warning(self, message):
        self.warnings.append(message)


def config(images, labels, **kw):
    return TrainingConfig(list(images), list(labels), **{**TINY, **kw})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 128x128 crop of scene1_part1 (classes 2..5 and some label nodata) and its labels."""
    folder = tmp_path_factory.mktemp("inputs")
    img, lab = dubai_pair("scene1_part1")
    image, geo, _ = read_crop(img, 0, 640, CROP)
    label, lgeo, cmap = read_crop(lab, 0, 640, CROP)
    assert image.max(axis=0).min() > 0     # the crop holds no all-zero pixel of its own
    return {"folder": folder, "image": image, "geo": geo, "label": label, "label_geo": lgeo,
            "cmap": cmap, "image_path": write_raster(folder / "image.tif", image, geo),
            "label_path": write_raster(folder / "label.tif", label, lgeo, cmap)}


def rgba(data, path, alpha):
    return write_raster(path, np.concatenate([data["image"], alpha[None]]), data["geo"],
                        photometric="RGB", alpha="YES")


def hidden_block(data):
    """Alpha 0 over a block of real (non-zero) image pixels."""
    alpha = np.full((CROP, CROP), 255, np.uint8)
    alpha[20:60, 30:90] = 0
    return alpha


# ---- 1. RGBA orthophotos, BANDS -----------------------------------------------------------

@pytest.fixture(scope="module")
def rgba_model(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rgba")
    path = rgba(data, folder / "ortho_rgba.tif", hidden_block(data))
    with rasterio.open(path) as ds:
        assert ds.colorinterp[3] == ColorInterp.alpha
    out = str(folder / "rgba.pt")
    train(config([path], [data["label_path"]]), out)
    return path, out


def test_an_rgba_orthophoto_trains_as_rgb_with_alpha_as_validity(data, rgba_model):
    path, model = rgba_model
    meta = load_model(model).metadata
    assert meta["bands"]["count"] == 3 and meta["bands"]["indexes"] == [1, 2, 3]
    assert meta["architecture"]["in_channels"] == 3
    # the statistics are those of the RGB pixels outside the hidden block: the same as an RGB
    # raster whose block is declared nodata (the same seeded draws)
    alpha = hidden_block(data)
    rgb = data["image"].copy()
    rgb[:, alpha == 0] = 0
    rgb_nodata = write_raster(data["folder"] / "rgb_nodata.tif", rgb, data["geo"], nodata=0)
    expected = compute_statistics([rgb_nodata], np.random.default_rng([0, 7919]))
    assert meta["normalization"] == expected
    everything = compute_statistics([data["image_path"]], np.random.default_rng([0, 7919]))
    assert everything != expected   # the hidden block would have changed them
    # the training windows see alpha 0 as invalid, not as data
    stats = meta["normalization"]
    sampler = WindowSampler([path], None, [1.0], CROP, stats, None, 1.0, augment=False)
    try:
        tile = sampler.sample(np.random.default_rng(0))
    finally:
        sampler.close()
    assert tile.image.shape == (3, CROP, CROP)
    np.testing.assert_array_equal(tile.valid, (alpha > 0).astype(np.float32))
    assert (tile.image[:, alpha == 0] == 0).all()


def test_classify_reads_the_rgb_of_rgba_and_leaves_alpha_0_as_nodata(data, rgba_model, tmp_path):
    path, model = rgba_model
    out = str(tmp_path / "classes.tif")
    result = classify_raster(path, model, out, device="cpu", tile_size=64)
    with rasterio.open(out) as ds:
        classes = ds.read(1)
    alpha = hidden_block(data)
    assert (classes[alpha == 0] == result.nodata).all()
    assert (classes[alpha > 0] != result.nodata).all()
    # the same model classifies a plain RGB raster of the same pixels (no alpha, all valid)
    rgb_out = str(tmp_path / "rgb.tif")
    classify_raster(data["image_path"], model, rgb_out, device="cpu", tile_size=64)
    with rasterio.open(rgb_out) as ds:
        rgb = ds.read(1)
    assert (rgb != result.nodata).all()


def test_bands_chooses_the_bands_and_classify_reads_the_same(data, tmp_path):
    nir = (255 - data["image"][0:1]).astype(np.uint8)
    rgbn = write_raster(tmp_path / "rgbn.tif", np.concatenate([data["image"], nir]), data["geo"])
    model = str(tmp_path / "bands.pt")
    train(config([rgbn], [data["label_path"]], bands=[4, 1]), model)
    meta = load_model(model).metadata
    assert meta["bands"]["indexes"] == [4, 1] and meta["bands"]["count"] == 2
    assert meta["architecture"]["in_channels"] == 2
    stats = compute_statistics([rgbn], np.random.default_rng([0, 7919]), bands=[4, 1])
    assert meta["normalization"] == stats
    assert meta["normalization"]["mean"][0] == pytest.approx(255 - meta["normalization"]["mean"][1],
                                                             rel=0.02)
    # classify reads bands 4 and 1 of the same raster
    classify_raster(rgbn, model, str(tmp_path / "a.tif"), device="cpu", tile_size=64)
    # a 3-band raster lacks band 4: refused, saying what to do
    with pytest.raises(RasterError) as exc:
        classify_raster(data["image_path"], model, str(tmp_path / "b.tif"), device="cpu")
    assert "image.tif" in str(exc.value) and "BANDS" in str(exc.value)
    # ... unless BANDS names its bands (as many as the model's)
    classify_raster(data["image_path"], model, str(tmp_path / "c.tif"), device="cpu",
                    tile_size=64, bands=[3, 1])
    with pytest.raises(InvalidParameterError, match="BANDS 1 gives 1 band; the model was trained "
                                                    "on 2 bands"):
        classify_raster(data["image_path"], model, str(tmp_path / "d.tif"), bands=[1])
    with pytest.raises(RasterError, match="BANDS asks for band 5 but image.tif has 3 bands"):
        classify_raster(data["image_path"], model, str(tmp_path / "d.tif"), bands=[5, 1])
    assert not (tmp_path / "b.tif").exists() and not (tmp_path / "d.tif").exists()


@pytest.mark.parametrize("bands, words", [([4], ["image.tif has 3 bands", "band 4"]),
                                          ([0, 1], ["numbered from 1"]),
                                          ([1, 1], ["twice"])])
def test_bands_an_image_lacks_are_refused(data, tmp_path, bands, words):
    with pytest.raises((RasterError, InvalidParameterError)) as exc:
        train(config([data["image_path"]], [data["label_path"]], bands=bands),
              str(tmp_path / "m.pt"))
    for word in words:
        assert word in str(exc.value)
    assert not (tmp_path / "m.pt").exists()


# ---- 2. nodata: GDAL's mask semantics -----------------------------------------------------

@pytest.fixture(scope="module")
def dark_red(data):
    """The crop with nodata 0, a block of dark red (R only) pixels and a block of (0, 0, 0)."""
    image = data["image"].copy()
    image[:, 10:40, 10:40] = 0
    image[0, 10:40, 10:40] = 90            # dark red: (90, 0, 0)
    image[:, 70:100, 70:100] = 0           # nodata in every band
    path = write_raster(data["folder"] / "dark_red.tif", image, data["geo"], nodata=0)
    return path, image


def test_a_pixel_is_nodata_only_where_every_band_is_nodata(data, dark_red, tmp_path):
    path, image = dark_red
    red = np.zeros((CROP, CROP), bool)
    red[10:40, 10:40] = True
    black = np.zeros((CROP, CROP), bool)
    black[70:100, 70:100] = True
    # classification
    out = str(tmp_path / "classes.tif")
    model = str(tmp_path / "m.pt")
    train(config([path], [data["label_path"]]), model)
    result = classify_raster(path, model, out, device="cpu", tile_size=64)
    with rasterio.open(out) as ds:
        classes = ds.read(1)
    assert (classes[red] != result.nodata).all(), "dark red pixels were dropped as nodata"
    assert (classes[black] == result.nodata).all()
    # training windows
    stats = load_model(model).metadata["normalization"]
    sampler = WindowSampler([path], None, [1.0], CROP, stats, None, 1.0, augment=False)
    try:
        tile = sampler.sample(np.random.default_rng(0))
    finally:
        sampler.close()
    np.testing.assert_array_equal(tile.valid, (~black).astype(np.float32))
    # normalisation statistics: the dark red pixels' zeros in G and B are data
    stats = compute_statistics([path], np.random.default_rng(1), window=CROP)
    assert stats["low"][1] == 0 and stats["low"][2] == 0


def test_a_gdal_mask_band_marks_nodata_even_without_a_nodata_value(data, tmp_path):
    path = write_raster(tmp_path / "masked.tif", data["image"], data["geo"])
    mask = np.ones((CROP, CROP), bool)
    mask[50:80, :] = False
    with rasterio.open(path, "r+") as ds:
        ds.write_mask(mask)
    with rasterio.open(path) as ds:
        assert ds.nodata is None and (ds.dataset_mask() > 0).sum() == mask.sum()
    stats = compute_statistics([path], np.random.default_rng(0), window=CROP)
    sampler = WindowSampler([path], None, [1.0], CROP, stats, None, 1.0, augment=False)
    try:
        tile = sampler.sample(np.random.default_rng(0))
    finally:
        sampler.close()
    np.testing.assert_array_equal(tile.valid, mask.astype(np.float32))
    model = str(tmp_path / "m.pt")
    train(config([path], [data["label_path"]]), model)
    out = str(tmp_path / "classes.tif")
    result = classify_raster(path, model, out, device="cpu", tile_size=64)
    with rasterio.open(out) as ds:
        classes = ds.read(1)
    assert (classes[~mask] == result.nodata).all() and (classes[mask] != result.nodata).all()


# ---- 3. resolution ------------------------------------------------------------------------

def test_pixel_size_is_stored_and_another_resolution_is_warned_about(data, rgba_model, tmp_path):
    _, model = rgba_model
    grid = load_model(model).metadata["grid"]
    assert grid == {"pixel_size": [0.5, 0.5], "crs_units": "metre"}
    coarse_geo = dict(data["geo"], transform=data["geo"]["transform"] * rasterio.Affine.scale(2))
    coarse = write_raster(tmp_path / "coarse.tif", data["image"], coarse_geo)
    log = Log()
    classify_raster(coarse, model, str(tmp_path / "a.tif"), device="cpu", tile_size=64,
                    reporter=log)
    assert len(log.warnings) == 1
    assert "1 × 1 metre" in log.warnings[0] and "0.5 × 0.5 metre" in log.warnings[0]
    assert "Warp" in log.warnings[0]
    near_geo = dict(data["geo"], transform=data["geo"]["transform"] * rasterio.Affine.scale(1.2))
    near = write_raster(tmp_path / "near.tif", data["image"], near_geo)
    log = Log()
    classify_raster(near, model, str(tmp_path / "b.tif"), device="cpu", tile_size=64,
                    reporter=log)
    assert log.warnings == []   # 20 % is within the tolerance


# ---- 4. label colour tables ---------------------------------------------------------------

@pytest.mark.parametrize("table", ["all_black", "all_same", "undefined"])
def test_a_colour_table_that_does_not_tell_classes_apart_gives_the_palette(data, tmp_path,
                                                                             table):
    values = sorted(set(np.unique(data["label"]).tolist()) - {0})
    if table == "all_black":
        cmap = {v: (0, 0, 0, 255) for v in range(256)}
    elif table == "all_same":
        cmap = {v: (200, 30, 30, 255) for v in range(256)}
    else:   # defined for the nodata value only; GDAL fills the rest
        cmap = {0: (10, 10, 10, 255)}
    path = write_raster(tmp_path / "labels.tif", data["label"], data["label_geo"], cmap)
    info = scan_classes([path])
    assert info.values == values
    assert info.colors == [default_color(i) for i in range(len(values))]


def test_a_real_colour_table_is_kept_and_a_few_black_fillers_are_replaced(data, tmp_path):
    values = sorted(set(np.unique(data["label"]).tolist()) - {0})
    assert scan_classes([data["label_path"]]).colors == DUBAI_COLORS[values[0] - 1:values[-1]]
    cmap = dict(data["cmap"])
    cmap[values[0]] = cmap[values[1]] = (0, 0, 0, 255)
    path = write_raster(tmp_path / "labels.tif", data["label"], data["label_geo"], cmap)
    colors = scan_classes([path]).colors
    assert colors[:2] == [default_color(0), default_color(1)]
    assert colors[2:] == DUBAI_COLORS[values[2] - 1:values[-1]]


# ---- 6. labels on another grid or CRS -----------------------------------------------------

def test_labels_on_a_shifted_grid_are_resampled_onto_the_image(data, tmp_path):
    from berunda.engine.label_grid import labels_on_image_grids

    geo = dict(data["label_geo"],
               transform=data["label_geo"]["transform"] * rasterio.Affine.translation(3, 0))
    shifted = write_raster(tmp_path / "shifted.tif", data["label"], geo, data["cmap"])
    cropped = write_raster(tmp_path / "cropped.tif", data["label"][:, :100].copy(),
                           data["label_geo"], data["cmap"])
    cfg = config([data["image_path"], data["image_path"]], [shifted, cropped])
    log = Log()
    with labels_on_image_grids(cfg, log) as aligned:
        assert aligned.labels[0] != shifted and aligned.labels[1] != cropped
        with rasterio.open(aligned.labels[0]) as a, rasterio.open(aligned.labels[1]) as b:
            assert a.transform == data["geo"]["transform"] and (a.width, a.height) == (CROP, CROP)
            moved, short = a.read(1), b.read(1)
            assert a.colormap(1)[values_of(data)[0]] == data["cmap"][values_of(data)[0]]
        # label pixel (r, c) lies on image pixel (r, c + 3); the uncovered columns are nodata
        np.testing.assert_array_equal(moved[:, 3:], data["label"][0, :, :-3])
        assert (moved[:, :3] == 0).all()
        np.testing.assert_array_equal(short[:100], data["label"][0, :100])
        assert (short[100:] == 0).all()
        assert scan_classes(aligned.labels).colors[:1] == [
            DUBAI_COLORS[values_of(data)[0] - 1]]
        folder = os.path.dirname(aligned.labels[0])
    assert not os.path.exists(folder), "the resampled copies were not removed"
    assert len(log.lines) == 2 and "shifted.tif" in log.lines[0] and "resampled" in log.lines[0]
    # and it trains
    out = tmp_path / "m.pt"
    train(cfg, str(out))
    assert out.is_file()


def values_of(data):
    return sorted(set(np.unique(data["label"]).tolist()) - {0})


def test_labels_in_another_crs_are_reprojected_onto_the_image(data, tmp_path):
    from berunda.engine.label_grid import labels_on_image_grids

    src_crs, dst_crs = data["label_geo"]["crs"], "EPSG:4326"
    transform, width, height = calculate_default_transform(
        src_crs, dst_crs, CROP, CROP, *rasterio.transform.array_bounds(
            CROP, CROP, data["label_geo"]["transform"]))
    lonlat = np.zeros((1, height, width), np.uint8)
    reproject(data["label"], lonlat, src_transform=data["label_geo"]["transform"],
              src_crs=src_crs, dst_transform=transform, dst_crs=dst_crs, src_nodata=0,
              dst_nodata=0, resampling=Resampling.nearest)
    path = write_raster(tmp_path / "lonlat.tif", lonlat, {"crs": dst_crs, "transform": transform,
                                                          "nodata": 0})
    cfg = config([data["image_path"]], [path])
    with labels_on_image_grids(cfg, Log()) as aligned:
        with rasterio.open(aligned.labels[0]) as ds:
            back = ds.read(1)
            assert ds.crs == src_crs
    both = (back > 0) & (data["label"][0] > 0)
    assert both.mean() > 0.9
    assert (back[both] == data["label"][0][both]).mean() > 0.95   # a pixel off at edges only


def test_labels_that_do_not_overlap_their_image_are_refused(data, tmp_path):
    other_label = dubai_pair("scene1_part2")[1]   # scene1_part2 lies beside scene1_part1
    with pytest.raises(RasterError) as exc:
        train(config([data["image_path"]], [other_label]), str(tmp_path / "m.pt"))
    message = str(exc.value)
    assert "scene1_part2.tif" in message and "does not overlap" in message
    assert "same order" in message
    assert not (tmp_path / "m.pt").exists()


# ---- 5. ENCODER ---------------------------------------------------------------------------

def test_a_misspelt_encoder_is_refused_with_the_closest_names(data, tmp_path):
    with pytest.raises(InvalidParameterError) as exc:
        train(config([data["image_path"]], [data["label_path"]], encoder="resnt34"),
              str(tmp_path / "m.pt"))
    message = str(exc.value)
    assert "ENCODER 'resnt34'" in message and "Did you mean resnet34" in message
    assert not (tmp_path / "m.pt").exists()


def test_the_common_encoders_are_smp_encoders():
    from berunda.engine.encoders import check_encoder
    from berunda.engine.parameters import COMMON_ENCODERS

    for name in COMMON_ENCODERS:
        check_encoder(name)


# ---- 7. supervised losses -----------------------------------------------------------------

def test_every_supervised_loss_is_offered():
    from berunda.engine.parameters import SUPERVISED_LOSSES
    from berunda.models.losses import FACTORIES

    assert SUPERVISED_LOSSES == list(FACTORIES) == LOSSES


def test_every_learning_rate_schedule_is_offered():
    from berunda.engine.lr_schedule import SCHEDULES
    from berunda.engine.parameters import NETWORK_PARAMS

    offered = next(p for p in NETWORK_PARAMS if p.id == "LR_SCHEDULE").choices
    assert list(offered) == list(SCHEDULES) == ["constant", "poly"]


def test_median_frequency_weights():
    from berunda.models.losses import median_frequency_weights

    weights = median_frequency_weights([800, 100, 100, 50, 1])
    # median frequency 100/1051: weight 1 for the median classes, rare ones up, capped at 10
    np.testing.assert_allclose(weights.numpy(), [0.125, 1.0, 1.0, 2.0, 10.0], rtol=1e-6)


@pytest.mark.parametrize("loss_id", LOSSES)
def test_supervised_losses_ignore_unlabelled_pixels(loss_id):
    from berunda.models.losses import make_supervised_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 16, 16, requires_grad=True)
    labels = torch.randint(0, 4, (2, 16, 16))
    labels[:, :8] = IGNORE_INDEX
    loss = make_supervised_loss(loss_id, [800, 100, 100, 5])
    value = loss(logits, labels)
    value.backward()
    assert torch.isfinite(value) and value > 0
    assert (logits.grad[:, :, :8] == 0).all() and (logits.grad[:, :, 8:] != 0).any()
    assert loss(logits, torch.full_like(labels, IGNORE_INDEX)) == 0   # no labels: 0, not NaN


def test_weighted_cross_entropy_favours_the_rare_class():
    """A mistake on the rare class costs more than on the common one."""
    from berunda.models.losses import make_supervised_loss

    labels = torch.tensor([[[0, 0, 0, 1]]])
    wrong_on_rare = torch.tensor([[[[5.0, 5.0, 5.0, 5.0]], [[-5.0, -5.0, -5.0, -5.0]]]])
    plain = make_supervised_loss("ce")
    weighted = make_supervised_loss("weighted_ce", [900, 100])
    assert weighted(wrong_on_rare, labels) > plain(wrong_on_rare, labels)


@pytest.mark.parametrize("loss_id", ["weighted_ce", "ce_dice"])
def test_training_with_each_supervised_loss_records_it(data, tmp_path, loss_id):
    out = tmp_path / "m.pt"
    result = train(config([data["image_path"]], [data["label_path"]], supervised_loss=loss_id),
                   str(out))
    assert np.isfinite(result.final["loss"])
    assert load_model(str(out)).metadata["training"]["config"]["supervised_loss"] == loss_id


def test_an_unknown_supervised_loss_is_refused(data, tmp_path):
    with pytest.raises(InvalidParameterError, match="SUPERVISED_LOSS 'focal' is unknown"):
        train(config([data["image_path"]], [data["label_path"]], supervised_loss="focal"),
              str(tmp_path / "m.pt"))
