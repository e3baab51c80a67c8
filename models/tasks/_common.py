"""Small helpers shared by the task losses: parameter checks, float32 maths,
masked means, soft centroids."""
from __future__ import annotations

import contextlib
import math

import torch

EPS = 1e-6  # denominators: empty clusters, tiles without valid (masked) pixels


def number(name: str, value, low: float, high: float = math.inf, integer: bool = False,
           high_open: bool = False):
    """Parse a hyper-parameter (it may come from JSON or a form) and check
    low <= value <= high (value < high when ``high_open``).

    Raises ValueError naming the parameter and its valid range.
    """
    what = "an integer" if integer else "a number"
    rng = f">= {low}" if high == math.inf else f"in [{low}, {high}{')' if high_open else ']'}"
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = math.nan
    ok = (not isinstance(value, bool) and math.isfinite(f) and (not integer or f == int(f))
          and low <= f and (f < high if high_open else f <= high))
    if not ok:
        raise ValueError(f"{name} must be {what} {rng}, got {value!r}")
    return int(f) if integer else f


def choice(name: str, value, options):
    """Check that a string hyper-parameter is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(options)}, got {value!r}")
    return value


def float32(device: torch.device):
    """Disable autocast: einsum would otherwise run in fp16 under AMP, and centroid
    ratios and 1 - Σŷ² lose too much precision there."""
    if not torch.amp.is_autocast_available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def masked_mean(per_pixel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of a (B,1,H,W) map over valid pixels (valid is 1/0); 0, not NaN, when none is."""
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)


def soft_centroids(x: torch.Tensor, p: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-image soft centroids c_k = Σ_i x_i ŷ_ik / (Σ_i ŷ_ik + ε) over valid pixels.

    x (B,C,H,W), p (B,K,H,W) memberships, valid (B,1,H,W) -> (B,K,C).
    Per image (sum over height and width of each sample), as the public
    Mumford–Shah code does.  Not detached: gradients flow through the
    memberships into the centroids.
    """
    pw = p * valid
    num = torch.einsum("bchw,bkhw->bkc", x, pw)
    return num / (pw.sum(dim=(2, 3)).unsqueeze(-1) + EPS)
