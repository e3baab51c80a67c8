"""Is an exported ONNX graph Berunda's network, or a wrong one?  onnxruntime and torch never
give bit-identical soft-max: their convolution kernels sum in other orders (by CPU
instruction set, thread count and tile size).  A wrong graph (bands swapped, normalisation
skipped, classes reordered) differs by tenths; rounding by ten-thousandths.  The check tells
them apart with two criteria on a probe tile:

* the soft-max differs by at most ``rounding_tolerance`` — float32 rounding over this
  network's depth and widest sum (below); and
* the predicted class agrees on >= 99.9 % of the valid pixels whose two best classes are
  further apart than twice that tolerance (closer ones may swap by rounding alone).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch import nn

FLOAT32_EPS = float(np.finfo(np.float32).eps)   # 1.19e-7: one rounding's relative error
# Measured (bench/bench_onnx_check.py, 2-core AMD EPYC, torch 2.14.1, onnxruntime 1.30): over
# 80 correct exports — resnet18 RGB UInt8 / 4-band UInt16 / Float32 models and a resnet34,
# tiles 64-512, 1-2 threads, opsets 13 and 17 — the largest difference was 2.7e-4, 0.28 of
# the bound below without this factor (the former fixed 1e-4 refused tiles >= 128 px there);
# the broken graphs (bands swapped, standardisation skipped, classes reordered) differed by
# >= 0.996, over 1400 times that bound.  The factor leaves room for CPUs and kernels that
# round worse than this one; the bound still sits 350 times below a broken graph.
SAFETY = 4.0
FLOOR = 1e-4        # never stricter than the former fixed tolerance
CEILING = 1e-2      # never laxer: a broken graph differs by 0.1 and more
MIN_AGREEMENT = 0.999


def network_rounding(net: nn.Module):
    """(convolutions along the network, the longest sum one output value needs)."""
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    if not convs:
        return 1, 1
    longest = max(m.in_channels // m.groups * math.prod(m.kernel_size) for m in convs)
    return len(convs), longest


def rounding_tolerance(net: nn.Module, logit_scale: float) -> float:
    """Largest soft-max difference float32 rounding explains for ``net``.

    Each output of a convolution sums ``longest`` products: independent roundings grow its
    relative error like eps·sqrt(longest); ``depth`` convolutions in a row compound it like
    sqrt(depth) (a random walk, as float32 errors of unrelated kernels are).  The logits
    carry that relative error times their own size (``logit_scale``, the largest |logit| on
    the probe), and the soft-max passes on at most a quarter of a logit's error to a
    probability.  Times SAFETY, kept within [FLOOR, CEILING]."""
    depth, longest = network_rounding(net)
    bound = 0.25 * max(logit_scale, 1.0) * FLOAT32_EPS * math.sqrt(longest * depth)
    return float(min(CEILING, max(FLOOR, SAFETY * bound)))


@dataclass
class Comparison:
    max_difference: float      # over the compared pixels
    tolerance: float
    agreement: float           # share of the decided valid pixels with the same class
    decided: int               # valid pixels whose two best classes are > 2 × tolerance apart
    valid: int

    @property
    def passed(self) -> bool:
        return self.max_difference <= self.tolerance and self.agreement >= MIN_AGREEMENT

    def words(self) -> str:
        return (f"soft-max within {self.max_difference:.1e} of Berunda's torch path (allowed "
                f"{self.tolerance:.1e} for float32 rounding); the same class on "
                f"{100 * self.agreement:.2f} % of {self.decided:,} decided pixels "
                f"(of {self.valid:,} valid)")


def decided_pixels(probs: np.ndarray, valid: np.ndarray, tolerance: float) -> np.ndarray:
    """(H, W): valid pixels whose two best classes are further apart than 2 × tolerance, so
    that a difference within the tolerance cannot swap them."""
    top2 = np.sort(probs, axis=0)[-2:]
    return valid & (top2[1] - top2[0] > 2 * tolerance)


def compare(onnx_probs: np.ndarray, torch_probs: np.ndarray, valid: np.ndarray,
            tolerance: float, everywhere: bool = True) -> Comparison:
    """Compare (classes, H, W) soft-max maps of the same tile; ``valid`` is (H, W).  The
    difference is taken over every pixel (nodata ones too: both paths compute them from the
    band means), or over the valid ones only when the other map has none elsewhere."""
    over = slice(None) if everywhere else valid
    difference = float(np.abs(onnx_probs[:, over] - torch_probs[:, over]).max())
    if not np.isfinite(difference):
        difference = float("inf")
    decided = decided_pixels(torch_probs, valid, tolerance)
    same = onnx_probs.argmax(0) == torch_probs.argmax(0)
    count = int(decided.sum())
    agreement = float(same[decided].mean()) if count else 1.0
    return Comparison(difference, tolerance, agreement, count, int(valid.sum()))
