"""Mumford–Shah segmentation loss (paper eq. 5; Kim & Ye, TIP 2019).

    Lu = mean_i Σ_k ‖x_i − c_k‖² ŷ_ik  +  α · TV(ŷ)

with the per-image soft centroids c_k of the k-means task (valid pixels only).

Units: the fidelity term is a mean over valid pixels (squared norm summed over
bands).  TV is the anisotropic L1 norm of the forward differences of the
softmax along both axes, summed over k and divided by the number of valid
pixels (a difference counts when both of its pixels are valid; the last
row/column has none): per pixel it lies in [0, 4], and a hard segmentation
pays 2 per boundary pixel pair and axis.  The reference code
(jongcye/CNN_MumfordShah_Loss) sums both terms over pixels instead; with the
mean, λ and α do not depend on the tile size.
"""
from __future__ import annotations

import torch

from . import register
from ._common import masked_mean
from .kmeans import ClusterTask


def total_variation(p: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Σ_k (|∂_h ŷ_k| + |∂_w ŷ_k|) over valid neighbour pairs, per valid pixel."""
    vh = valid[:, :, 1:, :] * valid[:, :, :-1, :]
    vw = valid[:, :, :, 1:] * valid[:, :, :, :-1]
    dh = (p[:, :, 1:, :] - p[:, :, :-1, :]).abs() * vh
    dw = (p[:, :, :, 1:] - p[:, :, :, :-1]).abs() * vw
    return (dh.sum() + dw.sum()) / valid.sum().clamp_min(1.0)


@register
class MumfordShahTask(ClusterTask):
    task_id = "mumford_shah"
    default_lambda = 1.0
    description = "Mumford–Shah segmentation"

    def cluster_loss(self, x, p, valid, centroids):
        # Σ_k ŷ_k ‖x − c_k‖² = ‖x − x_c‖² + (Σ_k ŷ_k ‖c_k‖² − ‖x_c‖²) with x_c = Σ_k ŷ_k c_k
        # (Σ_k ŷ_k = 1): same value, both parts >= 0, and no (B, K, bands, H, W) tensor.
        quantized = torch.einsum("bkc,bkhw->bchw", centroids, p)
        spread = torch.einsum("bkc,bkhw->bhw", centroids.pow(2), p).unsqueeze(1)
        spread = spread - quantized.pow(2).sum(dim=1, keepdim=True)
        fidelity = (x - quantized).pow(2).sum(dim=1, keepdim=True) + spread
        return masked_mean(fidelity, valid) + self.alpha * total_variation(p, valid)
