"""The supervised loss of L = Ls + λ·Lu."""
from typing import Optional

import torch
import torch.nn.functional as F

from . import IGNORE_INDEX


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
