"""Inputs real users have (issue 13) through the Processing algorithms in a real
QgsApplication: an RGBA orthophoto with BANDS, SUPERVISED_LOSS, labels on another grid,
a misspelt ENCODER, the encoder drop-down of the dialog, and the resolution warning.
Rasters are 128-px crops of the Dubai sample written to a module folder; tiny trainings."""
import numpy as np
import pytest
import rasterio

from helpers import DATA, TINY, read_crop, recording_feedback, write_raster

SIZE = 128
CROP = (0, 640)   # (row, col) in scene1_part1: classes 2..5, no all-black pixel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    folder = tmp_path_factory.mktemp("alg_inputs")
    image, geo, _ = read_crop(DATA / "images" / "scene1_part1.tif", *CROP, SIZE)
    label, lgeo, cmap = read_crop(DATA / "labels" / "scene1_part1.tif", *CROP, SIZE)
    alpha = np.full((1, SIZE, SIZE), 255, np.uint8)
    alpha[:, :, :40] = 0
    nir = 255 - image[:1]
    shifted = dict(lgeo, transform=lgeo["transform"] * rasterio.Affine.translation(5, 2))
    coarse = dict(geo, transform=geo["transform"] * rasterio.Affine.scale(2))
    return {
        "folder": folder, "alpha": alpha[0],
        "rgba": write_raster(folder / "rgba.tif", np.concatenate([image, alpha]), geo,
                             photometric="RGB", alpha="YES"),
        "rgbn_alpha": rgbn_alpha(folder / "rgbn_alpha.tif", np.concatenate([image, nir, alpha]),
                                 geo),
        "rgb": write_raster(folder / "rgb.tif", image, geo),
        "coarse": write_raster(folder / "coarse.tif", image, coarse),
        "label": write_raster(folder / "label.tif", label, lgeo, cmap),
        "label_shifted": write_raster(folder / "label_shifted.tif", label, shifted, cmap),
    }


def rgbn_alpha(path, data, geo):
    """R, G, B, NIR and alpha: GDAL does not apply an alpha band of a 5-band raster by itself."""
    from rasterio.enums import ColorInterp

    write_raster(path, data, geo)
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                          ColorInterp.undefined, ColorInterp.alpha]
    with rasterio.open(path) as ds:
        assert ds.colorinterp[4] == ColorInterp.alpha
        assert (ds.dataset_mask() > 0).all()   # GDAL itself ignores that alpha band
    return str(path)


def run(alg, params, feedback=None):
    import processing
    from qgis.core import QgsProcessingContext

    return processing.run(f"berunda:{alg}", params, context=QgsProcessingContext(),
                          feedback=feedback)


@pytest.fixture(scope="module")
def rgba_model(qgis_app, rasters, tmp_path_factory):
    """berunda:train on an RGBN + alpha image with BANDS=3,2,1 and weighted cross-entropy."""
    out = str(tmp_path_factory.mktemp("alg_model") / "m.pt")
    run("train", dict(TINY, LABELED_IMAGES=[rasters["rgbn_alpha"]], LABELS=[rasters["label"]],
                      AUX_TASK="none", DEVICE="cpu", BANDS="3, 2,1",
                      SUPERVISED_LOSS="weighted_ce", OUTPUT_MODEL=out))
    return out


def test_train_takes_bands_and_the_supervised_loss(rgba_model):
    from berunda.engine.model_file import load_model

    meta = load_model(rgba_model).metadata
    assert meta["bands"]["indexes"] == [3, 2, 1]
    assert meta["bands"]["source_count"] == 4          # RGBN; the alpha band is not data
    assert meta["training"]["config"]["supervised_loss"] == "weighted_ce"
    assert meta["grid"] == {"pixel_size": [0.5, 0.5], "crs_units": "metre"}


def test_classify_reads_the_model_bands_and_takes_alpha_as_validity(rgba_model, rasters,
                                                                     tmp_path):
    result = run("classify", dict(INPUT=rasters["rgbn_alpha"], MODEL=rgba_model, DEVICE="cpu",
                                  OUTPUT=str(tmp_path / "a.tif")))
    with rasterio.open(result["OUTPUT"]) as ds:
        classes, nodata = ds.read(1), ds.nodata
    hidden = rasters["alpha"] == 0
    assert (classes[hidden] == nodata).all() and (classes[~hidden] != nodata).all()
    # an RGBA raster has no band 4 of its own, but BANDS can feed its 3 bands in the model's order
    result = run("classify", dict(INPUT=rasters["rgba"], MODEL=rgba_model, DEVICE="cpu",
                                  BANDS="3,2,1", OUTPUT=str(tmp_path / "b.tif")))
    with rasterio.open(result["OUTPUT"]) as ds:
        assert (ds.read(1)[hidden] == nodata).all()


def test_classify_refuses_bands_the_input_lacks(rgba_model, rasters, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as exc:
        run("classify", dict(INPUT=rasters["rgb"], MODEL=rgba_model, DEVICE="cpu", BANDS="4,2,1",
                             OUTPUT=str(tmp_path / "c.tif")))
    assert "band 4" in str(exc.value) and "rgb.tif has 3 bands" in str(exc.value)
    assert not (tmp_path / "c.tif").exists()


def test_classify_warns_about_another_resolution(rgba_model, rasters, tmp_path):
    feedback = recording_feedback()
    run("classify", dict(INPUT=rasters["coarse"], MODEL=rgba_model, DEVICE="cpu",
                         BANDS="3,2,1", OUTPUT=str(tmp_path / "d.tif")), feedback)
    warned = [w for w in feedback.warnings if "pixels of 1 × 1 metre" in w]
    assert len(warned) == 1 and "0.5 × 0.5 metre" in warned[0]


def test_labels_on_another_grid_are_resampled(qgis_app, rasters, tmp_path):
    feedback = recording_feedback()
    out = tmp_path / "m.pt"
    run("train", dict(TINY, LABELED_IMAGES=[rasters["rgb"]], LABELS=[rasters["label_shifted"]],
                      AUX_TASK="none", DEVICE="cpu", OUTPUT_MODEL=str(out)), feedback)
    assert out.is_file()
    lines = [i for i in feedback.infos if "label_shifted.tif" in i and "resampled" in i]
    assert len(lines) == 1 and "nearest neighbour" in lines[0]


def test_a_misspelt_encoder_is_refused_with_the_closest_names(qgis_app, rasters, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as exc:
        run("train", dict(TINY, LABELED_IMAGES=[rasters["rgb"]], LABELS=[rasters["label"]],
                          AUX_TASK="none", DEVICE="cpu", ENCODER="efficientnet_b0",
                          OUTPUT_MODEL=str(tmp_path / "m.pt")))
    message = str(exc.value)
    assert "ENCODER 'efficientnet_b0'" in message and "Did you mean efficientnet-b0" in message
    assert "Traceback" not in message
    assert list(tmp_path.iterdir()) == []


def test_the_dialog_offers_the_common_encoders_and_any_name_is_accepted(qgis_app):
    from qgis.core import QgsApplication, QgsProcessingContext
    from qgis.gui import QgsGui, QgsProcessingGui
    from qgis.PyQt.QtWidgets import QComboBox

    from berunda.engine.parameters import COMMON_ENCODERS

    alg = QgsApplication.processingRegistry().algorithmById("berunda:train")
    param = alg.parameterDefinition("ENCODER")
    wrapper = QgsGui.processingGuiRegistry().createParameterWidgetWrapper(
        param, QgsProcessingGui.WidgetType.Standard)
    widget = wrapper.createWrappedWidget(QgsProcessingContext())
    assert isinstance(widget, QComboBox)
    assert [widget.itemText(i) for i in range(widget.count())] == COMMON_ENCODERS
    assert wrapper.widgetValue() == "tu-tf_efficientnet_lite0"
    # headless (qgis_process, processing.run, the modeler) any smp name is a valid value
    assert param.checkValueIsAcceptable("tu-convnext_tiny")
    assert "tu-<name>" in alg.shortHelpString() and "efficientnet-b0" in alg.shortHelpString()


def test_the_measured_defaults_are_in_the_help(qgis_app):
    """Issue 28 chose the defaults by measurement (bench/README.md): the help says them."""
    from qgis.core import QgsApplication

    from berunda.engine.config import TrainingConfig

    defaults = TrainingConfig([], [])
    for name in ("train", "compare"):
        alg = QgsApplication.processingRegistry().algorithmById(f"berunda:{name}")
        text = alg.shortHelpString()
        assert alg.parameterDefinition("ENCODER").defaultValue() == defaults.encoder
        assert alg.parameterDefinition("ENCODER_WEIGHTS").defaultValue() == defaults.encoder_weights
        assert "(default: tu-tf_efficientnet_lite0)" in text and "(default: auto)" in text
        assert "installed with Berunda" in text
    train = QgsApplication.processingRegistry().algorithmById("berunda:train")
    assert train.parameterDefinition("AUX_TASK").defaultValue() == defaults.aux_task
    assert f"(default: {defaults.aux_task})" in train.shortHelpString()


def test_bands_that_are_not_band_numbers_are_refused(rgba_model, rasters, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="BANDS '1,x' is not a list of band numbers"):
        run("train", dict(TINY, LABELED_IMAGES=[rasters["rgb"]], LABELS=[rasters["label"]],
                          AUX_TASK="none", DEVICE="cpu", BANDS="1,x",
                          OUTPUT_MODEL=str(tmp_path / "m.pt")))
    with pytest.raises(QgsProcessingException, match="BANDS 3, 3, 1 lists a band twice"):
        run("classify", dict(INPUT=rasters["rgb"], MODEL=rgba_model, DEVICE="cpu", BANDS="3,3,1",
                             OUTPUT=str(tmp_path / "c.tif")))
    assert list(tmp_path.iterdir()) == []
