"""When a pseudo-labelling task may start to learn from its own predictions.

A network that has not yet learned its labels teaches its own mistakes to itself
(confirmation bias; bench/README.md, issue 28: at the CPU budget self-training fell below
supervised on data it was not tuned on).  The gate stays shut until the network's **mean
class recall on the labelled pixels it trains on** (an exponential moving average over
optimiser steps of per-class correct / labelled pixel counts, so a rare class counts as much
as a frequent one) reaches ``threshold``; after it opens, the weight of the unsupervised
loss rises linearly over ``ramp_steps`` steps (Laine & Aila's ramp-up, started by quality
rather than by the clock).  ``threshold`` 0 and ``ramp_steps`` 0: always open, weight 1.
"""
from __future__ import annotations

import torch

from .. import IGNORE_INDEX


class TeacherGate:
    decay = 0.9     # EMA of the per-class counts: about the last ten steps

    def __init__(self, threshold: float = 0.0, ramp_steps: int = 0):
        self.threshold = float(threshold)
        self.ramp_steps = int(ramp_steps)
        self.correct = None        # (C,) EMA of correctly predicted labelled pixels per class
        self.total = None          # (C,) EMA of labelled pixels per class
        self._step_correct = None  # this step's counts, summed over its micro-batches
        self._step_total = None
        self.opened_at = 0 if self.threshold <= 0 else None   # step the gate opened
        self.steps = 0

    @property
    def watching(self) -> bool:
        return self.opened_at is None

    def observe(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count a micro-batch's labelled pixels (no gradient, no synchronisation)."""
        known = labels != IGNORE_INDEX
        classes = logits.shape[1]
        truth = labels[known]
        hit = logits.detach().argmax(dim=1)[known] == truth
        total = torch.bincount(truth, minlength=classes).double()
        correct = torch.bincount(truth[hit], minlength=classes).double()
        if self._step_total is None:
            self._step_total, self._step_correct = total, correct
        else:
            self._step_total = self._step_total + total
            self._step_correct = self._step_correct + correct

    def recall(self) -> float:
        """Mean recall over the classes labelled so far (0 before any labelled pixel)."""
        if self.total is None:
            return 0.0
        seen = self.total > 0
        if not bool(seen.any()):
            return 0.0
        return float((self.correct[seen] / self.total[seen]).mean())

    def step(self) -> None:
        """After each optimiser step: fold in the step's counts; open when good enough."""
        if self._step_total is not None:
            total, correct = self._step_total.cpu(), self._step_correct.cpu()
            if self.total is None:
                self.total, self.correct = total, correct
            else:
                self.total = self.decay * self.total + (1 - self.decay) * total
                self.correct = self.decay * self.correct + (1 - self.decay) * correct
            if self.watching and self.recall() >= self.threshold:
                self.opened_at = self.steps + 1
        self._step_total = self._step_correct = None
        self.steps += 1

    @property
    def open(self) -> bool:
        return self.opened_at is not None and self.steps >= self.opened_at

    def weight(self) -> float:
        """The unsupervised loss's factor for the coming step: 0 while shut, then the ramp."""
        if not self.open:
            return 0.0
        if self.ramp_steps <= 0:
            return 1.0
        return min(1.0, (self.steps - self.opened_at + 1) / self.ramp_steps)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "opened_at": self.opened_at,
                "correct": None if self.correct is None else self.correct.tolist(),
                "total": None if self.total is None else self.total.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state.get("steps", 0))
        self.opened_at = state.get("opened_at", self.opened_at)
        for name in ("correct", "total"):
            value = state.get(name)
            setattr(self, name, None if value is None else torch.tensor(value, dtype=torch.float64))
