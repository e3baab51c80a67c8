"""The paper's experiment on the user's rasters (berunda:compare): the supervised
baseline and each auxiliary task at each λ, trained with several seeds on the
same data and budget, classified and scored on validation pairs."""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import numpy as np

from .atomic import ensure_folder
from .comparison_report import write_comparison_csv, write_comparison_html
from .config import TrainingConfig
from .errors import Cancelled, InvalidParameterError
from .parameters import lambda_number
from .progress import Reporter, ScaledReporter


@dataclass
class ComparisonRow:
    task: str
    lam: Union[float, str]     # a number or "auto"
    oa: List[float] = field(default_factory=list)      # per seed, percent
    miou: List[float] = field(default_factory=list)
    models: List[str] = field(default_factory=list)
    histories: List[List[dict]] = field(default_factory=list)   # per seed, per epoch
    scores: List[dict] = field(default_factory=list)            # per seed: all validation scores

    @property
    def mode(self) -> str:
        return "supervised" if self.task == "none" else "semi"

    @property
    def label(self) -> str:
        return "supervised" if self.task == "none" else f"{self.task} λ={format_lambda(self.lam)}"

    # sample std (ddof=1) over seeds, as "mean ± std over runs" in the paper; NaN ("n/a")
    # for a single run, whose spread is unknown rather than 0
    oa_mean = property(lambda self: float(np.mean(self.oa)) if self.oa else float("nan"))
    miou_mean = property(lambda self: float(np.mean(self.miou)) if self.miou else float("nan"))
    oa_std = property(lambda self: float(np.std(self.oa, ddof=1)) if len(self.oa) > 1
                      else float("nan"))
    miou_std = property(lambda self: float(np.std(self.miou, ddof=1)) if len(self.miou) > 1
                        else float("nan"))


@dataclass
class ComparisonResult:
    rows: List[ComparisonRow]
    table_path: str
    report_path: str
    model_folder: Optional[str]

    @property
    def supervised(self) -> Optional[ComparisonRow]:
        return next((r for r in self.rows if r.task == "none" and r.miou), None)

    @property
    def best(self) -> Optional[ComparisonRow]:
        done = [r for r in self.rows if r.miou]
        return max(done, key=lambda r: r.miou_mean) if done else None


def format_lambda(lam) -> str:
    return lam if isinstance(lam, str) else f"{lam:g}"


LAMBDA_WORDS = ("auto", "paper")


def parse_lambdas(text: Optional[str]) -> Optional[List[Union[float, str]]]:
    """'0.5, 1,5, auto' -> [0.5, 1.0, 5.0, 'auto']: numbers, 'auto' (balanced during
    training) and 'paper' (each task's paper value); empty -> None (the paper's values)."""
    text = (text or "").strip()
    if not text:
        return None
    values: List[Union[float, str]] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if part.lower() in LAMBDA_WORDS:
            values.append(part.lower())
            continue
        try:
            value = lambda_number(part, "LAMBDAS", "give numbers >= 0 (0 = supervised), 'auto' "
                                  "or 'paper', comma-separated, such as 0.5, 1, 5, auto.")
        except ValueError as exc:
            raise InvalidParameterError(str(exc)) from None
        values.append(value)
    return values or None


def comparison_grid(tasks: Sequence[str], lambdas: Optional[Sequence[Union[float, str]]],
                    baseline: bool = True):
    """[(task, λ)]: the supervised baseline first (unless ``baseline`` is False), then each
    task at each λ of ``lambdas``: numbers, "auto", or "paper" (the task's paper value);
    None = ["paper"] (the paper's Table 1)."""
    from .trainer import TASKS

    grid = [("none", 0.0)] if baseline else []
    for task in tasks:
        if task == "none":
            continue
        if task not in TASKS:
            raise InvalidParameterError(f"AUX_TASKS: unknown task {task!r}; choose from "
                                        f"{', '.join(t for t in TASKS if t != 'none')}.")
        for lam in lambdas or ["paper"]:
            if lam == "paper":
                lam = TASKS[task].default_lambda
            grid.append((task, lam if lam == "auto" else float(lam)))
    return grid


def run_comparison(base: TrainingConfig, tasks: Sequence[str],
                   lambdas: Optional[Sequence[Union[float, str]]],
                   runs: int, validation_images: Sequence[str], validation_labels: Sequence[str],
                   table_path: str, report_path: str, model_folder: Optional[str] = None,
                   reporter: Optional[Reporter] = None, baseline: bool = True) -> ComparisonResult:
    from .time_estimate import TrainingClock, validation_pixels
    from .trainer import TASKS, fit_mask_to_tile, train, validate_config

    reporter = reporter or Reporter()
    if runs < 1:
        raise InvalidParameterError(f"RUNS must be at least 1 (got {runs}).")
    if not validation_images or len(validation_images) != len(validation_labels):
        raise InvalidParameterError(
            f"VALIDATION_IMAGES ({len(validation_images)}) and VALIDATION_LABELS "
            f"({len(validation_labels)}) must be non-empty and of the same length.")
    grid = comparison_grid(tasks, lambdas, baseline)
    if not grid:
        raise InvalidParameterError("Nothing to compare: no auxiliary task and no baseline.")
    base = fit_mask_to_tile(base, reporter, [task for task, _ in grid])
    for label, path in (("OUTPUT_TABLE", table_path), ("OUTPUT_REPORT", report_path)):
        ensure_folder(path, label)   # before hours of training, not after
    for task, lam in grid:   # refuse bad settings before hours of training
        validate_config(dataclasses.replace(base, aux_task=task, lam=lam))
    rows = [ComparisonRow(task, lam) for task, lam in grid]
    keep = model_folder is not None
    folder = model_folder or tempfile.mkdtemp(prefix="berunda_compare_")
    os.makedirs(folder, exist_ok=True)
    total = len(grid) * runs
    # One clock over the whole grid: the first steps of the first training estimate it all.
    steps = -(-base.samples_per_epoch // base.batch_size)
    tiles = [base.epochs * steps * base.batch_size *
             (2 if TASKS[task].uses_unlabeled and (lam == "auto" or lam > 0)
                 and base.unlabeled_images else 1)
             for _ in range(runs) for task, lam in grid]
    clock = TrainingClock(reporter, base, tiles, validation_pixels(validation_images))
    result = ComparisonResult(rows, table_path, report_path, model_folder)
    settings = chosen_settings(base, [task for task, _ in grid], runs, validation_images)
    try:
        done = 0
        for run in range(runs):           # seed-major: every row gets a first result early
            for row in rows:
                seed = base.seed + run
                config = dataclasses.replace(base, aux_task=row.task, lam=row.lam, seed=seed,
                                             validation_images=list(validation_images),
                                             validation_labels=list(validation_labels))
                name = f"{row.task}_lambda{format_lambda(row.lam)}_seed{seed}.pt"
                sub = ScaledReporter(reporter, done / total, (done + 1) / total)
                reporter.info(f"== {row.label}, seed {seed} ({done + 1}/{total})")
                trained = train(config, os.path.join(folder, name), sub, clock=clock)
                model = trained.model_path
                # A finished run is never resumed: its checkpoint (weights + optimizer state,
                # ~3x the model) would only fill the disk, run after run.
                _remove(trained.checkpoint_path)
                scores = trained.validation
                row.oa.append(scores["overall_accuracy"])
                row.miou.append(scores["mean_iou"])
                row.histories.append(trained.history)
                row.scores.append(scores)
                if keep:
                    row.models.append(model)
                else:
                    _remove(model)
                reporter.info(f"   OA {scores['overall_accuracy']:.2f} %, mIoU {scores['mean_iou']:.2f} %")
                done += 1
                _write(result, settings)
    except Cancelled as exc:
        _write(result, settings)
        raise Cancelled(f"{exc} The comparison table keeps the finished runs: {table_path}") from None
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
            for row in rows:
                row.models.clear()
    return result


# Settings berunda:compare exposes, by parameter id; task hyper-parameters only for the
# tasks compared.  (Config fields no algorithm exposes are Berunda's, not the user's.)
SHARED_PARAMETERS = {"ENCODER": "encoder", "TILE_SIZE": "tile_size", "BATCH_SIZE": "batch_size",
                     "EPOCHS": "epochs", "SAMPLES_PER_EPOCH": "samples_per_epoch",
                     "LEARNING_RATE": "learning_rate", "LR_SCHEDULE": "lr_schedule",
                     "DEVICE": "device", "AUGMENT": "augment"}
TASK_PARAMETERS = {"ALPHA": "alpha", "CLUSTERS": "clusters", "MASK_SIZE": "mask_size",
                   "PERMUTATIONS": "permutations"}


def chosen_settings(base: TrainingConfig, tasks: Sequence[str], runs: int,
                    validation_images: Sequence[str]) -> dict:
    import inspect

    from .trainer import TASKS

    names = lambda paths: ", ".join(os.path.basename(p) for p in paths) or "none"  # noqa: E731
    settings = {"LABELED_IMAGES": names(base.labeled_images),
                "UNLABELED_IMAGES": names(base.unlabeled_images),
                "VALIDATION_IMAGES": names(validation_images), "RUNS": runs,
                "SEED": f"{base.seed}..{base.seed + runs - 1}" if runs > 1 else base.seed}
    settings.update({key: getattr(base, field) for key, field in SHARED_PARAMETERS.items()})
    used = {name for t in tasks if t in TASKS for name in inspect.signature(TASKS[t]).parameters}
    settings.update({key: getattr(base, field) for key, field in TASK_PARAMETERS.items()
                     if field in used})
    return settings


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _write(result: ComparisonResult, settings: dict) -> None:
    rows = [r for r in result.rows if r.miou]
    write_comparison_csv(rows, result.supervised, result.best, result.table_path)
    write_comparison_html(rows, result.supervised, result.best, result.report_path,
                          "Berunda: supervised vs auxiliary tasks", settings)
