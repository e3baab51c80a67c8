"""The interface every auxiliary task implements.

A task says what the auxiliary head must output, prepares a batch (masks,
shuffles) and computes its unsupervised loss.  The training step only calls
these methods; it never branches on a task's id.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict, Optional

import torch

from ..network import NetOutput


@dataclass
class PreparedBatch:
    inputs: torch.Tensor          # (B, bands, H, W) what the network sees
    targets: torch.Tensor         # (B, bands, H, W) the image the auxiliary loss compares to
    labels: torch.Tensor          # (B, H, W) int64 class indices, IGNORE_INDEX where unknown
    valid: torch.Tensor           # (B, 1, H, W) float 1/0: pixels with valid image data
    extra: Dict[str, torch.Tensor] = field(default_factory=dict)  # task-specific (mask, permutation)


class AuxiliaryTask:
    task_id: ClassVar[str] = ""
    default_lambda: ClassVar[float] = 0.0
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

    def prepare(self, images: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> PreparedBatch:
        return PreparedBatch(inputs=images, targets=images, labels=labels, valid=valid)

    def loss(self, out: NetOutput, batch: PreparedBatch) -> torch.Tensor:
        raise NotImplementedError
