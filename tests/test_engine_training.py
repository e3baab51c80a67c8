"""The training engine end to end, without QGIS: real (tiny) training runs on the
Dubai sample rasters and on small crops of them written to tmp_path.

Tiny settings everywhere (resnet18, 64-px tiles, batches of 2, 4 samples per
epoch, 1-3 epochs, CPU) so that a run takes about a second; runs that several
tests compare are shared through module-scoped fixtures.
"""
import glob
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rasterio
import torch

from conftest import PLUGINS_DIR, dubai_pair
from helpers import read_crop, write_raster

from berunda.engine.config import TrainingConfig
from berunda.engine.errors import (DataError, InvalidParameterError, ModelFileError,
                                   NonFiniteLossError, OutputError, RasterError,
                                   TrainingCancelled)
from berunda.engine.labels import (POLYGON_LABEL_NODATA, ClassMapper, rasterize_polygons,
                                   scan_classes)
from berunda.engine.lr_schedule import learning_rate_at
from berunda.engine.model_file import load_model
from berunda.engine.normalization import compute_statistics, normalize
from berunda.engine.progress import Reporter
from berunda.engine.rasters import read_window, valid_mask
from berunda.engine.sampling import WindowSampler
from berunda.engine.trainer import checkpoint_path_for, train
from berunda.models import IGNORE_INDEX
from berunda.models.network import BerundaNetLate
from berunda.models.tasks import TASKS


TINY = dict(encoder="resnet18", encoder_weights="none", tile_size=64, batch_size=2, samples_per_epoch=4, epochs=1,
            device="cpu")
DUBAI_NAMES = ["building", "land", "road", "vegetation", "water"]
DUBAI_COLORS = ["#3C1098", "#8429F6", "#6EC1E4", "#FEDD3A", "#E2A929"]   # from the colour table
CROP = 160   # side of the crops written to tmp_path


# ---- helpers ---------------------------------------------------------------------------------

class LogReporter(Reporter):
    """Keeps the log lines and the progress; cancels once progress passes ``cancel_after``."""

    def __init__(self, cancel_after=None):
        self.lines, self.fractions, self.cancel_after = [], [], cancel_after

    def info(self, message):
        self.lines.append(message)

    def progress(self, fraction):
        self.fractions.append(fraction)

    def cancelled(self):
        return (self.cancel_after is not None and bool(self.fractions)
                and self.fractions[-1] > self.cancel_after)


def make_config(labeled, labels, unlabeled=(), **kw):
    return TrainingConfig(list(labeled), list(labels), unlabeled_images=list(unlabeled),
                          **{**TINY, **kw})


def dubai_config(**kw):
    img, lab = dubai_pair("scene1_part1")
    unlabeled = [dubai_pair("scene2_part1")[0], dubai_pair("scene3_part1")[0]]
    return make_config([img], [lab], unlabeled, **kw)


def weights(path):
    return load_model(str(path)).state_dict


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def assert_same_parameters_recalibrated_bn(checkpoint, final):
    """The final model = the last checkpoint's weights with batch-norm statistics
    recomputed for those weights (engine.batchnorm)."""
    assert checkpoint.keys() == final.keys()
    params = [k for k in final if not k.endswith(BN_BUFFERS)]
    assert not [k for k in params if not torch.equal(checkpoint[k], final[k])]
    stats = [k for k in final if k.endswith("running_mean")]
    assert stats and all(not torch.equal(checkpoint[k], final[k]) for k in stats)


def assert_nothing_written(out):
    folder = os.path.dirname(str(out))
    assert not os.path.exists(out)
    assert not os.path.exists(checkpoint_path_for(str(out)))
    assert not glob.glob(os.path.join(folder, ".*.partial")), "temporary file left behind"


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "berunda-prefetch" and t.is_alive()]


def strip_timing(history):
    return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in history]


# ---- fixtures --------------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """Small crops of scene1_part1 (classes 2, 3, 4, 5 and some nodata) written as GeoTIFFs."""
    folder = tmp_path_factory.mktemp("crops")
    img, lab = dubai_pair("scene1_part1")
    image, geo, _ = read_crop(img, 0, 560, CROP)
    label, lgeo, lcmap = read_crop(lab, 0, 560, CROP)
    other, ogeo, _ = read_crop(img, 320, 0, CROP)
    paths = {
        "folder": folder,
        "image": write_raster(folder / "image.tif", image, geo),
        "label": write_raster(folder / "label.tif", label, lgeo, lcmap),
        "unlabeled": write_raster(folder / "unlabeled.tif", other, ogeo),
        "image_u16": write_raster(folder / "image_u16.tif", image.astype(np.uint16) * 257, geo),
        "image_data": image, "label_data": label, "geo": geo, "label_geo": lgeo,
    }
    return paths


@pytest.fixture(scope="module")
def resume_runs(tmp_path_factory):
    """jigsaw (random task preparation, classifier head), 2 epochs: straight, the same seed
    again, another seed, and 1 epoch resumed to 2."""
    folder = tmp_path_factory.mktemp("resume")
    cfg = dict(aux_task="jigsaw", permutations=30, seed=3)
    runs = {}
    runs["straight"] = train(dubai_config(epochs=2, **cfg), str(folder / "straight.pt"))
    runs["again"] = train(dubai_config(epochs=2, **cfg), str(folder / "again.pt"))
    runs["other_seed"] = train(dubai_config(epochs=2, **{**cfg, "seed": 4}),
                               str(folder / "other_seed.pt"))
    first = train(dubai_config(epochs=1, **cfg), str(folder / "first.pt"))
    runs["first"] = first
    log = LogReporter()
    runs["resumed"] = train(dubai_config(epochs=2, **cfg), str(folder / "resumed.pt"), log,
                            resume=first.checkpoint_path)
    runs["resumed_log"] = log.lines
    with pytest.MonkeyPatch.context() as mp:   # the tiles read by 3 threads, as on a GPU
        mp.setenv("BERUNDA_READ_WORKERS", "3")
        log = LogReporter()
        runs["threads"] = train(dubai_config(epochs=2, **cfg), str(folder / "threads.pt"), log)
        runs["threads_log"] = log.lines
    runs["config"] = cfg
    return runs


# ---- 1. every task trains; the model file describes itself ------------------------------------

PAPER_LAMBDA = {"none": 0.0, "l1": 0.5, "l2": 5.0, "kmeans": 1.0, "mumford_shah": 1.0,
                "inpainting": 5.0, "jigsaw": 0.5, "consistency": 1.0}
EXPECTED_PARAMS = {
    "none": {}, "l1": {}, "l2": {},
    "kmeans": {"alpha": 1.0, "clusters": 10},
    "mumford_shah": {"alpha": 1.0, "clusters": 10},
    "inpainting": {"mask_size": 16, "supervision": "ignore", "normalization": "pixels"},
    "jigsaw": {"permutations": 100, "unshuffled_share": 0.3, "selection": "maxmin",
               "supervision": "labeled_ordered"},
    "consistency": {"confidence": 0.95, "ema_decay": 0.0, "class_balance": 0.2},
}
EXPECTED_HEADS = {   # (aux_channels, aux_classes) for 3 bands
    "none": (0, 0), "l1": (3, 0), "l2": (3, 0), "kmeans": (10, 0), "mumford_shah": (10, 0),
    "inpainting": (3, 0), "jigsaw": (0, 101), "consistency": (0, 0),
}


def test_every_task_is_tested():
    assert set(TASKS) == set(PAPER_LAMBDA)


@pytest.mark.parametrize("task_id", list(PAPER_LAMBDA))
def test_each_task_trains_and_writes_a_complete_model(task_id, tmp_path):
    extra = {"mask_size": 16} if task_id == "inpainting" else {}
    # the paper's λ given explicitly (LAMBDA=auto, the default, is tested in
    # test_engine_balance.py): the loss identity below is then exact
    cfg = dubai_config(aux_task=task_id, seed=11, lam=PAPER_LAMBDA[task_id], **extra)
    out = tmp_path / f"{task_id}.pt"
    log = LogReporter()
    result = train(cfg, str(out), log)

    assert result.model_path == str(out) and out.is_file()
    assert os.path.isfile(result.checkpoint_path)
    assert log.fractions and log.fractions[-1] == pytest.approx(1.0)
    package = load_model(str(out))
    assert package.checkpoint is None
    meta = package.metadata
    arch = meta["architecture"]
    assert arch["name"] == "BerundaNet-late" and arch["encoder"] == "resnet18"
    assert (arch["in_channels"], arch["num_classes"]) == (3, 5)
    assert (arch["aux_channels"], arch["aux_classes"]) == EXPECTED_HEADS[task_id]
    package.build_network()   # the weights match the declared architecture

    assert meta["bands"]["count"] == 3 and meta["bands"]["dtype"] == "uint8"
    assert meta["bands"]["dtype_family"] == "uint"
    norm = meta["normalization"]
    assert set(norm) == {"low", "high", "mean", "std"}
    assert all(len(v) == 3 and all(math.isfinite(x) for x in v) for v in norm.values())
    assert all(0 <= lo < hi <= 255 for lo, hi in zip(norm["low"], norm["high"]))

    classes = meta["classes"]
    assert classes["values"] == [1, 2, 3, 4, 5]
    assert classes["names"] == DUBAI_NAMES
    assert classes["colors"] == DUBAI_COLORS
    assert classes["nodata"] == 0
    assert len(classes["pixel_counts"]) == 5 and all(n > 0 for n in classes["pixel_counts"])

    assert meta["tile_size"] == 64
    task = meta["task"]
    assert task["id"] == task_id
    assert task["params"] == EXPECTED_PARAMS[task_id]
    assert task["lambda"] == PAPER_LAMBDA[task_id] and task["lambda_method"] == "fixed"
    assert task["mode"] == ("supervised" if task_id == "none" else "semi-supervised")

    training = meta["training"]
    assert training["seed"] == 11 and training["config"]["seed"] == 11
    assert TrainingConfig.from_dict(training["config"]) == cfg
    assert training["epochs_done"] == 1 and training["device"] == "cpu"
    assert len(meta["history"]) == 1
    record = meta["history"][0]
    # tiles per forward pass: labeled + unlabeled together for the semi-supervised tasks
    assert record["epoch"] == 1 and record["batch_size"] == (2 if task_id == "none" else 4)
    assert math.isfinite(record["loss"]) and record["loss"] > 0
    assert record["loss"] == pytest.approx(record["supervised"] + PAPER_LAMBDA[task_id]
                                           * record["auxiliary"], rel=1e-6)
    assert record["lambda"] == PAPER_LAMBDA[task_id]
    if task_id == "none":
        assert record["auxiliary"] == 0.0
    elif task_id == "consistency":   # no pixel may be confident yet after two steps
        assert record["auxiliary"] >= 0 and 0 <= record["confident_share"] <= 1
    else:
        assert record["auxiliary"] > 0
    assert 0 <= record["train_accuracy"] <= 1
    versions = meta["versions"]
    for key in ("berunda", "python", "torch", "segmentation-models-pytorch", "rasterio", "numpy"):
        assert versions.get(key), key
    assert meta["created"]

    ckpt = load_model(result.checkpoint_path)
    assert ckpt.checkpoint["epoch"] == 1 and "optimizer" in ckpt.checkpoint
    assert_same_parameters_recalibrated_bn(ckpt.state_dict, package.state_dict)


def test_explicit_lambda_is_recorded_and_zero_means_supervised(tmp_path):
    out = tmp_path / "l2_zero.pt"
    train(dubai_config(aux_task="l2", lam=0.0), str(out))
    meta = load_model(str(out)).metadata
    assert meta["task"]["lambda"] == 0.0 and meta["task"]["mode"] == "supervised"
    assert meta["history"][0]["auxiliary"] == 0.0
    out = tmp_path / "l1_quarter.pt"
    train(dubai_config(aux_task="l1", lam=0.25), str(out))
    meta = load_model(str(out)).metadata
    assert meta["task"]["lambda"] == 0.25 and meta["task"]["mode"] == "semi-supervised"


@pytest.mark.parametrize("loss_id", ["ce", "weighted_ce"])
def test_a_task_gets_the_supervised_loss_class_weights(tmp_path, monkeypatch, loss_id):
    """The trainer hands every task the supervised loss's class weights (consistency weighs
    its pseudo-labels with them): median-frequency weights for weighted_ce, None for ce."""
    from berunda.models.losses import median_frequency_weights
    from berunda.models.tasks.consistency import ConsistencyTask

    given = []
    original = ConsistencyTask.use_class_weights
    monkeypatch.setattr(ConsistencyTask, "use_class_weights",
                        lambda self, w: (given.append(w), original(self, w)))
    result = train(dubai_config(aux_task="consistency", supervised_loss=loss_id, epochs=1),
                   str(tmp_path / "m.pt"))
    counts = load_model(result.model_path).metadata["classes"]["pixel_counts"]
    assert len(given) == 1
    if loss_id == "ce":
        assert given[0] is None
    else:
        assert torch.equal(given[0], median_frequency_weights(counts))


def test_poly_schedule_lowers_the_rate_step_by_step(tmp_path):
    cfg = dubai_config(epochs=2, learning_rate=1e-3, lr_schedule="poly")
    steps = math.ceil(cfg.samples_per_epoch / cfg.batch_size)
    assert learning_rate_at(cfg, 1, 0, steps) == 1e-3
    assert learning_rate_at(cfg, 2, 0, steps) == pytest.approx(1e-3 * 0.5 ** 0.9)
    last = learning_rate_at(cfg, 2, steps - 1, steps)
    assert last == pytest.approx(1e-3 * (1 / (2 * steps)) ** 0.9)
    constant = dubai_config(epochs=2, learning_rate=1e-3)
    assert {learning_rate_at(constant, e, s, steps) for e in (1, 2) for s in range(steps)} == {1e-3}
    # the optimiser took its last step with the last rate; the model records the schedule
    result = train(cfg, str(tmp_path / "poly.pt"))
    optimizer = load_model(result.checkpoint_path).checkpoint["optimizer"]
    assert optimizer["param_groups"][0]["lr"] == pytest.approx(last)
    assert load_model(result.model_path).metadata["training"]["config"]["lr_schedule"] == "poly"


# ---- 2. determinism and resume ---------------------------------------------------------------

def test_resumed_run_equals_uninterrupted_run(resume_runs):
    straight, resumed = resume_runs["straight"], resume_runs["resumed"]
    assert_same_weights(weights(straight.model_path), weights(resumed.model_path))
    assert len(resumed.history) == 2
    assert strip_timing(resumed.history) == strip_timing(straight.history)
    assert any("Resuming from" in line and "after epoch 1" in line
               for line in resume_runs["resumed_log"])
    meta = load_model(resumed.model_path).metadata
    assert meta["training"]["epochs_done"] == 2 and len(meta["history"]) == 2


def test_one_epoch_differs_from_two(resume_runs):
    first = weights(resume_runs["first"].checkpoint_path)
    second = weights(resume_runs["straight"].model_path)
    assert any(not torch.equal(first[k], second[k]) for k in first)


def test_same_seed_same_weights_other_seed_other_weights(resume_runs):
    straight = weights(resume_runs["straight"].model_path)
    assert_same_weights(straight, weights(resume_runs["again"].model_path))
    other = weights(resume_runs["other_seed"].model_path)
    assert any(not torch.equal(straight[k], other[k]) for k in straight)


def test_tiles_read_by_several_threads_train_the_same_weights(resume_runs):
    """Each step's tiles come from the step's own random stream, so 3 reading threads
    (BERUNDA_READ_WORKERS, the GPU default is up to 4) give the one-thread weights."""
    threads = resume_runs["threads"]
    assert any("tiles read by 3 threads" in line for line in resume_runs["threads_log"])
    assert_same_weights(weights(resume_runs["straight"].model_path), weights(threads.model_path))
    assert strip_timing(threads.history) == strip_timing(resume_runs["straight"].history)
    assert not prefetch_threads()


def test_a_bad_reading_thread_count_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("BERUNDA_READ_WORKERS", "many")
    with pytest.raises(InvalidParameterError, match="BERUNDA_READ_WORKERS"):
        train(dubai_config(epochs=1), str(tmp_path / "m.pt"))
    assert_nothing_written(tmp_path / "m.pt")


def test_resume_from_final_model_is_refused(resume_runs, tmp_path):
    final = resume_runs["straight"].model_path
    out = tmp_path / "from_final.pt"
    with pytest.raises(ModelFileError) as exc:
        train(dubai_config(epochs=3, **resume_runs["config"]), str(out), resume=final)
    assert "RESUME" in str(exc.value) and final in str(exc.value)
    assert_nothing_written(out)


def test_resume_without_more_epochs_is_refused(resume_runs, tmp_path):
    ckpt = resume_runs["straight"].checkpoint_path
    out = tmp_path / "no_more.pt"
    with pytest.raises(InvalidParameterError) as exc:
        train(dubai_config(epochs=2, **resume_runs["config"]), str(out), resume=ckpt)
    assert "EPOCHS" in str(exc.value) and ckpt in str(exc.value)
    assert_nothing_written(out)


# ---- 3. cancel -------------------------------------------------------------------------------

def test_cancel_keeps_last_checkpoint_and_resume_continues_exactly(resume_runs, tmp_path):
    out = tmp_path / "cancelled.pt"
    ckpt = checkpoint_path_for(str(out))
    # 3 epochs of 2 steps: progress passes 1/3 after the first step of epoch 2.
    reporter = LogReporter(cancel_after=1 / 3 + 1e-9)
    with pytest.raises(TrainingCancelled) as exc:
        train(dubai_config(epochs=3, **resume_runs["config"]), str(out), reporter)
    message = str(exc.value)
    assert ckpt in message and "epoch 2" in message and "RESUME" in message
    assert not prefetch_threads()   # the tile reader stopped before the rasters were closed
    assert not out.exists()
    assert len(reporter.fractions) == 3   # cancelled at the second step of epoch 2
    package = load_model(ckpt)
    assert package.checkpoint["epoch"] == 1 and len(package.metadata["history"]) == 1
    # the epoch-1 checkpoint is untouched by the step taken in epoch 2:
    assert_same_weights(package.state_dict, weights(resume_runs["first"].checkpoint_path))

    resumed = train(dubai_config(epochs=2, **resume_runs["config"]), str(out), resume=ckpt)
    assert_same_weights(weights(resumed.model_path), weights(resume_runs["straight"].model_path))


def test_cancel_right_after_resuming_names_the_resumed_checkpoint(resume_runs, tmp_path):
    """Resumed into another output: before its first checkpoint, the file to RESUME from is
    still the one the run resumed from (not 'the first epoch', not a missing file)."""
    start = resume_runs["first"].checkpoint_path
    out = tmp_path / "elsewhere.pt"
    with pytest.raises(TrainingCancelled) as exc:
        train(dubai_config(epochs=3, **resume_runs["config"]), str(out),
              LogReporter(cancel_after=0.0), resume=start)
    message = str(exc.value)
    assert "epoch 2" in message and start in message and "first epoch" not in message
    assert_nothing_written(out)
    assert load_model(start).checkpoint["epoch"] == 1


def test_nan_right_after_resuming_names_the_resumed_checkpoint(resume_runs, tmp_path,
                                                                monkeypatch):
    monkeypatch.setattr(TASKS["jigsaw"], "loss",
                        lambda self, out, batch: out.cls.sum() * float("nan"))
    start = resume_runs["first"].checkpoint_path
    out = tmp_path / "elsewhere.pt"
    with pytest.raises(NonFiniteLossError) as exc:
        train(dubai_config(epochs=3, **resume_runs["config"]), str(out), resume=start)
    message = str(exc.value)
    assert "epoch 2" in message and "LAMBDA" in message and start in message
    assert checkpoint_path_for(str(out)) not in message
    assert_nothing_written(out)


def test_cancel_in_first_epoch_leaves_nothing(tmp_path):
    out = tmp_path / "cancel_first.pt"
    with pytest.raises(TrainingCancelled) as exc:
        train(dubai_config(epochs=2), str(out), LogReporter(cancel_after=0.0))
    assert "first epoch" in str(exc.value)
    assert_nothing_written(out)


# ---- 4. killed with SIGKILL ------------------------------------------------------------------

KILL_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
from berunda.engine.config import TrainingConfig
from berunda.engine.trainer import train
train(TrainingConfig(**json.loads(sys.argv[2])), sys.argv[3])
"""


def test_sigkill_leaves_a_usable_checkpoint(tmp_path):
    out = tmp_path / "killed.pt"
    ckpt = checkpoint_path_for(str(out))
    cfg = dubai_config(aux_task="l1", epochs=50)
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(PLUGINS_DIR),
                             json.dumps(cfg.to_dict()), str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(ckpt):
            if proc.poll() is not None:
                pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint after 120 s")
            time.sleep(0.02)
        time.sleep(0.3)   # somewhere in a later epoch, possibly while writing
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()

    package = load_model(ckpt)
    done = package.checkpoint["epoch"]
    assert 1 <= done < 50
    assert package.metadata["training"]["epochs_done"] == done
    assert [r["epoch"] for r in package.metadata["history"]] == list(range(1, done + 1))
    package.build_network()

    resumed = train(dubai_config(aux_task="l1", epochs=done + 1), str(out), resume=ckpt)
    assert [r["epoch"] for r in resumed.history] == list(range(1, done + 2))
    assert load_model(str(out)).metadata["training"]["epochs_done"] == done + 1


# ---- 5. CUDA out of memory -------------------------------------------------------------------

@pytest.mark.parametrize("task_id", ["none", "kmeans"])
def test_out_of_memory_halves_the_batch(tmp_path, monkeypatch, task_id):
    original = BerundaNetLate.forward
    seen, raised = [], []

    def forward(self, x):
        if x.shape[0] > 1 and not raised:
            raised.append(x.shape[0])
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        seen.append(x.shape[0])
        return original(self, x)

    monkeypatch.setattr(BerundaNetLate, "forward", forward)
    out = tmp_path / "oom.pt"
    log = LogReporter()
    result = train(dubai_config(aux_task=task_id, epochs=2), str(out), log)
    assert len(raised) == 1
    half = raised[0] // 2
    if task_id == "none":
        assert raised == [2]   # the whole batch of 2 labeled tiles
    assert seen and set(seen) == {half}   # every later forward got the halved batch
    halved = [line for line in log.lines if "out of memory" in line]
    assert len(halved) == 1 and f"passes of {half} " in halved[0]
    assert [r["batch_size"] for r in result.history] == [half, half]
    meta = load_model(str(out)).metadata
    assert [r["batch_size"] for r in meta["history"]] == [half, half]
    assert meta["training"]["config"]["batch_size"] == 2
    assert all(math.isfinite(r["loss"]) for r in meta["history"])


def test_out_of_memory_at_batch_one_is_raised(tmp_path, monkeypatch):
    def forward(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(BerundaNetLate, "forward", forward)
    out = tmp_path / "oom1.pt"
    with pytest.raises(torch.cuda.OutOfMemoryError):
        train(dubai_config(aux_task="none", batch_size=1), str(out))
    assert_nothing_written(out)


# ---- 6. NaN loss -----------------------------------------------------------------------------

def test_nan_loss_stops_with_lambda_hint_and_keeps_checkpoint(tmp_path, monkeypatch):
    task_cls = TASKS["kmeans"]
    original = task_cls.loss
    reporter = LogReporter()   # 3 epochs: progress passes 1/3 once epoch 1 is done

    def loss(self, out, batch):
        value = original(self, out, batch)
        in_epoch_2 = bool(reporter.fractions) and reporter.fractions[-1] >= 1 / 3 - 1e-9
        return value * float("nan") if in_epoch_2 else value

    monkeypatch.setattr(task_cls, "loss", loss)
    out = tmp_path / "nan.pt"
    ckpt = checkpoint_path_for(str(out))
    with pytest.raises(NonFiniteLossError) as exc:
        train(dubai_config(aux_task="kmeans", epochs=3), str(out), reporter)
    message = str(exc.value)
    assert "LAMBDA" in message and ckpt in message and "epoch 2, step 1" in message
    assert "(epoch 1)" in message
    assert not out.exists()
    assert not prefetch_threads()
    package = load_model(ckpt)
    assert package.checkpoint["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in package.state_dict.values()
               if t.is_floating_point())


# ---- 7. other data types ---------------------------------------------------------------------

def test_uint16_image_trains_and_is_recorded(crops, tmp_path):
    out = tmp_path / "u16.pt"
    result = train(make_config([crops["image_u16"]], [crops["label"]], aux_task="l2"), str(out))
    meta = load_model(str(out)).metadata
    assert meta["bands"]["dtype"] == "uint16" and meta["bands"]["dtype_family"] == "uint"
    assert max(meta["normalization"]["high"]) > 255   # statistics in UInt16 units
    assert math.isfinite(result.final["loss"])


def test_float_reflectance_with_nan_and_nodata_trains(crops, tmp_path):
    image = crops["image_data"].astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    image[:, rng.random(image.shape[1:]) < 0.03] = np.nan      # undeclared NaN pixels
    image[:, 40:100, 40:100] = -9999.0                          # declared nodata block
    path = write_raster(crops["folder"] / "reflectance.tif", image, crops["geo"],
                        nodata=-9999.0)
    out = tmp_path / "float.pt"
    result = train(make_config([path], [crops["label"]], [path], aux_task="mumford_shah",
                               epochs=2), str(out))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["auxiliary"]) for r in result.history)
    meta = load_model(str(out)).metadata
    assert meta["bands"]["dtype"] == "float32" and meta["bands"]["dtype_family"] == "float"
    assert meta["bands"]["nodata"] == -9999.0
    norm = meta["normalization"]
    assert all(math.isfinite(v) for vs in norm.values() for v in vs)
    assert min(norm["low"]) >= 0 and max(norm["high"]) <= 1   # nodata did not enter the stats


# ---- 8. arbitrary class values ---------------------------------------------------------------

def test_arbitrary_class_values(crops, tmp_path):
    remap = {0: 99, 2: 0, 3: 10, 4: 255, 5: 10}
    label = np.vectorize(remap.get)(crops["label_data"]).astype(np.uint8)
    path = write_raster(tmp_path / "classes.tif", label, crops["label_geo"], nodata=99)
    out = tmp_path / "classes.pt"
    train(make_config([crops["image"]], [path], aux_task="none"), str(out))
    classes = load_model(str(out)).metadata["classes"]
    assert classes["values"] == [0, 10, 255]
    assert classes["nodata"] == 99
    assert classes["pixel_counts"] == [int((label == v).sum()) for v in (0, 10, 255)]
    assert classes["names"] == ["class 0", "class 10", "class 255"]
    assert len(set(classes["colors"])) == 3


def test_class_mapper_round_trip():
    mapper = ClassMapper([255, 0, 10], nodata=99)
    values = np.array([[0, 10, 255], [99, 7, 300]])
    index = mapper.to_index(values)
    assert index.tolist() == [[0, 1, 2], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]
    known = index != IGNORE_INDEX
    assert (mapper.values[index[known]] == values[known]).all()
    # the declared nodata wins even over a known class value
    assert ClassMapper([0, 1, 2], nodata=0).to_index(np.array([0, 1, 2])).tolist() == \
        [IGNORE_INDEX, 1, 2]
    assert ClassMapper([1, 2]).to_index(np.array([-5, 0, 1, 2, 3])).tolist() == \
        [IGNORE_INDEX, IGNORE_INDEX, 0, 1, IGNORE_INDEX]


def test_sampled_label_tiles_use_class_indices(crops, tmp_path):
    """What the loss sees: indices 0..C-1, nodata label pixels IGNORE_INDEX."""
    remap = {0: 99, 2: 0, 3: 10, 4: 255, 5: 10}
    label = np.vectorize(remap.get)(crops["label_data"]).astype(np.uint8)
    path = write_raster(tmp_path / "classes.tif", label, crops["label_geo"], nodata=99)
    info = scan_classes([path])
    stats = compute_statistics([crops["image"]], np.random.default_rng(0))
    sampler = WindowSampler([crops["image"]], [path], [1.0], CROP, stats,
                            ClassMapper(info.values, info.nodata), 1.0, augment=False)
    try:
        tile = sampler.sample(np.random.default_rng(0))
    finally:
        sampler.close()
    expected = np.select([label == 0, label == 10, label == 255], [0, 1, 2], IGNORE_INDEX)
    assert (tile.label == expected).all()


# ---- 9. normalisation ------------------------------------------------------------------------

def test_uint8_and_uint16_normalise_alike(crops):
    s8 = compute_statistics([crops["image"]], np.random.default_rng(5), window=64)
    s16 = compute_statistics([crops["image_u16"]], np.random.default_rng(5), window=64)
    for key in s8:
        np.testing.assert_allclose(np.asarray(s16[key]) / 257.0, s8[key], rtol=1e-9, atol=1e-9)
    with rasterio.open(crops["image"]) as a, rasterio.open(crops["image_u16"]) as b:
        raw8, raw16 = read_window(a, 0, 0, CROP, CROP), read_window(b, 0, 0, CROP, CROP)
    assert raw16.dtype == np.uint16
    n8 = normalize(raw8, valid_mask(raw8, None), s8)
    n16 = normalize(raw16, valid_mask(raw16, None), s16)
    assert n8.dtype == np.float32 and np.abs(n8).max() > 0.5
    np.testing.assert_allclose(n16, n8, atol=1e-4, rtol=0)

    tiles = []
    for path, stats in ((crops["image"], s8), (crops["image_u16"], s16)):
        sampler = WindowSampler([path], None, [1.0], 64, stats, None)
        tiles.append(sampler.sample(np.random.default_rng(9)).image)
        sampler.close()
    np.testing.assert_allclose(tiles[1], tiles[0], atol=1e-4, rtol=0)


def test_normalize_zeroes_invalid_pixels():
    stats = {"low": [0.0], "high": [10.0], "mean": [5.0], "std": [2.0]}
    data = np.array([[[0.0, 20.0], [np.nan, 7.0]]], dtype=np.float32)
    valid = valid_mask(data, None)
    assert normalize(data, valid, stats).tolist() == [[[-2.5, 2.5], [0.0, 1.0]]]


# ---- 10. polygon labels ----------------------------------------------------------------------

def _polygon_layer(path, field_type, polygons):
    """GeoPackage in EPSG:4326 of pixel rectangles (row0, col0, row1, col1) of scene1_part1."""
    from osgeo import ogr, osr

    ogr.UseExceptions()
    with rasterio.open(dubai_pair("scene1_part1")[0]) as ds:
        transform, wkt = ds.transform, ds.crs.to_wkt()
    utm, wgs = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromWkt(wkt)
    wgs.ImportFromEPSG(4326)
    for srs in (utm, wgs):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_wgs = osr.CoordinateTransformation(utm, wgs)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("labels", wgs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("cls", field_type))
    for (r0, c0, r1, c1), value in polygons:
        ring = ((c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0))
        corners = [transform * (c, r) for c, r in ring]
        lonlat = [to_wgs.TransformPoint(x, y)[:2] for x, y in corners]
        assert 50 < lonlat[0][0] < 60 and 20 < lonlat[0][1] < 30   # really lon/lat near Dubai
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("cls", value)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(
            "POLYGON((" + ", ".join(f"{x!r} {y!r}" for x, y in lonlat) + "))"))
        layer.CreateFeature(feature)
    ds = None
    return str(path)


def test_rasterize_polygons_reprojects_onto_the_image_grid(tmp_path):
    from osgeo import ogr

    image = dubai_pair("scene1_part1")[0]
    vector = _polygon_layer(tmp_path / "labels.gpkg", ogr.OFTInteger,
                            [((100, 100, 180, 200), 3), ((300, 400, 400, 500), 7)])
    out = str(tmp_path / "burnt.tif")
    assert rasterize_polygons(vector, "cls", image, out) == out
    assert not os.path.exists(out + ".reprojected.gpkg")
    with rasterio.open(image) as img, rasterio.open(out) as lab:
        assert (lab.width, lab.height) == (img.width, img.height)
        assert lab.crs == img.crs
        assert lab.transform.almost_equals(img.transform)
        assert lab.nodata == POLYGON_LABEL_NODATA
        data = lab.read(1)
    assert data[140, 150] == 3 and data[350, 450] == 7
    assert data[0, 0] == POLYGON_LABEL_NODATA and data[250, 300] == POLYGON_LABEL_NODATA
    assert set(np.unique(data).tolist()) == {3, 7, POLYGON_LABEL_NODATA}
    # the rectangles land where they were drawn, to within a pixel of each edge
    rows, cols = np.nonzero(data == 3)
    assert abs(rows.min() - 100) <= 1 and abs(rows.max() - 179) <= 1
    assert abs(cols.min() - 100) <= 1 and abs(cols.max() - 199) <= 1
    assert abs(int((data == 7).sum()) - 100 * 100) <= 400
    info = scan_classes([out])
    assert info.values == [3, 7] and info.nodata == POLYGON_LABEL_NODATA


def test_rasterize_polygons_refuses_a_non_integer_field(tmp_path):
    from osgeo import ogr

    image = dubai_pair("scene1_part1")[0]
    vector = _polygon_layer(tmp_path / "labels.gpkg", ogr.OFTReal, [((100, 100, 180, 200), 3.5)])
    out = str(tmp_path / "burnt.tif")
    with pytest.raises(RasterError) as exc:
        rasterize_polygons(vector, "cls", image, out)
    assert "'cls'" in str(exc.value) and "integer" in str(exc.value)
    with pytest.raises(RasterError) as exc:
        rasterize_polygons(vector, "klass", image, out)
    assert "'klass'" in str(exc.value) and "cls" in str(exc.value)
    assert not os.path.exists(out)


# ---- 11. refusals ----------------------------------------------------------------------------

def _crop_config(crops, **kw):
    return make_config([crops["image"]], [crops["label"]], [crops["unlabeled"]], **kw)


def _refused(cfg, out, error, *words):
    with pytest.raises(error) as exc:
        train(cfg, str(out))
    for word in words:
        assert str(word) in str(exc.value), (word, str(exc.value))
    assert_nothing_written(out)
    return str(exc.value)


def test_label_off_the_image_grid_is_resampled_not_refused(crops, tmp_path):
    """A shifted label raster and one of another size are resampled onto the image grid
    (tests/test_engine_inputs.py checks the resampled values)."""
    geo = dict(crops["label_geo"])
    geo["transform"] = geo["transform"] * rasterio.Affine.translation(3, 0)
    shifted = write_raster(tmp_path / "label_off.tif", crops["label_data"], geo)
    small = write_raster(tmp_path / "small.tif", crops["label_data"][:, :100, :],
                         crops["label_geo"])
    log = LogReporter()
    out = tmp_path / "m.pt"
    train(make_config([crops["image"], crops["image"]], [shifted, small]), str(out), log)
    assert out.is_file()
    assert sum("resampled onto the image's grid" in line for line in log.lines) == 2


def test_label_that_does_not_overlap_the_image_is_refused(crops, tmp_path):
    # same coordinates read in the next UTM zone: hundreds of km away from the image
    label = write_raster(tmp_path / "label_off.tif", crops["label_data"], crops["label_geo"],
                         crs="EPSG:32641")
    cfg = make_config([crops["image"]], [label])
    _refused(cfg, tmp_path / "m.pt", RasterError, label, crops["image"], "does not overlap")


def test_image_and_label_counts_must_match(crops, tmp_path):
    cfg = make_config([crops["image"], crops["unlabeled"]], [crops["label"]])
    _refused(cfg, tmp_path / "m.pt", InvalidParameterError, "LABELED_IMAGES", "LABELS")


def test_no_labeled_image_is_refused(tmp_path):
    _refused(make_config([], []), tmp_path / "m.pt", InvalidParameterError, "LABELED_IMAGES")


def test_images_with_different_band_counts_are_refused(crops, tmp_path):
    two_bands = write_raster(tmp_path / "two_bands.tif", crops["image_data"][:2], crops["geo"])
    cfg = _crop_config(crops)
    cfg.unlabeled_images = [two_bands]
    _refused(cfg, tmp_path / "m.pt", RasterError, two_bands, "2 bands")


def test_images_of_different_type_families_are_refused(crops, tmp_path):
    floats = write_raster(tmp_path / "float.tif", crops["image_data"].astype(np.float32),
                          crops["geo"])
    cfg = _crop_config(crops)
    cfg.unlabeled_images = [floats]
    _refused(cfg, tmp_path / "m.pt", RasterError, floats, "float32")


def test_float_label_raster_is_refused(crops, tmp_path):
    label = write_raster(tmp_path / "float_label.tif", crops["label_data"].astype(np.float32),
                         crops["label_geo"])
    _refused(make_config([crops["image"]], [label]), tmp_path / "m.pt", RasterError, label,
             "float32")


def test_multiband_label_raster_is_refused(crops, tmp_path):
    label = write_raster(tmp_path / "rgb_label.tif", np.repeat(crops["label_data"], 3, axis=0),
                         crops["label_geo"])
    _refused(make_config([crops["image"]], [label]), tmp_path / "m.pt", RasterError, label,
             "3 bands")


def test_all_nodata_labels_are_refused(crops, tmp_path):
    label = write_raster(tmp_path / "empty.tif", np.zeros_like(crops["label_data"]),
                         crops["label_geo"], nodata=0)
    _refused(make_config([crops["image"]], [label]), tmp_path / "m.pt", DataError, "empty.tif",
             "nodata")


def test_a_single_class_is_refused(crops, tmp_path):
    data = np.where(crops["label_data"] == 0, 0, 4).astype(np.uint8)
    label = write_raster(tmp_path / "single.tif", data, crops["label_geo"], nodata=0)
    _refused(make_config([crops["image"]], [label]), tmp_path / "m.pt", DataError,
             "single class", "value 4", "at least 2")


def test_tile_larger_than_every_raster_is_refused(crops, tmp_path):
    _refused(_crop_config(crops, tile_size=192), tmp_path / "m.pt", InvalidParameterError,
             "TILE_SIZE 192", "image.tif", "at most 160")


@pytest.mark.parametrize("overrides, words", [
    ({"tile_size": 48}, ["TILE_SIZE 48", "multiple of 32"]),
    ({"tile_size": 0}, ["TILE_SIZE 0"]),
    ({"lam": -0.5}, ["LAMBDA", "-0.5"]),
    ({"lam": float("nan")}, ["LAMBDA"]),
    ({"lam": "lots"}, ["LAMBDA", "'lots'", "auto"]),
    ({"aux_task": "consistency", "confidence": 1.5}, ["CONFIDENCE", "1.5"]),
    ({"aux_task": "consistency", "ema_decay": 1.0}, ["EMA_DECAY", "1.0"]),
    ({"aux_task": "consistency", "class_balance": -0.1}, ["CLASS_BALANCE", "-0.1"]),
    ({"aux_task": "kmeans", "alpha": -1.0}, ["ALPHA", "-1.0"]),
    ({"aux_task": "mumford_shah", "alpha": -0.1}, ["ALPHA"]),
    ({"aux_task": "kmeans", "clusters": 1}, ["CLUSTERS", "1"]),
    ({"aux_task": "mumford_shah", "clusters": 0}, ["CLUSTERS"]),
    ({"aux_task": "inpainting", "mask_size": 0}, ["MASK_SIZE 0"]),
    ({"aux_task": "jigsaw", "permutations": 0}, ["PERMUTATIONS", "0"]),
    ({"aux_task": "jigsaw", "permutations": 1001}, ["PERMUTATIONS", "1001"]),
    ({"aux_task": "sudoku"}, ["AUX_TASK", "sudoku"]),
    ({"batch_size": 0}, ["BATCH_SIZE"]),
    ({"epochs": 0}, ["EPOCHS"]),
    ({"learning_rate": 0.0}, ["LEARNING_RATE"]),
    ({"lr_schedule": "cosine"}, ["LR_SCHEDULE", "cosine", "poly"]),
    ({"device": "tpu"}, ["DEVICE", "tpu"]),
])
def test_bad_parameters_are_refused(crops, tmp_path, overrides, words):
    _refused(_crop_config(crops, **overrides), tmp_path / "m.pt", InvalidParameterError, *words)


@pytest.mark.parametrize("mask_size", [64, 100])
def test_a_mask_not_smaller_than_the_tile_is_clipped_with_a_warning(crops, tmp_path, mask_size):
    class Warned(Reporter):
        warnings = []

        def warning(self, message):
            self.warnings.append(message)

    out = tmp_path / "inpainting.pt"
    log = Warned()
    train(_crop_config(crops, aux_task="inpainting", mask_size=mask_size), str(out), log)
    assert log.warnings == [f"MASK_SIZE {mask_size} is not smaller than TILE_SIZE 64; using 16 "
                            "(a quarter of the tile, as the paper's 80 px on 320-px tiles)."]
    assert load_model(str(out)).metadata["task"]["params"]["mask_size"] == 16


def test_parameters_of_other_tasks_are_not_checked(crops, tmp_path):
    """mask_size 80 >= tile 64 matters only for inpainting; alpha only for k-means/MS."""
    out = tmp_path / "l1.pt"
    train(_crop_config(crops, aux_task="l1", alpha=-1.0, clusters=0, mask_size=80,
                       permutations=0), str(out))
    assert out.is_file()


def test_output_equal_to_an_input_is_refused(crops, tmp_path):
    # copies: if the check failed, nothing shared would be overwritten
    image = write_raster(tmp_path / "image.tif", crops["image_data"], crops["geo"])
    label = write_raster(tmp_path / "label.tif", crops["label_data"], crops["label_geo"])
    unlabeled = write_raster(tmp_path / "m.checkpoint.pt", crops["image_data"], crops["geo"])
    cfg = make_config([image], [label], [unlabeled])
    for target in (image, label, unlabeled):
        before = os.path.getmtime(target), os.path.getsize(target)
        with pytest.raises(OutputError) as exc:
            train(cfg, target)
        assert target in str(exc.value) and "OUTPUT_MODEL" in str(exc.value)
        assert (os.path.getmtime(target), os.path.getsize(target)) == before
    # the checkpoint written beside the model would overwrite an input too
    with pytest.raises(OutputError) as exc:
        train(cfg, str(tmp_path / "m.pt"))
    assert unlabeled in str(exc.value)
    assert not (tmp_path / "m.pt").exists()
    assert not glob.glob(str(tmp_path / ".*.partial"))


@pytest.mark.parametrize("where", ["file", "read_only"])   # a missing one is created
def test_output_folder_must_be_writable(crops, tmp_path, where):
    folder = tmp_path / "out"
    if where == "file":
        folder.write_text("not a folder")
    elif where == "read_only":
        if os.geteuid() == 0:
            pytest.skip("root can write to read-only folders")
        folder.mkdir()
        folder.chmod(0o555)
    out = folder / "model.pt"
    try:
        with pytest.raises(OutputError) as exc:
            train(_crop_config(crops), str(out))
        assert str(folder) in str(exc.value) and "OUTPUT_MODEL" in str(exc.value)
    finally:
        if where == "read_only":
            folder.chmod(0o755)
    assert not os.path.exists(out)
