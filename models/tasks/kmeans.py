"""Relaxed k-means segmentation (paper eq. 3–4).

The auxiliary head outputs K logits per pixel; ŷ = softmax over K.  Per image,
c_k = Σ_i x_i ŷ_ik / (Σ_i ŷ_ik + ε) over valid pixels and x_c = Σ_k c_k ŷ_k.

    Lu = mean_i ‖x_i − x_c,i‖₁  +  α · mean_i Σ_k ŷ_ik (1 − ŷ_ik)

Normalisation: both terms are means over valid pixels (norm summed over bands),
as for the L1 reconstruction loss.  The paper writes the membership term as a
sum over pixels; taking the mean for both keeps λ and α independent of tile
size and α = 1 a balance between two per-pixel quantities.
Σ_k ŷ(1 − ŷ) = 1 − Σ_k ŷ² is zero only for one-hot memberships: it stops soft
mixtures of centroids from reconstructing any colour.
"""
from __future__ import annotations

import torch

from . import register
from ._common import float32, masked_mean, number, soft_centroids
from .base import AuxiliaryTask


class ClusterTask(AuxiliaryTask):
    """Shared by k-means and Mumford–Shah: K soft memberships and a weight α."""

    def __init__(self, alpha: float = 1.0, clusters: int = 10):
        self.alpha = number("alpha", alpha, 0.0)
        self.clusters = number("clusters", clusters, 2, 256, integer=True)

    def hparams(self):
        return {"alpha": self.alpha, "clusters": self.clusters}

    def head_channels(self, in_channels):
        return self.clusters

    def loss(self, out, batch):
        with float32(out.aux.device):
            p = torch.softmax(out.aux.float(), dim=1)
            x = batch.targets.float()
            valid = batch.valid.float()
            return self.cluster_loss(x, p, valid, soft_centroids(x, p, valid))

    def cluster_loss(self, x, p, valid, centroids):
        raise NotImplementedError


def membership_penalty(p: torch.Tensor) -> torch.Tensor:
    """Σ_k ŷ_k (1 − ŷ_k) per pixel: (B,K,H,W) -> (B,1,H,W)."""
    return (p * (1.0 - p)).sum(dim=1, keepdim=True)


@register
class KMeansTask(ClusterTask):
    task_id = "kmeans"
    default_lambda = 1.0
    description = "relaxed k-means segmentation"

    def cluster_loss(self, x, p, valid, centroids):
        quantized = torch.einsum("bkc,bkhw->bchw", centroids, p)  # x_c
        fidelity = (x - quantized).abs().sum(dim=1, keepdim=True)
        return masked_mean(fidelity, valid) + self.alpha * masked_mean(membership_penalty(p), valid)
