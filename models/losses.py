"""The supervised loss Ls of L = Ls + λ·Lu, chosen by id (SUPERVISED_LOSS).

- ``ce``: cross-entropy over the labelled pixels, as in the paper.
- ``weighted_ce``: cross-entropy with median-frequency class weights (Eigen & Fergus 2015):
  w_c = median(f) / f_c, f_c = the class's share of the labelled pixels, clipped to
  [1/MAX_CLASS_WEIGHT, MAX_CLASS_WEIGHT] so a class of a few pixels cannot dominate a step.
  The counts are those the model stores (classes.pixel_counts: all pixels of the label rasters).
- ``ce_dice``: cross-entropy + smp's multi-class Dice loss (labelled pixels only).

Every loss ignores IGNORE_INDEX pixels and gives 0 (not NaN) on a batch without any, and
takes ``labelled``: the labelled pixels of the whole optimiser step when ``labels`` is one
micro-batch of it (engine/step.py), so that micro-batches add up to the step's loss.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from . import IGNORE_INDEX

SupervisedLoss = Callable[..., torch.Tensor]   # (seg_logits, labels, labelled=None) -> loss
MAX_CLASS_WEIGHT = 10.0


def supervised_loss(seg_logits: torch.Tensor, labels: torch.Tensor,
                    labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy averaged over labelled pixels; nodata/unlabeled pixels are ignored.

    Summed then divided by max(count, 1), so a batch without labelled pixels gives 0
    (not NaN) and no GPU->CPU synchronisation is needed to check for that.
    ``labelled``: the count to divide by when ``labels`` is a micro-batch of a larger step
    (the step's labelled pixels); default: the labelled pixels of ``labels``.
    """
    total = F.cross_entropy(seg_logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (labels != IGNORE_INDEX).sum() if labelled is None else labelled
    return total / count.clamp(min=1)


def _share(labels: torch.Tensor, labelled: Optional[torch.Tensor]):
    """This micro-batch's share of the step's labelled pixels (1 without a split)."""
    if labelled is None:
        return 1.0
    return (labels != IGNORE_INDEX).sum() / labelled.clamp(min=1)


def median_frequency_weights(pixel_counts: Sequence[int]) -> torch.Tensor:
    """w_c = median(f) / f_c, clipped to [1/MAX_CLASS_WEIGHT, MAX_CLASS_WEIGHT]."""
    counts = torch.as_tensor([max(int(n), 1) for n in pixel_counts], dtype=torch.float64)
    freq = counts / counts.sum()
    weights = freq.median() / freq
    return weights.clamp(1.0 / MAX_CLASS_WEIGHT, MAX_CLASS_WEIGHT).float()


def weighted_cross_entropy(weights: torch.Tensor) -> SupervisedLoss:
    def loss(seg_logits: torch.Tensor, labels: torch.Tensor,
             labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
        w = weights.to(seg_logits.device)
        total = F.cross_entropy(seg_logits.float(), labels, weight=w, ignore_index=IGNORE_INDEX,
                                reduction="sum")
        known = labels != IGNORE_INDEX
        # The weighted mean, as F.cross_entropy's "mean" but 0 on a batch without labels.
        mean = total / (w[labels.clamp(min=0)] * known).sum().clamp(min=1e-12)
        return mean * _share(labels, labelled)
    return loss


def cross_entropy_dice() -> SupervisedLoss:
    from segmentation_models_pytorch.losses import DiceLoss

    dice = DiceLoss("multiclass", from_logits=True, ignore_index=IGNORE_INDEX)

    def loss(seg_logits: torch.Tensor, labels: torch.Tensor,
             labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
        return (supervised_loss(seg_logits, labels, labelled)
                + dice(seg_logits.float(), labels) * _share(labels, labelled))
    return loss


def class_weights(loss_id: str, pixel_counts: Optional[Sequence[int]]) -> Optional[torch.Tensor]:
    """The per-class weights loss ``loss_id`` gives the labels (None: every class weighs 1):
    an auxiliary task that learns pseudo-labels weighs them the same way."""
    if loss_id == "weighted_ce" and pixel_counts:
        return median_frequency_weights(pixel_counts)
    return None


#: id -> factory(pixel_counts) of the loss; the ids are SUPERVISED_LOSSES in engine/parameters.py
FACTORIES: Dict[str, Callable[[Optional[Sequence[int]]], SupervisedLoss]] = {
    "ce": lambda counts: supervised_loss,
    "weighted_ce": lambda counts: (weighted_cross_entropy(class_weights("weighted_ce", counts))
                                   if counts else supervised_loss),
    "ce_dice": lambda counts: cross_entropy_dice(),
}


def make_supervised_loss(loss_id: str,
                         pixel_counts: Optional[Sequence[int]] = None) -> SupervisedLoss:
    """The supervised loss ``loss_id``; ``pixel_counts`` (per class, in class order) are needed
    by ``weighted_ce`` (without them every class weighs 1)."""
    if loss_id not in FACTORIES:
        raise ValueError(f"SUPERVISED_LOSS {loss_id!r} is unknown; choose one of "
                         f"{', '.join(FACTORIES)}.")
    return FACTORIES[loss_id](pixel_counts)
