"""Training under torchrun (DistributedDataParallel) or in one process.

``torchrun`` sets WORLD_SIZE/RANK/LOCAL_RANK; without them the training is the plain
single-process one.
"""
from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def train_maybe_distributed(config, output_path, reporter, resume=None, prepared=None):
    """The TrainingResult (None on ranks other than 0)."""
    from .trainer import train

    if world_size() <= 1:
        return train(config, output_path, reporter, resume=resume, prepared=prepared)
    raise NotImplementedError("multi-process training")
