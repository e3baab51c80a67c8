"""The training loop: L = Ls + λ·Lu on labeled and unlabeled tiles.

Determinism: every step draws its tiles from a generator seeded with (seed, epoch,
step), so any number of reading threads gives the same tiles; every epoch draws its
task randomness from one seeded with (seed, epoch); a checkpoint is written after
every epoch.  So a run resumed from epoch k's checkpoint continues exactly like an
uninterrupted run (on CPU; CUDA kernels may differ in the last bits).
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import os
import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from ..models.losses import FACTORIES as SUPERVISED_LOSS_FACTORIES
from ..models.losses import class_weights, make_supervised_loss
from ..models.network import BerundaNetLate, describe_network
from ..models.tasks import TASKS, get_task
from . import distributed
from .batchnorm import recalibrate_batch_norm
from .config import TrainingConfig
from .devices import resolve_device
from .encoders import check_encoder
from .errors import InvalidParameterError, ModelFileError, NonFiniteLossError, TrainingCancelled
from .label_grid import labels_on_image_grids
from .initial_weights import (StartingPoint, check_start_parameters, initialise_network,
                              set_encoder_frozen, starting_point)
from .labels import ClassInfo, burnt_polygon_labels
from .loss_balance import make_balance
from .lr_schedule import SCHEDULES, learning_rate_at, set_learning_rate
from .model_file import ModelPackage, load_model, save_model
from .parameters import check_band_list
from .paths import checkpoint_path_for
from .prefetch import prefetch, reading_workers
from .progress import Reporter, ScaledReporter
from .sampling import read_step, step_generator
from .step import train_step
from .time_estimate import TrainingClock
from .training_data import prepare_training_data
from .validation import score_model
from .versions import library_versions


WINDOWS_RECORDED = 32   # labeled windows per rank and epoch kept in the history under torchrun


@dataclass
class TrainingResult:
    model_path: str
    checkpoint_path: str
    history: List[dict] = field(default_factory=list)
    validation: Optional[dict] = None   # scores on the validation pairs, when given

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def make_task(config: TrainingConfig):
    """The task with the config's values for the hyper-parameters it takes."""
    if config.aux_task not in TASKS:
        raise InvalidParameterError(
            f"AUX_TASK {config.aux_task!r} is unknown; choose one of {', '.join(TASKS)}.")
    accepted = inspect.signature(TASKS[config.aux_task]).parameters
    params = {k: getattr(config, k) for k in accepted if hasattr(config, k)}
    try:
        return get_task(config.aux_task, **params)
    except ValueError as exc:
        raise InvalidParameterError(str(exc)) from None


def lambda_setting(config: TrainingConfig):
    """'auto' (LAMBDA empty or 'auto') or the number given."""
    return "auto" if config.lam is None or config.lam == "auto" else config.lam


def _lambda_ok(lam) -> bool:
    if lam is None or lam == "auto":
        return True
    return (isinstance(lam, (int, float)) and not isinstance(lam, bool) and math.isfinite(lam)
            and lam >= 0)


def validate_config(config: TrainingConfig) -> None:
    check_encoder(config.encoder)
    checks = [
        (config.tile_size >= 32 and config.tile_size % 32 == 0,
         f"TILE_SIZE {config.tile_size} must be a positive multiple of 32 (the U-Net halves it "
         f"5 times); use {max(32, round(config.tile_size / 32) * 32)}."),
        (config.batch_size >= 1, f"BATCH_SIZE must be at least 1 (got {config.batch_size})."),
        (config.epochs >= 1, f"EPOCHS must be at least 1 (got {config.epochs})."),
        (config.samples_per_epoch >= 1,
         f"SAMPLES_PER_EPOCH must be at least 1 (got {config.samples_per_epoch})."),
        (config.learning_rate > 0, f"LEARNING_RATE must be > 0 (got {config.learning_rate})."),
        (config.lr_schedule in SCHEDULES,
         f"LR_SCHEDULE {config.lr_schedule!r} is unknown; choose one of {', '.join(SCHEDULES)}."),
        (_lambda_ok(config.lam),
         f"LAMBDA must be 'auto' or a number >= 0 (got {config.lam!r}); empty = auto, "
         "0 trains the supervised baseline."),
        (0 <= config.max_invalid_fraction < 1, "max_invalid_fraction must be in [0, 1)."),
        (config.supervised_loss in SUPERVISED_LOSS_FACTORIES,
         f"SUPERVISED_LOSS {config.supervised_loss!r} is unknown; choose one of "
         f"{', '.join(SUPERVISED_LOSS_FACTORIES)}."),
    ]
    # Hyper-parameters are checked only for the task that uses them.
    accepted = inspect.signature(TASKS[config.aux_task]).parameters if config.aux_task in TASKS else {}
    task_checks = {
        "alpha": (config.alpha >= 0, f"ALPHA must be >= 0 (got {config.alpha})."),
        "clusters": (config.clusters >= 2, f"CLUSTERS must be at least 2 (got {config.clusters})."),
        "mask_size": (1 <= config.mask_size < config.tile_size,
                      f"MASK_SIZE {config.mask_size} must be between 1 and TILE_SIZE-1 "
                      f"({config.tile_size - 1}); the paper uses 80 on 320-px tiles."),
        "permutations": (1 <= config.permutations <= 1000,
                         f"PERMUTATIONS must be between 1 and 1000 (got {config.permutations}); "
                         "the paper uses 100."),
        "confidence": (0 <= config.confidence <= 1,
                       f"CONFIDENCE must be between 0 and 1 (got {config.confidence}); "
                       "0.95 keeps pixels the network is at least 95 % sure of."),
        "ema_decay": (0 <= config.ema_decay < 1,
                      f"EMA_DECAY must be in [0, 1) (got {config.ema_decay}); 0 = no EMA "
                      "teacher, 0.99 a typical teacher."),
        "class_balance": (0 <= config.class_balance <= 1,
                          f"CLASS_BALANCE must be between 0 and 1 (got {config.class_balance}); "
                          "0.2 keeps each class's most confident fifth, 0 = CONFIDENCE alone."),
    }
    checks += [check for name, check in task_checks.items() if name in accepted]
    world = distributed.current().world
    checks.append((config.batch_size % world == 0,
                   f"BATCH_SIZE {config.batch_size} must be a multiple of the {world} training "
                   f"processes (torchrun --nproc_per_node × nodes): BATCH_SIZE is the global "
                   f"batch, split evenly; use {max(world, config.batch_size // world * world)}."))
    for ok, message in checks:
        if not ok:
            raise InvalidParameterError(message)
    check_band_list(config.bands)
    check_start_parameters(config)


def fit_mask_to_tile(config: TrainingConfig, reporter: Reporter, tasks=None) -> TrainingConfig:
    """A MASK_SIZE not smaller than TILE_SIZE (e.g. the default 80 with small tiles) is
    clipped to a quarter of the tile, the paper's ratio, with a warning."""
    uses_mask = any(t in TASKS and "mask_size" in inspect.signature(TASKS[t]).parameters
                    for t in tasks or [config.aux_task])
    if not uses_mask or config.mask_size < config.tile_size:
        return config
    clipped = max(1, config.tile_size // 4)
    reporter.warning(f"MASK_SIZE {config.mask_size} is not smaller than TILE_SIZE "
                     f"{config.tile_size}; using {clipped} (a quarter of the tile, as the paper's "
                     "80 px on 320-px tiles).")
    return dataclasses.replace(config, mask_size=clipped)


def train(config: TrainingConfig, output_path: str, reporter: Optional[Reporter] = None,
          resume: Optional[str] = None, prepared: Optional[dict] = None,
          clock: Optional[TrainingClock] = None) -> TrainingResult:
    """Train and write the model.  ``prepared`` (from a training job: classes and
    normalisation statistics) is used instead of recomputing them from the rasters;
    ``clock`` (berunda:compare) estimates the time of several trainings at once."""
    outer = reporter or Reporter()
    config = fit_mask_to_tile(config, outer)
    validate_config(config)
    _check_output(output_path, config)   # against the inputs as given, before any copy
    with burnt_polygon_labels(config, outer) as config, \
            labels_on_image_grids(config, outer) as config:
        return _train(config, output_path, outer, resume, prepared, clock)


def _train(config, output_path, outer, resume, prepared, clock) -> TrainingResult:
    # With validation pairs, training gets 90 % of the progress bar and scoring the rest.
    reporter = ScaledReporter(outer, 0.0, 0.9) if config.validation_images else outer
    checkpoint_path = checkpoint_path_for(output_path)
    _check_output(output_path, config)

    start_epoch, history, stats, classes, state = 1, [], None, None, None
    if resume:
        config, start_epoch, history, stats, classes, state = _load_resume(resume, config, reporter)
    elif prepared:
        stats, classes = prepared["normalization"], ClassInfo.from_metadata(prepared["classes"])
    task = make_task(config)
    lam = lambda_setting(config)
    semi = task.uses_unlabeled and (lam == "auto" or lam > 0)
    ranks = distributed.current()
    device = distributed.start(ranks, resolve_device(config.device))
    # Pretrained weights / the model to fine-tune (a resumed run has its own weights).
    start = starting_point(config, reporter) if not resume else StartingPoint()
    data = prepare_training_data(config, reporter, semi, stats, classes, parent=start.parent)
    clock = clock or TrainingClock.for_config(reporter, config, semi)
    try:
        result = _run(config, task, semi, device, data, output_path, checkpoint_path,
                      reporter, start_epoch, history, state, resume, clock, ranks, start)
    finally:
        data.close()
    distributed.finish(ranks)
    if result is None:   # a rank other than 0: rank 0 writes and reports
        return None
    if config.validation_images:
        result.validation = _attach_validation(result.model_path, config, device,
                                               ScaledReporter(outer, 0.9, 1.0))
    return result


def _attach_validation(model_path: str, config: TrainingConfig, device, reporter) -> dict:
    """Score the final model on the validation pairs and store the scores in it."""
    reporter.info(f"Scoring the model on {len(config.validation_images)} validation raster(s)…")
    scores = score_model(model_path, config.validation_images, config.validation_labels,
                         os.path.dirname(os.path.abspath(model_path)), reporter, device=device.type)
    reporter.info(f"Validation: overall accuracy {scores['overall_accuracy']:.2f} %, "
                  f"mean IoU {scores['mean_iou']:.2f} %")
    package = load_model(model_path)
    package.metadata["validation"] = scores
    save_model(model_path, package)
    return scores


def _run(config, task, semi, device, data, output_path, checkpoint_path, reporter,
         start_epoch, history, state, resumed_from=None, clock=None,
         ranks=distributed.Ranks(), start=None) -> Optional[TrainingResult]:
    torch.manual_seed(config.seed)
    bands = data.bands["count"]
    arch = describe_network(bands, len(data.classes.values), config.encoder,
                            task.head_channels(bands), task.classifier_classes())
    net = BerundaNetLate(bands, len(data.classes.values), config.encoder, arch["aux_channels"],
                         arch["aux_classes"])
    initialisation = (state.get("initialisation") if state is not None else
                      initialise_network(net, start or StartingPoint(), data.classes,
                                         task.task_id, reporter))
    net = net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    criterion = make_supervised_loss(config.supervised_loss, data.classes.pixel_counts)
    task.use_class_weights(class_weights(config.supervised_loss, data.classes.pixel_counts))
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    saved_balance = (state or {}).get("balance") or {}
    balance = make_balance(lambda_setting(config), task, net, saved_balance.get("method"))
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if saved_balance:
            balance.load_state_dict(saved_balance)
        task.load_state_dict(state.get("task") or {})
    net = distributed.share_weights(net, ranks, device)

    def metadata():
        return {
            "architecture": arch,
            "bands": data.bands,
            "grid": data.grid,
            "normalization": data.stats,
            "classes": data.classes.to_metadata(),
            "tile_size": config.tile_size,
            "task": {"id": task.task_id, "params": task.hparams(), "lambda": balance.setting,
                     "lambda_method": balance.method,
                     "mode": "semi-supervised" if semi else "supervised"},
            "training": {"config": config.to_dict(), "seed": config.seed,
                         "device": device.type, "epochs_done": len(history)},
            "history": history,
            "initialisation": initialisation,
            "versions": library_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    # (path, epoch) of the newest complete checkpoint: what to RESUME from after a cancel/NaN
    # (a resumed run's own checkpoint exists only once its first epoch is done).
    last_checkpoint = (resumed_from, start_epoch - 1) if resumed_from else None
    steps = math.ceil(config.samples_per_epoch / config.batch_size)
    local = config.batch_size // ranks.world   # this rank's share of the global batch
    readers = reading_workers(device.type, config.tile_size)
    # Tiles per forward pass: the whole step (labeled + unlabeled together, so batch norm
    # and the loss means see one batch) until CUDA runs out of memory; then halved.
    micro = [None]
    reporter.info(f"Training {task.task_id} (λ={balance.describe()}, "
                  f"{'semi-supervised' if semi else 'supervised'}) "
                  f"on {device}: {config.epochs} epochs × {steps} steps of {config.batch_size} "
                  f"labeled{' + ' + str(config.batch_size) + ' unlabeled' if semi else ''} tiles "
                  f"of {config.tile_size} px"
                  + (f", split over {ranks.world} processes" if ranks.active else "")
                  + (f", tiles read by {readers} threads." if readers > 1 else "."))
    clock.begin(device, (config.epochs - start_epoch + 1) * steps * config.batch_size
                * (2 if semi and data.unlabeled is not None else 1))
    for epoch in range(start_epoch, config.epochs + 1):
        net.train()
        if set_encoder_frozen(net, epoch <= config.freeze_encoder_epochs):
            reporter.info(f"Encoder frozen for epochs 1–{config.freeze_encoder_epochs}."
                          if epoch <= config.freeze_encoder_epochs else "Encoder released.")
        task_seed = config.seed * 100_003 + epoch + 7_919 * ranks.rank
        gen = torch.Generator().manual_seed(task_seed)
        torch.manual_seed(task_seed)   # dropout in the jigsaw classifier
        unlabeled = data.unlabeled if semi else None
        drawn = []   # the first labeled windows of the epoch (history: ranks draw disjoint tiles)

        def produce(step):   # in the reading threads
            rng = step_generator(config.seed, epoch, step, ranks.seed_parts())
            return read_step(data.labeled, unlabeled, rng, local)

        totals = {"loss": 0.0, "supervised": 0.0, "auxiliary": 0.0, "correct": 0, "labelled": 0}
        t0, seen = time.perf_counter(), 0
        for step, (images, labels, valid, windows) in enumerate(
                prefetch(produce, steps, workers=readers)):
            if reporter.cancelled():
                raise TrainingCancelled(_cancel_message(epoch, last_checkpoint))
            if len(drawn) < WINDOWS_RECORDED:
                drawn.extend(windows)
            batch = [torch.from_numpy(a) for a in (images, labels, valid)]
            set_learning_rate(optimizer, learning_rate_at(config, epoch, step, steps))
            parts = train_step(net, optimizer, scaler, task, balance, semi, batch, gen, device,
                               use_amp, micro, reporter, ranks, criterion)
            loss = parts["loss"]
            if not math.isfinite(loss):
                raise NonFiniteLossError(_nan_message(epoch, step, parts, balance, task,
                                                      last_checkpoint))
            for k in ("supervised", "auxiliary", "correct", "labelled"):
                totals[k] += parts[k]
            totals["loss"] += loss
            seen += images.shape[0] * ranks.world
            reporter.progress(((epoch - 1) + (step + 1) / steps) / config.epochs)
            clock.step(images.shape[0] * ranks.world)
        seconds = time.perf_counter() - t0
        record = {
            "epoch": epoch,
            "loss": totals["loss"] / steps,
            "supervised": totals["supervised"] / steps,
            "auxiliary": totals["auxiliary"] / steps,
            "train_accuracy": totals["correct"] / max(totals["labelled"], 1),
            "samples_per_s": seen / seconds if seconds > 0 else 0.0,
            "seconds": seconds,
            "batch_size": micro[0] or images.shape[0],
            **balance.epoch_metrics(),
            **(task.epoch_metrics() if semi else {}),
        }
        if ranks.active:
            record.update(ranks=ranks.world, windows_by_rank=ranks.gather(drawn[:WINDOWS_RECORDED]))
        history.append(record)
        reporter.info(f"epoch {epoch}/{config.epochs}: loss {record['loss']:.4f} "
                      f"(supervised {record['supervised']:.4f}, auxiliary {record['auxiliary']:.4f}, "
                      f"λ {record['lambda']:.4g}{_extra_metrics(record)}), "
                      f"train pixel accuracy {100 * record['train_accuracy']:.1f} %, "
                      f"{record['samples_per_s']:.1f} tiles/s")
        checkpoint = {"epoch": epoch, "optimizer": optimizer.state_dict(),
                      "scaler": scaler.state_dict() if use_amp else {},
                      "balance": balance.state_dict(), "task": task.state_dict()}
        if ranks.main:
            save_model(checkpoint_path, ModelPackage(metadata(), net.state_dict(), checkpoint))
        ranks.barrier()   # every rank can resume from it once it is written
        last_checkpoint = (checkpoint_path, epoch)
        clock.epoch_done(epoch, config.epochs)
    if not ranks.main:
        return None
    # Checkpoints keep the raw running statistics (exact resume); the final model gets
    # statistics recomputed with its final weights (on rank 0 alone, in a plain network:
    # SyncBatchNorm would wait for the other ranks).
    if ranks.active:
        state_dict = net.state_dict()
        net = BerundaNetLate(bands, len(data.classes.values), config.encoder,
                             arch["aux_channels"], arch["aux_classes"]).to(device)
        net.load_state_dict(state_dict)
    recalibrate_batch_norm(net, data, config, semi, device, forward_batch=micro[0])
    save_model(output_path, ModelPackage(metadata(), net.state_dict()))
    reporter.info(f"Model written to {output_path} (checkpoint for RESUME: {checkpoint_path})")
    return TrainingResult(output_path, checkpoint_path, history)


def _extra_metrics(record) -> str:
    """The task's and the balance's own numbers of an epoch, for the log line."""
    words = {"confident_share": "confident pixels", "aux_gated_share": "auxiliary gated",
             "teacher_recall": "teacher recall on the labels"}
    return "".join(f", {words[k]} {100 * record[k]:.1f} %" for k in words if k in record)


def _cancel_message(epoch, last_checkpoint):
    if last_checkpoint:
        path, done = last_checkpoint
        return (f"Training cancelled during epoch {epoch}. The checkpoint of epoch {done} is "
                f"kept at {path}; set RESUME to it to continue.")
    return "Training cancelled during the first epoch; no checkpoint was written yet."


def _nan_message(epoch, step, parts, balance, task, last_checkpoint):
    kept = (f" The last good checkpoint is {last_checkpoint[0]} (epoch {last_checkpoint[1]})."
            if last_checkpoint else "")
    return (f"The loss became NaN/infinite at epoch {epoch}, step {step + 1} (supervised "
            f"{parts['supervised']}, auxiliary {parts['auxiliary']}). Likely causes: LAMBDA "
            f"{balance.describe()} too large for task {task.task_id} (the paper's value is "
            f"{task.default_lambda:g}), a LEARNING_RATE too high, or image pixels with extreme "
            f"values that are not declared nodata.{kept}")


def _check_output(output_path, config):
    from .atomic import ensure_folder
    from .errors import OutputError

    ensure_folder(output_path, "OUTPUT_MODEL")   # a missing folder is created
    inputs = config.labeled_images + config.labels + config.unlabeled_images + \
        [p for p in (config.init_model, config.encoder_weights) if p and os.path.isfile(p)]
    for p in (output_path, checkpoint_path_for(output_path)):
        if any(os.path.abspath(p) == os.path.abspath(i) for i in inputs):
            raise OutputError(f"OUTPUT_MODEL {output_path} would overwrite the input {p}; "
                              "choose another file name.")


def _load_resume(path, config, reporter):
    package = load_model(path)
    if not package.checkpoint:
        raise ModelFileError(f"RESUME file {path} is a final model without optimizer state; "
                             "resume from the '.checkpoint' file written beside it.")
    saved = TrainingConfig.from_dict(package.metadata["training"]["config"])
    keep = {"labeled_images": config.labeled_images, "labels": config.labels,
            "unlabeled_images": config.unlabeled_images, "epochs": config.epochs,
            "validation_images": config.validation_images,
            "validation_labels": config.validation_labels,
            "device": config.device}
    differing = [k for k, v in saved.to_dict().items()
                 if k not in keep and k != "encoder_weights" and getattr(config, k) != v]
    if differing:
        reporter.info("Resuming with the checkpoint's settings for: " + ", ".join(differing))
    for k, v in keep.items():
        setattr(saved, k, v)
    done = int(package.checkpoint["epoch"])
    if done >= saved.epochs:
        raise InvalidParameterError(f"The checkpoint {path} already completed {done} epochs; set "
                                    f"EPOCHS above {done} to train further.")
    meta = package.metadata
    classes = ClassInfo.from_metadata(meta["classes"])
    state = {"model": package.state_dict, "optimizer": package.checkpoint["optimizer"],
             "scaler": package.checkpoint.get("scaler"),
             "balance": package.checkpoint.get("balance"), "task": package.checkpoint.get("task"),
             "initialisation": meta.get("initialisation")}
    reporter.info(f"Resuming from {path} after epoch {done}.")
    return saved, done + 1, list(meta.get("history", [])), meta["normalization"], classes, state
