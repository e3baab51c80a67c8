"""The supervised loss and the total loss L = Ls + λ·Lu."""
import torch
import torch.nn.functional as F

from . import IGNORE_INDEX


def supervised_loss(seg_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over labelled pixels; nodata/unlabeled pixels are ignored.

    A batch with no labelled pixel gives 0 (not NaN) so it cannot poison training.
    """
    if not bool((labels != IGNORE_INDEX).any()):
        return seg_logits.float().sum() * 0.0
    return F.cross_entropy(seg_logits.float(), labels, ignore_index=IGNORE_INDEX)
