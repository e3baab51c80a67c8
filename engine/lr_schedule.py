"""Learning rate per optimiser step.

``constant`` keeps LEARNING_RATE (the paper's Adam).  ``poly`` decays it as
lr · (1 − t/T)^0.9 over the T steps of the training (DeepLab; UniMatch and most
semi-supervised segmentation recipes): the last steps are small, so the final
weights are not one noisy step away from a better point.  The rate is a function
of (epoch, step) only, so a resumed training continues the same curve.
"""
from __future__ import annotations

SCHEDULES = ("constant", "poly")
POLY_POWER = 0.9


def learning_rate_at(config, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The rate of step ``step`` (0-based) of epoch ``epoch`` (1-based)."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    done = (epoch - 1) * steps_per_epoch + step
    total = config.epochs * steps_per_epoch
    return config.learning_rate * (1.0 - done / total) ** POLY_POWER


def set_learning_rate(optimizer, rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = rate
