"""The supervised loss of L = Ls + λ·Lu."""
import torch
import torch.nn.functional as F

from . import IGNORE_INDEX


def supervised_loss(seg_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over labelled pixels; nodata/unlabeled pixels are ignored.

    Summed then divided by max(count, 1), so a batch without labelled pixels gives 0
    (not NaN) and no GPU->CPU synchronisation is needed to check for that.
    """
    total = F.cross_entropy(seg_logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)
