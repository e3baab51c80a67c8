"""Reconstruction tasks: the auxiliary head outputs the image back (one channel per band).

Normalisation (SPEC: (1/N) Σ_i ‖x_i − x̂_i‖): the norm of the per-pixel vector is
taken over bands (L1: Σ_bands |x − x̂|, L2: Σ_bands (x − x̂)²), then averaged over
the valid pixels of the whole batch (nodata pixels are left out).  The mean over
pixels keeps λ independent of tile and batch size; the sum over bands makes the
paper's λ (0.5 for L1, 5 for L2, on RGB) mean the same thing for 3-band images.
"""
from __future__ import annotations

from . import register
from ._common import float32, masked_mean
from .base import AuxiliaryTask


class _Reconstruction(AuxiliaryTask):
    def head_channels(self, in_channels):
        return in_channels

    def per_pixel(self, diff):
        raise NotImplementedError

    def loss(self, out, batch):
        with float32(out.aux.device):
            diff = batch.targets.float() - out.aux.float()
            return masked_mean(self.per_pixel(diff), batch.valid.float())


@register
class L1Reconstruction(_Reconstruction):
    task_id = "l1"
    default_lambda = 0.5
    description = "reconstruction, L1 loss"

    def per_pixel(self, diff):
        return diff.abs().sum(dim=1, keepdim=True)


@register
class L2Reconstruction(_Reconstruction):
    task_id = "l2"
    default_lambda = 5.0
    description = "reconstruction, L2 loss"

    def per_pixel(self, diff):
        return diff.pow(2).sum(dim=1, keepdim=True)
