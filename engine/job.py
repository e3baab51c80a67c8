"""Training jobs: one JSON file that holds everything a training needs, so it can be
written in QGIS and trained elsewhere (``python -m berunda train JOB.json``).

    {"format": "berunda-training-job", "schema_version": 1,
     "created": ..., "berunda_version": ...,
     "data_root": "/the/common/folder/of/all/inputs",
     "config": {TrainingConfig fields: paths as given, every parameter},
     "prepared": {"bands": ..., "classes": ..., "normalization": ...}}   # optional

``prepared`` (band description, class values/names/colours and the per-band
normalisation statistics) is what the engine computes from the rasters before the first
step; a job that carries it trains without recomputing them, so the weights are the same
as those of the run that wrote it (same seed, CPU).

Moving a job: relative paths are read against the job file's folder (or ``--data-root``);
absolute paths under the recorded ``data_root`` are moved under ``--data-root`` when it is
given.  Nothing else is rewritten.  Reading a job never imports torch.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional

from .atomic import atomic_output
from .config import TrainingConfig
from .errors import InvalidParameterError
from .parameters import ENCODER_WEIGHT_KEYWORDS

FORMAT = "berunda-training-job"
SCHEMA_VERSION = 1
PATH_LIST_KEYS = ("labeled_images", "labels", "unlabeled_images", "validation_images",
                  "validation_labels")
PATH_KEYS = ("label_polygons", "init_model", "encoder_weights")


class JobFileError(InvalidParameterError):
    """A job file that cannot be used as given (missing keys, newer schema, missing rasters)."""


@dataclasses.dataclass
class Job:
    config: TrainingConfig
    prepared: Optional[dict] = None
    path: Optional[str] = None


def common_root(config: TrainingConfig) -> str:
    paths = [os.path.abspath(p) for p in _paths(config.to_dict())]
    if not paths:
        return ""
    try:
        return os.path.commonpath([os.path.dirname(p) for p in paths])
    except ValueError:   # different drives
        return ""


def _is_path(value) -> bool:
    """A file path (not empty, not a keyword such as ENCODER_WEIGHTS' none / imagenet)."""
    return (isinstance(value, str) and bool(value.strip())
            and value.strip().lower() not in ENCODER_WEIGHT_KEYWORDS)


def _paths(values: dict):
    for key in PATH_LIST_KEYS:
        yield from values.get(key) or []
    for key in PATH_KEYS:
        if _is_path(values.get(key)):
            yield values[key]


def write_job(path: str, config: TrainingConfig, prepared: Optional[dict] = None) -> str:
    from . import __version__

    record = {"format": FORMAT, "schema_version": SCHEMA_VERSION,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "berunda_version": __version__,
              "data_root": common_root(config), "config": config.to_dict()}
    if prepared is not None:
        record["prepared"] = prepared
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        os.makedirs(folder, exist_ok=True)
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1, ensure_ascii=False)
    return path


def read_job(path: str, data_root: Optional[str] = None) -> Job:
    """Load and check a job; raise JobFileError naming the problem and the fix."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        raise JobFileError(f"The job file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise JobFileError(f"{path} is not a readable training job (JSON expected: {exc}). Write "
                           "one with berunda:train's EXPORT_JOB.") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise JobFileError(f"{path} is not a Berunda training job (no \"format\": \"{FORMAT}\"). "
                           "Write one with berunda:train's EXPORT_JOB.")
    version = record.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise JobFileError(f"{path}: \"schema_version\" must be a positive integer.")
    if version > SCHEMA_VERSION:
        raise JobFileError(f"{path} is a job of schema version {version}, written by a newer "
                           f"Berunda; this one reads version {SCHEMA_VERSION} and older. Update "
                           "Berunda where you train.")
    values = record.get("config")
    if not isinstance(values, dict):
        raise JobFileError(f"{path} has no \"config\" object: the training parameters are missing.")
    fields = {f.name: f for f in dataclasses.fields(TrainingConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise JobFileError(f"{path}: unknown key(s) {', '.join(unknown)} in \"config\" (a typo, or a "
                           "job from a newer Berunda). `python -m berunda train --help` lists "
                           "the keys.")
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in values]
    if missing:
        raise JobFileError(f"{path}: \"config\" lacks the required key(s) {', '.join(missing)}.")
    base = os.path.dirname(os.path.abspath(path))
    values = _relocate(values, base, record.get("data_root") or "", data_root)
    try:
        config = TrainingConfig(**values)
    except TypeError as exc:
        raise JobFileError(f"{path}: {exc}") from None
    _check_types(config, path)
    _check_files(config, path, data_root)
    prepared = record.get("prepared")
    if prepared is not None and not (isinstance(prepared, dict) and
                                     {"classes", "normalization"} <= set(prepared)):
        raise JobFileError(f"{path}: \"prepared\" must hold \"classes\" and \"normalization\"; "
                           "remove it to recompute them from the rasters.")
    return Job(config, prepared, path)


def _relocate(values: dict, base: str, recorded_root: str, data_root: Optional[str]) -> dict:
    def move(p):
        if not isinstance(p, str):
            return p
        if not os.path.isabs(p):
            return os.path.normpath(os.path.join(data_root or base, p))
        if data_root and recorded_root:
            try:
                inside = os.path.commonpath([os.path.abspath(p), recorded_root]) == recorded_root
            except ValueError:
                inside = False
            if inside:
                return os.path.join(data_root, os.path.relpath(p, recorded_root))
        return p

    out = dict(values)
    for key in PATH_LIST_KEYS:
        if isinstance(out.get(key), list):
            out[key] = [move(p) for p in out[key]]
    for key in PATH_KEYS:
        if _is_path(out.get(key)):
            out[key] = move(out[key])
    return out


def _check_types(config: TrainingConfig, path: str) -> None:
    for key in PATH_LIST_KEYS:
        value = getattr(config, key)
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise JobFileError(f"{path}: \"{key}\" must be a list of file paths.")
    for f in dataclasses.fields(TrainingConfig):
        value = getattr(config, f.name)
        expected = {"int": int, "float": (int, float), "bool": bool, "str": str}.get(str(f.type))
        if expected is None or value is None:
            continue
        if isinstance(value, bool) and expected is not bool:
            ok = False
        else:
            ok = isinstance(value, expected)
        if not ok:
            raise JobFileError(f"{path}: \"{f.name}\" must be of type {f.type} (got {value!r}).")


def _check_files(config: TrainingConfig, path: str, data_root: Optional[str]) -> None:
    missing = [p for p in _paths(config.to_dict()) if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        hint = ("check --data-root" if data_root else
                "if the data moved, give its new folder with --data-root")
        raise JobFileError(f"{path}: {len(missing)} input file(s) of the job do not exist: {shown}; "
                           f"{hint}.")
