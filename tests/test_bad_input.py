"""Issue 6, bad input through the Processing algorithms: every refusal goes through
``processing.run("berunda:<alg>", ...)`` in the real QgsApplication and must give a
QgsProcessingException naming the layer/parameter and the fix, without a traceback,
without leaving an output, checkpoint or temporary file behind, and without touching
an input.  A few faults the algorithms must survive (cancel, nodata, NaN) are run
through the algorithms too; the engine-level ones (SIGKILL, CUDA out of memory, NaN
loss) live in test_engine_training.py — see tests/README.md for the full table.

Rasters are 128x128 crops of the Dubai sample written to a module folder; models
are random resnet18 networks saved with the real model writer (no training), so
the whole file runs in well under a minute on a 2-core CPU.
"""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from helpers import (DATA, TINY, as_cli, patch_engine, qgis_process, read_crop, recording_feedback,
                     write_raster)

SIZE = 128                      # side of the crops
CROP = (0, 560)                 # (row, col) in scene1_part1: classes 2..5 and some nodata
VALUES = [1, 2, 3, 4, 5]
NAMES = ["building", "land", "road", "vegetation", "water"]
COLORS = ["#3C1098", "#8429F6", "#6EC1E4", "#FEDD3A", "#E2A929"]
STATS = {"low": [0.0] * 3, "high": [255.0] * 3, "mean": [100.0] * 3, "std": [50.0] * 3}


# ---- inputs: crops and model files, written once --------------------------------------------





def _model_package(dtype="uint8"):
    from berunda.engine.model_file import ModelPackage
    from berunda.engine.rasters import dtype_family
    from berunda.models.network import build_network, describe_network

    torch.manual_seed(0)
    arch = describe_network(3, len(VALUES), "resnet18", 0, 0)
    net = build_network(arch)
    meta = {"architecture": arch,
            "bands": {"count": 3, "dtype": dtype, "dtype_family": dtype_family(dtype),
                      "nodata": None},
            "normalization": STATS if dtype == "uint8" else
            {"low": [0.0] * 3, "high": [1.0] * 3, "mean": [0.4] * 3, "std": [0.2] * 3},
            "classes": {"values": VALUES, "names": NAMES, "colors": COLORS, "nodata": 0},
            "tile_size": 64, "task": {"id": "none", "params": {}, "lambda": 0.0}}
    return ModelPackage(meta, net.state_dict())


class Evil:
    """Unpickling this runs a shell command; a model loader must never do it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from berunda.engine.model_file import FORMAT_VERSION, save_model

    folder = tmp_path_factory.mktemp("inputs")
    p = {"folder": folder, "marker": str(tmp_path_factory.mktemp("marker") / "pwned")}
    image, geo, _ = read_crop(DATA / "images" / "scene1_part1.tif", *CROP, SIZE)
    label, lgeo, cmap = read_crop(DATA / "labels" / "scene1_part1.tif", *CROP, SIZE)
    assert len(set(np.unique(label)) - {0}) >= 2
    p["image"] = write_raster(folder / "image.tif", image, geo)
    p["label"] = write_raster(folder / "label.tif", label, lgeo, cmap)
    p["image2"] = write_raster(folder / "image2.tif", image[:, ::-1].copy(), geo)
    # four data bands (without PHOTOMETRIC, a 4-band byte GeoTIFF is RGBA: 3 bands + alpha)
    p["image_4band"] = write_raster(folder / "image_4band.tif", np.concatenate([image, image[:1]]),
                                    geo, photometric="MINISBLACK")
    p["image_float"] = write_raster(folder / "image_float.tif", image.astype(np.float32) / 255, geo,
                              nodata=None)
    shifted = dict(lgeo, transform=lgeo["transform"] * rasterio.Affine.translation(10, 0))
    p["label_shifted"] = write_raster(folder / "label_shifted.tif", label, shifted, cmap)
    p["label_extent"] = write_raster(folder / "label_extent.tif", label[:, :96, :96].copy(), lgeo, cmap)
    p["label_crs"] = write_raster(folder / "label_crs.tif", label, lgeo, cmap, crs="EPSG:32641")
    p["label_float"] = write_raster(folder / "label_float.tif", label.astype(np.float32), lgeo)
    p["label_nodata"] = write_raster(folder / "label_nodata.tif", np.zeros_like(label), lgeo, nodata=0)
    p["label_one_class"] = write_raster(folder / "label_one_class.tif",
                                  np.where(label == 0, 0, 4).astype(np.uint8), lgeo, nodata=0)

    # model files
    p["model"] = str(folder / "model.pt")
    save_model(p["model"], _model_package("uint8"))
    p["model_float"] = str(folder / "model_float.pt")
    save_model(p["model_float"], _model_package("float32"))
    payload = torch.load(p["model"], weights_only=True)
    (folder / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "truncated.pt").write_bytes(Path(p["model"]).read_bytes()[:20000])
    torch.save({"state_dict": payload["state_dict"]}, str(folder / "not_berunda.pt"))
    newer = dict(json.loads(payload["berunda"]), format_version=FORMAT_VERSION + 1)
    torch.save(dict(payload, berunda=json.dumps(newer)), str(folder / "newer.pt"))
    header = {k: v for k, v in json.loads(payload["berunda"]).items() if k != "bands"}
    torch.save(dict(payload, berunda=json.dumps(header)), str(folder / "no_bands.pt"))
    torch.save(dict(payload, extra=Evil(p["marker"])), str(folder / "evil.pt"))
    for name in ("garbage", "truncated", "not_berunda", "newer", "no_bands", "evil"):
        p[name] = str(folder / f"{name}.pt")
    p["label_data"], p["label_geo"] = label, lgeo
    return p


def _snapshot(folder):
    """name -> (size, mtime, content hash); large files (the models) by size and mtime only.

    GDAL '.aux.xml' side-cars are left out: QGIS itself writes one (band statistics for
    the default renderer) beside any raster it opens as a layer, as every Processing
    algorithm with a raster input does; the input file itself is never written."""
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".aux.xml"):
            continue
        path = Path(folder, name)
        st = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if st.st_size < 1 << 20 else None
        out[name] = (st.st_size, st.st_mtime_ns, digest)
    return out


def _listing(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in Path(folder).rglob("*")}


@pytest.fixture(autouse=True)
def inputs_untouched(inputs):
    """No test may change, add or remove a file among the inputs or the shared sample data."""
    before, shared = _snapshot(inputs["folder"]), _listing(DATA)
    yield
    assert _snapshot(inputs["folder"]) == before, "an input file was changed or added"
    assert _listing(DATA) == shared, "the shared sample data was changed"
    assert not os.path.exists(inputs["marker"]), "a model file ran code"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- helpers ---------------------------------------------------------------------------------

def run(alg, params, feedback=None):
    import processing
    from qgis.core import QgsProcessingContext

    return processing.run(f"berunda:{alg}", params, context=QgsProcessingContext(),
                          feedback=feedback)


def refused(alg, params, *words):
    """Run, expect a QgsProcessingException whose message holds every word; return it."""
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as exc:
        run(alg, params)
    message = str(exc.value)
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    assert "Traceback" not in message and "File \"" not in message
    return message


def assert_empty(folder, keep=()):
    """Nothing but ``keep`` in the output folder: no output, checkpoint, .partial or side-car."""
    left = sorted(set(os.listdir(folder)) - set(keep))
    assert left == [], f"left behind: {left}"


def train_params(inputs, tmp_path, **overrides):
    params = dict(TINY, LABELED_IMAGES=[inputs["image"]], LABELS=[inputs["label"]],
                  AUX_TASK="none", DEVICE="cpu", OUTPUT_MODEL=str(tmp_path / "m.pt"))
    params.update(overrides)
    return params


def classify_params(inputs, tmp_path, **overrides):
    params = dict(INPUT=inputs["image"], MODEL=inputs["model"], DEVICE="cpu",
                  OUTPUT=str(tmp_path / "classes.tif"))
    params.update(overrides)
    return params


# ---- train: rasters that cannot train --------------------------------------------------------

# id: (overrides, with {key} = an input path; words the message must hold)
TRAIN_DATA_CASES = {
    # a label raster on another grid or extent is resampled (test_algorithm_inputs.py); one
    # that does not overlap its image at all is refused
    "label_not_overlapping": ({"LABELS": ["{label_crs}"]},
                              ["label_crs.tif", "does not overlap", "image.tif", "same order"]),
    "more_images_than_labels": ({"LABELED_IMAGES": ["{image}", "{image2}"]},
                                ["LABELED_IMAGES has 2", "LABELS has 1",
                                 "one label raster per image"]),
    "more_labels_than_images": ({"LABELS": ["{label}", "{label}"]},
                                ["LABELED_IMAGES has 1", "LABELS has 2",
                                 "one label raster per image"]),
    "labeled_band_counts_differ": ({"LABELED_IMAGES": ["{image}", "{image_4band}"],
                                    "LABELS": ["{label}", "{label}"]},
                                   ["image_4band.tif", "4 bands", "same bands"]),
    "unlabeled_band_count_differs": ({"UNLABELED_IMAGES": ["{image_4band}"]},
                                     ["image_4band.tif", "4 bands", "same bands"]),
    "label_not_integer": ({"LABELS": ["{label_float}"]},
                          ["label_float.tif", "float32", "integer", "Translate"]),
    "labels_all_nodata": ({"LABELS": ["{label_nodata}"]},
                          ["label_nodata.tif", "no labelled pixel", "nodata value"]),
    "single_class": ({"LABELS": ["{label_one_class}"]},
                     ["label_one_class.tif", "single class", "at least 2 classes"]),
    "tile_larger_than_every_raster": ({"TILE_SIZE": 160},
                                      ["TILE_SIZE 160", "image.tif", "at most 128"]),
}


def _fill(value, inputs):
    if isinstance(value, list):
        return [_fill(v, inputs) for v in value]
    return value.format(**inputs) if isinstance(value, str) else value


@pytest.mark.parametrize("case", list(TRAIN_DATA_CASES))
def test_train_refuses_bad_rasters(qgis_app, inputs, tmp_path, case):
    overrides, words = TRAIN_DATA_CASES[case]
    refused("train", train_params(inputs, tmp_path, **{k: _fill(v, inputs)
                                                        for k, v in overrides.items()}), *words)
    assert_empty(tmp_path)


# ---- train: parameter values -------------------------------------------------------------------

# QGIS itself refuses values outside a parameter's bounds ("Incorrect parameter value for X")
# before the algorithm runs; the engine refuses the rest with the fix in the message.
TRAIN_PARAMETER_CASES = {
    "lambda_negative": ({"AUX_TASK": "kmeans", "LAMBDA": -0.5}, ["LAMBDA"]),
    "lambda_not_a_number": ({"AUX_TASK": "kmeans", "LAMBDA": "lots"}, ["LAMBDA", "'lots'", "auto"]),
    "confidence_above_1": ({"AUX_TASK": "consistency", "CONFIDENCE": 1.5}, ["CONFIDENCE"]),
    "class_balance_above_1": ({"AUX_TASK": "consistency", "CLASS_BALANCE": 1.5}, ["CLASS_BALANCE"]),
    "alpha_negative": ({"AUX_TASK": "kmeans", "ALPHA": -1.0}, ["ALPHA"]),
    "clusters_below_2": ({"AUX_TASK": "mumford_shah", "CLUSTERS": 1}, ["CLUSTERS"]),
    "permutations_zero": ({"AUX_TASK": "jigsaw", "PERMUTATIONS": 0}, ["PERMUTATIONS"]),
    "permutations_above_1000": ({"AUX_TASK": "jigsaw", "PERMUTATIONS": 1001}, ["PERMUTATIONS"]),
    "tile_not_multiple_of_32": ({"TILE_SIZE": 100},
                                ["TILE_SIZE 100", "multiple of 32", "use 96"]),
    "tile_below_32": ({"TILE_SIZE": 16}, ["TILE_SIZE"]),
}


@pytest.mark.parametrize("case", list(TRAIN_PARAMETER_CASES))
def test_train_refuses_bad_parameter_values(qgis_app, inputs, tmp_path, case):
    overrides, words = TRAIN_PARAMETER_CASES[case]
    refused("train", train_params(inputs, tmp_path, **overrides), *words)
    assert_empty(tmp_path)


# ---- train: outputs and RESUME files -----------------------------------------------------------

def test_train_refuses_an_unwritable_output(qgis_app, inputs, tmp_path):
    folder = tmp_path / "out"   # a "folder" that is a file (a missing folder is created)
    folder.write_text("not a folder")
    out = folder / "m.pt"
    refused("train", train_params(inputs, tmp_path, OUTPUT_MODEL=str(out)),
            "OUTPUT_MODEL", str(folder), "cannot be created")
    assert_empty(tmp_path, keep=["out"])


@pytest.mark.parametrize("target", ["image", "label"])
def test_train_refuses_output_equal_to_an_input(qgis_app, inputs, tmp_path, target):
    image = str(shutil.copy(inputs["image"], tmp_path / "image.tif"))
    label = str(shutil.copy(inputs["label"], tmp_path / "label.tif"))
    before = _snapshot(tmp_path)
    out = {"image": image, "label": label}[target]
    refused("train", train_params(inputs, tmp_path, LABELED_IMAGES=[image], LABELS=[label],
                                  OUTPUT_MODEL=out),
            "OUTPUT_MODEL", out, "would overwrite the input", "choose another file name")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("name, words", [
    ("evil", ["evil.pt", "Refused to load", "could run code"]),
    ("truncated", ["truncated.pt", "not a readable Berunda model", "berunda:train"]),
], ids=["evil", "truncated"])
def test_train_refuses_a_bad_resume_file(qgis_app, inputs, tmp_path, name, words):
    refused("train", train_params(inputs, tmp_path, RESUME=inputs[name]), *words)
    assert_empty(tmp_path)


def test_train_refuses_a_final_model_as_resume_file(qgis_app, inputs, tmp_path):
    refused("train", train_params(inputs, tmp_path, RESUME=inputs["model"]),
            "model.pt", "without optimizer state", ".checkpoint")
    assert_empty(tmp_path)


# ---- classify: model files ---------------------------------------------------------------------

MODEL_FILE_CASES = {
    "garbage": ["garbage.pt", "not a readable Berunda model", "berunda:train"],
    "truncated": ["truncated.pt", "not a readable Berunda model", "truncated", "berunda:train"],
    "not_berunda": ["not_berunda.pt", "not a Berunda model", "berunda:train"],
    "newer": ["newer.pt", "newer Berunda", "model format 2", "Update the Berunda plugin"],
    "no_bands": ["no_bands.pt", "lacks bands", "retrain"],
    "evil": ["evil.pt", "Refused to load", "could run code", "Only load models you trained"],
}


@pytest.mark.parametrize("case", list(MODEL_FILE_CASES))
def test_classify_refuses_a_bad_model_file(qgis_app, inputs, tmp_path, case):
    refused("classify", classify_params(inputs, tmp_path, MODEL=inputs[case],
                                        OUTPUT_PROBABILITIES=str(tmp_path / "p.tif")),
            *MODEL_FILE_CASES[case])
    assert_empty(tmp_path)


# ---- classify: rasters and outputs -------------------------------------------------------------

@pytest.mark.parametrize("name, words", [
    ("image_4band", ["expects 3 bands of uint type", "image_4band.tif has 4 bands",
                     "same bands"]),
    ("image_float", ["expects 3 bands of uint type", "image_float.tif has 3 bands of float",
                     "same bands"]),
], ids=["image_4band", "image_float"])
def test_classify_refuses_bands_the_model_was_not_trained_on(qgis_app, inputs, tmp_path, name,
                                                             words):
    refused("classify", classify_params(inputs, tmp_path, INPUT=inputs[name]), *words)
    assert_empty(tmp_path)


def test_classify_refuses_an_unwritable_output(qgis_app, inputs, tmp_path):
    folder = tmp_path / "out"   # a "folder" that is a file (a missing folder is created)
    folder.write_text("not a folder")
    refused("classify", classify_params(inputs, tmp_path, OUTPUT=str(folder / "c.tif")),
            "output", str(folder), "cannot be created")
    assert_empty(tmp_path, keep=["out"])


@pytest.mark.parametrize("output, words", [
    ("OUTPUT", ["output", "is the input raster", "never overwrites its inputs",
                "Choose another file name"]),
    ("OUTPUT_PROBABILITIES", ["probabilities output", "is the input raster",
                              "Choose another file name"]),
], ids=["OUTPUT", "OUTPUT_PROBABILITIES"])
def test_classify_refuses_output_equal_to_the_input(qgis_app, inputs, tmp_path, output, words):
    source = str(shutil.copy(inputs["image"], tmp_path / "input.tif"))
    before = _snapshot(tmp_path)
    params = classify_params(inputs, tmp_path, INPUT=source)
    params[output] = source
    refused("classify", params, source, *words)
    assert _snapshot(tmp_path) == before


def test_classify_refuses_two_outputs_in_one_file(qgis_app, inputs, tmp_path):
    out = str(tmp_path / "same.tif")
    refused("classify", classify_params(inputs, tmp_path, OUTPUT=out, OUTPUT_CONFIDENCE=out),
            "same file", out, "its own name")
    assert_empty(tmp_path)


def test_classify_refuses_the_model_file_as_output(qgis_app, inputs, tmp_path):
    model = str(shutil.copy(inputs["model"], tmp_path / "model.pt"))
    before = _snapshot(tmp_path)
    refused("classify", classify_params(inputs, tmp_path, MODEL=model, OUTPUT=model),
            "OUTPUT", "GeoTIFF", ".tif")
    assert _snapshot(tmp_path) == before


# ---- evaluate ----------------------------------------------------------------------------------

def evaluate_params(inputs, tmp_path, **overrides):
    params = dict(PREDICTION=inputs["label"], GROUND_TRUTH=inputs["label"],
                  OUTPUT_REPORT=str(tmp_path / "report.html"),
                  OUTPUT_TABLE=str(tmp_path / "table.csv"))
    params.update(overrides)
    return params


@pytest.mark.parametrize("truth, words", [
    ("label_shifted", ["label.tif", "label_shifted.tif", "not on the grid", "Warp"]),
    ("label_extent", ["label.tif", "label_extent.tif", "not on the grid", "size", "Warp"]),
    ("label_crs", ["label_crs.tif", "different CRS", "Warp"]),
], ids=["label_shifted", "label_extent", "label_crs"])
def test_evaluate_refuses_rasters_on_different_grids(qgis_app, inputs, tmp_path, truth, words):
    refused("evaluate", evaluate_params(inputs, tmp_path, GROUND_TRUTH=inputs[truth]), *words)
    assert_empty(tmp_path)


@pytest.mark.parametrize("output", ["OUTPUT_REPORT", "OUTPUT_TABLE"])
def test_evaluate_refuses_output_equal_to_an_input(qgis_app, inputs, tmp_path, output):
    prediction = str(shutil.copy(inputs["label"], tmp_path / "prediction.tif"))
    truth = str(shutil.copy(inputs["label"], tmp_path / "truth.tif"))
    before = _snapshot(tmp_path)
    params = evaluate_params(inputs, tmp_path, PREDICTION=prediction, GROUND_TRUTH=truth)
    params[output] = truth
    refused("evaluate", params, output, truth, "would overwrite an input",
            "choose another file name")
    assert _snapshot(tmp_path) == before


def test_evaluate_refuses_an_unwritable_output(qgis_app, inputs, tmp_path):
    folder = tmp_path / "out"   # a "folder" that is a file (a missing folder is created)
    folder.write_text("not a folder")
    refused("evaluate", evaluate_params(inputs, tmp_path, OUTPUT_REPORT=str(folder / "r.html")),
            "OUTPUT_REPORT", str(folder), "cannot be created")
    assert_empty(tmp_path, keep=["out"])


# ---- survived: cancel, nodata, NaN -------------------------------------------------------------

def test_classify_cancelled_from_feedback_leaves_no_output(qgis_app, inputs, tmp_path):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    feedback = QgsProcessingFeedback()   # cancels once the first tiles are done
    feedback.progressChanged.connect(lambda p: feedback.cancel() if p > 0 else None)
    params = classify_params(inputs, tmp_path, BATCH_SIZE=1, TILE_SIZE=32, OVERLAP=8,
                             OUTPUT_PROBABILITIES=str(tmp_path / "p.tif"),
                             OUTPUT_CONFIDENCE=str(tmp_path / "k.tif"))
    with pytest.raises(QgsProcessingException, match="cancelled; no output was written"):
        run("classify", params, feedback)
    assert feedback.isCanceled()
    assert_empty(tmp_path)


def _classify_and_read(inputs, tmp_path, source, model):
    result = run("classify", classify_params(inputs, tmp_path, INPUT=source, MODEL=model,
                                             TILE_SIZE=64, OVERLAP=0))
    with rasterio.open(result["OUTPUT"]) as ds:
        return ds.read(1), ds.read_masks(1), ds.nodata


def test_classify_all_nodata_windows_become_nodata(qgis_app, inputs, tmp_path):
    image, geo, _ = read_crop(inputs["image"], 0, 0, SIZE)
    image[:, :, 64:] = 0                      # two whole 64-px tiles of nodata
    image[:, :10, :10] = 0                    # and a few pixels
    source = write_raster(tmp_path / "holes.tif", image, dict(geo, nodata=0))
    classes, mask, nodata = _classify_and_read(inputs, tmp_path, source, inputs["model"])
    assert nodata == 0
    assert (classes[:, 64:] == 0).all() and (mask[:, 64:] == 0).all()
    invalid = (image == 0).all(axis=0)        # GDAL's rule: nodata in every band
    np.testing.assert_array_equal(classes == 0, invalid)
    np.testing.assert_array_equal(mask == 0, invalid)
    assert np.isin(classes[~invalid], VALUES).all()


def test_classify_nan_in_float32_bands_is_nodata(qgis_app, inputs, tmp_path):
    image, geo, _ = read_crop(inputs["image_float"], 0, 0, SIZE)
    image[0, 20:40, 30:50] = np.nan           # NaN in one band only
    image[:, :, 96:] = np.nan                 # a NaN strip in every band
    image[2, 100, 5] = np.inf
    source = write_raster(tmp_path / "nan.tif", image, dict(geo, nodata=None))
    classes, mask, nodata = _classify_and_read(inputs, tmp_path, source, inputs["model_float"])
    invalid = ~np.isfinite(image).all(axis=0)
    np.testing.assert_array_equal(classes == nodata, invalid)
    np.testing.assert_array_equal(mask == 0, invalid)
    assert np.isin(classes[~invalid], VALUES).all()


def test_classify_rounds_a_tile_size_that_is_not_a_multiple_of_32(qgis_app, inputs, tmp_path):
    feedback = recording_feedback()
    result = run("classify", classify_params(inputs, tmp_path, TILE_SIZE=50), feedback)
    assert any("Tile size 50 is not a multiple of 32" in line and "using 64" in line
               for line in feedback.infos)
    assert os.path.isfile(result["OUTPUT"])


def test_train_on_float32_with_nan_and_all_nodata_windows(qgis_app, inputs, tmp_path):
    """Undeclared NaN pixels are nodata; windows that are entirely NaN are redrawn."""
    from berunda.engine.model_file import load_model

    image, geo, _ = read_crop(inputs["image_float"], 0, 0, SIZE)
    image[:, np.random.default_rng(0).random(image.shape[1:]) < 0.03] = np.nan
    image[:, :, 64:] = np.nan                 # every window of the right half is all nodata
    source = write_raster(tmp_path / "nan.tif", image, dict(geo, nodata=None))
    result = run("train", train_params(inputs, tmp_path, LABELED_IMAGES=[source],
                                       UNLABELED_IMAGES=[source], AUX_TASK="l1"))
    assert np.isfinite(result["FINAL_LOSS"])
    meta = load_model(result["OUTPUT_MODEL"]).metadata
    assert meta["bands"]["dtype"] == "float32"
    assert all(np.isfinite(v).all() for v in meta["normalization"].values())


NAN_FROM_EPOCH_2 = """
import berunda.engine.trainer as trainer
from berunda.models.tasks import TASKS
task, original, calls = TASKS["kmeans"], TASKS["kmeans"].loss, [0]

def loss(self, out, batch):   # NaN from the first step of epoch 2 of 3 on (2 steps per epoch)
    calls[0] += 1
    value = original(self, out, batch)
    return value * float("nan") if calls[0] > 2 else value

task.loss = loss
"""


def test_train_nan_loss_stops_and_keeps_the_last_good_checkpoint(qgis_app, inputs, tmp_path,
                                                                 monkeypatch):
    from qgis.core import QgsProcessingException

    from berunda.engine.model_file import load_model

    patch_engine(monkeypatch, tmp_path.parent / f"{tmp_path.name}_patch", NAN_FROM_EPOCH_2)
    checkpoint = str(tmp_path / "m.checkpoint.pt")
    with pytest.raises(QgsProcessingException) as exc:
        run("train", train_params(inputs, tmp_path, AUX_TASK="kmeans", EPOCHS=3,
                                  UNLABELED_IMAGES=[inputs["image2"]]))
    message = str(exc.value)
    for word in ("NaN", "epoch 2, step 1", "LAMBDA", "LEARNING_RATE", "nodata", checkpoint,
                 "(epoch 1)"):
        assert word in message, f"{word!r} not in: {message}"
    assert "Traceback" not in message
    assert_empty(tmp_path, keep=["m.checkpoint.pt"])
    package = load_model(checkpoint)
    assert package.checkpoint["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in package.state_dict.values()
               if t.is_floating_point())


OOM_ONCE = """
import torch
from berunda.models.network import BerundaNetLate
original, raised = BerundaNetLate.forward, []

def forward(self, x):   # the first batch of 2 runs out of CUDA memory (simulated)
    if x.shape[0] > 1 and not raised:
        raised.append(x.shape[0])
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
    return original(self, x)

BerundaNetLate.forward = forward
"""


def test_train_out_of_memory_halves_the_batch(qgis_app, inputs, tmp_path, monkeypatch):
    from berunda.engine.model_file import load_model

    patch_engine(monkeypatch, tmp_path.parent / f"{tmp_path.name}_patch", OOM_ONCE)
    feedback = recording_feedback()
    result = run("train", train_params(inputs, tmp_path), feedback)
    assert any("out of memory" in line and "passes of 1 " in line for line in feedback.infos)
    history = load_model(result["OUTPUT_MODEL"]).metadata["history"]
    assert [r["batch_size"] for r in history] == [1]
    assert np.isfinite(result["FINAL_LOSS"])


# ---- headless ----------------------------------------------------------------------------------

def test_qgis_process_refuses_a_bad_model_without_traceback(inputs, tmp_path):
    out = tmp_path / "c.tif"
    params = dict(INPUT=inputs["image"], MODEL=inputs["evil"], DEVICE="cpu", OUTPUT=out)
    rc, _, err = qgis_process("berunda:classify", "--", *as_cli(params), timeout=300)
    assert rc != 0
    assert "evil.pt" in err and "could run code" in err
    assert "Traceback" not in err
    assert_empty(tmp_path)
