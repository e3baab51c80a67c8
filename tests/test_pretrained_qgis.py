"""Pretrained encoder weights and fine-tuning end to end through headless qgis_process:
train from a weights file, fine-tune that model on another scene, classify and evaluate
with the fine-tuned model, compare tasks from it; a wrong weights file is refused."""
import hashlib

import pytest
import torch
from rasterio.windows import Window

from helpers import TINY, as_cli, crop, image, label, qgis_process

pytestmark = pytest.mark.slow


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def timm_state(name):
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).state_dict()


def test_weights_file_fine_tune_classify_evaluate_compare(tmp_path):
    from berunda.engine.model_file import load_model

    weights = tmp_path / "resnet18_timm.pth"
    torch.save(timm_state("resnet18"), weights)
    base = tmp_path / "base.pt"
    rc, out, err = qgis_process("berunda:train", "--", *as_cli(dict(
        TINY, LABELED_IMAGES=image("scene1_part1"), LABELS=label("scene1_part1"), AUX_TASK="none",
        ENCODER_WEIGHTS=weights, OUTPUT_MODEL=base)))
    assert rc == 0, err
    assert load_model(str(base)).metadata["initialisation"] == {
        "encoder_weights": "file", "file": weights.name, "sha256": sha256(weights)}

    # fine-tune on another scene (its labels hold classes 1-3, a subset of the base's 1-5)
    tuned = tmp_path / "tuned.pt"
    rc, out, err = qgis_process("berunda:train", "--", *as_cli(dict(
        TINY, LABELED_IMAGES=image("scene2_part1"), LABELS=label("scene2_part1"), AUX_TASK="none",
        INIT_MODEL=base, OUTPUT_MODEL=tuned)))
    assert rc == 0, err
    meta = load_model(str(tuned)).metadata
    parent = meta["initialisation"]["parent"]
    assert parent["file"] == "base.pt" and parent["sha256"] == sha256(base)
    assert parent["task"]["id"] == "none" and parent["classes"]["values"] == [1, 2, 3, 4, 5]
    assert meta["classes"]["values"] == [1, 2, 3, 4, 5]
    assert meta["normalization"] == load_model(str(base)).metadata["normalization"]

    window = Window(576, 448, 128, 128)
    scene = crop(image("scene7_part1"), tmp_path / "s7.tif", window)
    truth = crop(label("scene7_part1"), tmp_path / "s7_label.tif", window)
    classes = tmp_path / "s7_classes.tif"
    rc, out, err = qgis_process("berunda:classify", "--", f"INPUT={scene}", f"MODEL={tuned}",
                                f"OUTPUT={classes}")
    assert rc == 0, err
    assert classes.exists()
    rc, out, err = qgis_process("berunda:evaluate", "--", f"PREDICTION={classes}",
                                f"GROUND_TRUTH={truth}", f"OUTPUT_REPORT={tmp_path / 'r.html'}")
    assert rc == 0, err
    assert 0 <= out["results"]["MEAN_IOU"] <= 100

    rc, out, err = qgis_process("berunda:compare", "--", *as_cli(dict(
        TINY, LABELED_IMAGES=image("scene2_part1"), LABELS=label("scene2_part1"),
        UNLABELED_IMAGES=image("scene3_part1"), INIT_MODEL=base, AUX_TASKS="l1", RUNS=1,
        VALIDATION_IMAGES=scene, VALIDATION_LABELS=truth, OUTPUT_FOLDER=tmp_path / "compared",
        OUTPUT_TABLE=tmp_path / "t.csv", OUTPUT_REPORT=tmp_path / "t.html")))
    assert rc == 0, err
    models = sorted((tmp_path / "compared").glob("*.pt"))
    assert len(models) == 2
    for model in models:
        assert load_model(str(model)).metadata["initialisation"]["parent"]["sha256"] == sha256(base)


def test_weights_of_another_encoder_are_refused(tmp_path):
    weights = tmp_path / "resnet34.pth"
    torch.save(timm_state("resnet34"), weights)
    model = tmp_path / "m.pt"
    rc, _, err = qgis_process("berunda:train", "--", *as_cli(dict(
        TINY, LABELED_IMAGES=image("scene1_part1"), LABELS=label("scene1_part1"), AUX_TASK="none",
        ENCODER_WEIGHTS=weights, OUTPUT_MODEL=model)))
    assert rc != 0
    assert f"ENCODER_WEIGHTS file {weights} does not fit the encoder resnet18" in err
    assert "layer1.2.conv1.weight" in err
    assert "Traceback" not in err
    assert not model.exists()
