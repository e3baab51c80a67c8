"""The interface every auxiliary task implements.

A task says what the auxiliary head must output, prepares a batch (masks,
shuffles, strong views) and computes its unsupervised loss.  The training step
only calls these methods, in this order, for every optimiser step; it never
branches on a task's id:

    prepared = task.prepare(images, labels, valid, generator)   # CPU, the whole step
    task.before_step(net, prepared, device, chunk)   # once per step, no gradient
    for each micro-batch (the whole step unless CUDA ran out of memory):
        out = task.forward(net, micro)               # default: net(micro.inputs)
        L   = Ls(out.seg, micro.labels) + λ · task.loss(out, micro)
    optimiser step; task.after_step(net)

Tensors a task puts in ``PreparedBatch.extra`` must have one row per tile: the
step cuts every one of them into the same micro-batches.  ``state_dict`` is saved
in every checkpoint (an EMA teacher, step counters) so that a resumed run
continues exactly; ``epoch_metrics`` goes into the log and the history.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict, Optional

import torch

from .. import IGNORE_INDEX
from ..network import NetOutput


@dataclass
class PreparedBatch:
    inputs: torch.Tensor          # (B, bands, H, W) what the network sees
    targets: torch.Tensor         # (B, bands, H, W) the image the auxiliary loss compares to
    labels: torch.Tensor          # (B, H, W) int64 class indices, IGNORE_INDEX where unknown
    valid: torch.Tensor           # (B, 1, H, W) float 1/0: pixels with valid image data
    extra: Dict[str, torch.Tensor] = field(default_factory=dict)  # task-specific, one row per tile

    def rows(self, sl, device) -> "PreparedBatch":
        """Rows ``sl`` of every tensor, on ``device`` (a micro-batch)."""
        move = lambda t: t[sl].to(device, non_blocking=True)  # noqa: E731
        inputs = move(self.inputs)
        targets = inputs if self.targets is self.inputs else move(self.targets)
        return PreparedBatch(inputs, targets, move(self.labels), move(self.valid),
                             {k: move(v) for k, v in self.extra.items()})


def unlabeled_rows(labels: torch.Tensor) -> torch.Tensor:
    """(B,) bool: tiles without a single labelled pixel (the unlabeled rasters' tiles)."""
    return ~(labels != IGNORE_INDEX).flatten(1).any(dim=1)


class AuxiliaryTask:
    task_id: ClassVar[str] = ""
    default_lambda: ClassVar[float] = 0.0
    # λ that LAMBDA=auto keeps fixed for a loss that is already in the supervised loss's units
    # (a cross-entropy over the same kind of pixels); None: auto balances the magnitudes.
    auto_lambda: ClassVar[Optional[float]] = None
    description: ClassVar[str] = ""
    uses_unlabeled: ClassVar[bool] = True  # False only for the supervised baseline

    def hparams(self) -> dict:
        """JSON-able hyper-parameters (stored in the model file)."""
        return {}

    def head_channels(self, in_channels: int) -> int:
        """Channels of the pixel-wise auxiliary head (0: no head)."""
        return 0

    def classifier_classes(self) -> int:
        """Classes of the pooled bottleneck classifier (0: none)."""
        return 0

    def use_class_weights(self, weights: Optional[torch.Tensor]) -> None:
        """The supervised loss's per-class weights (None: every class weighs 1), given once
        before training: a task that learns pseudo-labels weighs them like the labels."""

    def prepare(self, images: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> PreparedBatch:
        return PreparedBatch(inputs=images, targets=images, labels=labels, valid=valid)

    def before_step(self, net, batch: PreparedBatch, device: torch.device,
                    chunk: Optional[int] = None) -> None:
        """Once per optimiser step, before the step is cut into micro-batches, without
        gradient: work that must see every tile of the step (pseudo-labels, CutMix partners).
        ``chunk``: at most this many tiles per forward pass (None: any)."""

    def forward(self, net, batch: PreparedBatch) -> NetOutput:
        """The passes of one micro-batch; ``out.seg`` (one row per tile) feeds Ls."""
        return net(batch.inputs)

    def loss(self, out: NetOutput, batch: PreparedBatch) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, net) -> None:
        """After the optimiser step (e.g. an EMA teacher follows the weights)."""

    def epoch_metrics(self) -> dict:
        """Numbers for this epoch's log line and history record; resets them."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
