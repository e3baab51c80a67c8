"""Per-band normalisation statistics, computed once from training images and
stored in the model.

Robust and dtype-aware: values are clipped to the 0.5–99.5 percentiles of a
random pixel sample (so a few saturated or wild pixels don't set the scale),
then standardised with the clipped sample's mean and std.  Works the same for
UInt8, UInt16, Int16 and Float32 reflectance.  Invalid pixels become 0 (the
band mean) after normalisation.  Which pixels are valid: ``rasters.read_pixels`` (GDAL's
mask rule: mask band / alpha / all used bands nodata), the rule training windows and
classification use too.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from .errors import DataError
from .rasters import data_bands, open_raster, read_pixels

LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5


def compute_statistics(paths: Sequence[str], rng: np.random.Generator,
                       windows_per_raster: int = 8, window: int = 256,
                       max_pixels: int = 400_000,
                       bands: Optional[Sequence[int]] = None) -> Dict[str, List[float]]:
    """``bands``: 1-based bands to describe; None = every band but alpha."""
    samples = []
    for path in paths:
        with open_raster(path) as ds:
            used = list(bands) if bands else data_bands(ds)
            h, w = min(window, ds.height), min(window, ds.width)
            for _ in range(windows_per_raster):
                r = int(rng.integers(0, ds.height - h + 1))
                c = int(rng.integers(0, ds.width - w + 1))
                data, ok = read_pixels(ds, used, r, c, h, w)
                if ok.any():
                    samples.append(data[:, ok].astype(np.float64))
    if not samples:
        raise DataError(
            "No valid pixel found in the training images (all nodata?). "
            "Check the images' nodata value.")
    pixels = np.concatenate(samples, axis=1)
    if pixels.shape[1] > max_pixels:
        pixels = pixels[:, rng.choice(pixels.shape[1], max_pixels, replace=False)]
    low = np.percentile(pixels, LOW_PERCENTILE, axis=1)
    high = np.percentile(pixels, HIGH_PERCENTILE, axis=1)
    clipped = np.clip(pixels, low[:, None], high[:, None])
    mean = clipped.mean(axis=1)
    std = np.maximum(clipped.std(axis=1), 1e-6)
    return {"low": low.tolist(), "high": high.tolist(), "mean": mean.tolist(), "std": std.tolist()}


def normalize(data: np.ndarray, valid: np.ndarray, stats: Dict[str, List[float]]) -> np.ndarray:
    """(bands, H, W) raw values -> float32 standardised values, 0 where invalid."""
    low = np.asarray(stats["low"], np.float32)[:, None, None]
    high = np.asarray(stats["high"], np.float32)[:, None, None]
    mean = np.asarray(stats["mean"], np.float32)[:, None, None]
    std = np.asarray(stats["std"], np.float32)[:, None, None]
    out = (np.clip(data.astype(np.float32), low, high) - mean) / std
    out[:, ~valid] = 0.0
    return out
