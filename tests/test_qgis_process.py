"""End to end through headless qgis_process, as a user or a script runs it."""
import pytest

from helpers import TINY, as_cli, image, label, qgis_process

TASKS = ["none", "l1", "l2", "kmeans", "mumford_shah", "inpainting", "jigsaw", "consistency"]
PAPER_LAMBDA = {"none": 0.0, "l1": 0.5, "l2": 5.0, "kmeans": 1.0, "mumford_shah": 1.0,
                "inpainting": 5.0, "jigsaw": 0.5, "consistency": 1.0}


def test_list_shows_the_four_algorithms():
    import subprocess

    from helpers import REPO

    out = subprocess.run([str(REPO / "scripts" / "qgis_process"), "list"], capture_output=True,
                         text=True, timeout=300).stdout
    for alg in ("berunda:train", "berunda:classify", "berunda:evaluate", "berunda:compare"):
        assert alg in out


@pytest.mark.parametrize("task", TASKS)
def test_train_every_task_on_real_imagery(task, tmp_path):
    from berunda.engine.model_file import load_model

    model = tmp_path / f"{task}.pt"
    params = dict(TINY, LABELED_IMAGES=[image("scene1_part1")], LABELS=[label("scene1_part1")],
                  UNLABELED_IMAGES=[image("scene2_part1"), image("scene3_part1")],
                  AUX_TASK=task, LAMBDA=PAPER_LAMBDA[task], OUTPUT_MODEL=model)
    rc, out, err = qgis_process("berunda:train", "--", *as_cli(params))
    assert rc == 0, err
    results = out["results"]
    assert results["OUTPUT_MODEL"] == str(model)
    assert results["FINAL_LOSS"] == pytest.approx(
        results["FINAL_SUPERVISED_LOSS"] + PAPER_LAMBDA[task] * results["FINAL_AUXILIARY_LOSS"])
    meta = load_model(str(model)).metadata
    assert meta["task"]["id"] == task
    assert meta["task"]["lambda"] == PAPER_LAMBDA[task]
    assert [r["lambda"] for r in meta["history"]] == [PAPER_LAMBDA[task]]
    assert meta["classes"]["names"] == ["building", "land", "road", "vegetation", "water"]
    assert meta["training"]["config"]["unlabeled_images"] == [image("scene2_part1"),
                                                             image("scene3_part1")]


def test_train_consistency_with_auto_lambda_records_the_confident_share(tmp_path):
    """AUX_TASK=consistency with LAMBDA empty (auto) and a low CONFIDENCE, an EMA teacher."""
    from berunda.engine.model_file import load_model

    model = tmp_path / "consistency.pt"
    params = dict(TINY, LABELED_IMAGES=[image("scene1_part1")], LABELS=[label("scene1_part1")],
                  UNLABELED_IMAGES=[image("scene2_part1")], AUX_TASK="consistency",
                  CONFIDENCE=0.2, EMA_DECAY=0.9, CLASS_BALANCE=0.5, EPOCHS=2, OUTPUT_MODEL=model)
    rc, out, err = qgis_process("berunda:train", "--", *as_cli(params))
    assert rc == 0, err
    meta = load_model(str(model)).metadata
    assert meta["task"]["lambda"] == "auto"
    assert meta["task"]["params"] == {"confidence": 0.2, "ema_decay": 0.9, "class_balance": 0.5}
    shares = [r["confident_share"] for r in meta["history"]]
    assert len(shares) == 2 and all(0 < s <= 1 for s in shares)
    assert "confident pixels" in err


def test_bad_input_fails_cleanly_without_traceback(tmp_path):
    model = tmp_path / "m.pt"
    params = dict(TINY, LABELED_IMAGES=[image("scene1_part1")], LABELS=[label("scene1_part2")],
                  AUX_TASK="kmeans", OUTPUT_MODEL=model)
    rc, _, err = qgis_process("berunda:train", "--", *as_cli(params))
    assert rc != 0
    assert "scene1_part2.tif" in err and "does not overlap" in err
    assert "Traceback" not in err
    assert not model.exists()
