"""Random training windows read straight from the rasters.

A raster is drawn in proportion to its valid area (labelled pixels for
labeled pairs, pixel count for unlabeled rasters), then a random window in it;
windows with too much nodata are redrawn.  Only the window is read.  All
randomness comes from the ``numpy.random.Generator`` passed in, so an epoch's
tiles are a pure function of (seed, epoch): resuming reproduces them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from ..models import IGNORE_INDEX
from .labels import ClassMapper
from .normalization import normalize
from .rasters import data_bands, open_raster, read_pixels, read_window

MAX_DRAWS = 20


@dataclass
class Tile:
    image: np.ndarray   # (bands, T, T) float32, normalised, 0 where invalid
    label: np.ndarray   # (T, T) int64 class index or IGNORE_INDEX
    valid: np.ndarray   # (T, T) float32 1/0 image validity
    window: tuple = ()  # (raster index, row, col) it was read from (which tiles a rank drew)


class WindowSampler:
    """Draws tiles from image rasters (and their label rasters, if given).

    Opens its datasets lazily in the thread that samples (rasterio datasets
    must not be shared between threads)."""

    def __init__(self, images: Sequence[str], labels: Optional[Sequence[str]], weights: Sequence[float],
                 tile: int, stats: dict, mapper: Optional[ClassMapper],
                 max_invalid_fraction: float = 0.5, augment: bool = True,
                 bands: Optional[Sequence[int]] = None):
        """``bands``: the 1-based image bands to read; None = every band but alpha."""
        self.images, self.labels = list(images), list(labels) if labels else None
        self.bands = list(bands) if bands else None
        w = np.asarray(weights, dtype=np.float64)
        self.p = w / w.sum()
        self.tile, self.stats, self.mapper = tile, stats, mapper
        self.min_valid = 1.0 - max_invalid_fraction
        self.augment = augment
        self._open: Optional[List] = None

    def _datasets(self):
        if self._open is None:
            self._open = [(open_raster(img), open_raster(lab) if self.labels else None)
                          for img, lab in zip(self.images, self.labels or [None] * len(self.images))]
        return self._open

    def close(self) -> None:
        for img, lab in self._open or []:
            img.close()
            if lab is not None:
                lab.close()
        self._open = None

    def sample(self, rng: np.random.Generator) -> Tile:
        datasets = self._datasets()
        t = self.tile
        best = None
        for _ in range(MAX_DRAWS):
            index = int(rng.choice(len(datasets), p=self.p))
            img_ds, lab_ds = datasets[index]
            row = int(rng.integers(min(0, img_ds.height - t), max(0, img_ds.height - t) + 1))
            col = int(rng.integers(min(0, img_ds.width - t), max(0, img_ds.width - t) + 1))
            raw, valid = read_pixels(img_ds, self.bands or data_bands(img_ds), row, col, t, t)
            if lab_ds is not None:
                lab_fill = lab_ds.nodata if lab_ds.nodata is not None else 0
                lab = self.mapper.to_index(read_window(lab_ds, row, col, t, t, fill=lab_fill)[0])
                lab[~valid] = IGNORE_INDEX
                score = float((lab != IGNORE_INDEX).mean())
            else:
                lab = np.full((t, t), IGNORE_INDEX, dtype=np.int64)
                score = float(valid.mean())
            if best is None or score > best[0]:
                best = (score, raw, valid, lab, img_ds, (index, row, col))
            if score >= self.min_valid:
                break
        _, raw, valid, lab, img_ds, window = best
        image = normalize(raw, valid, self.stats)
        valid_f = valid.astype(np.float32)
        if self.augment:
            image, lab, valid_f = _augment(rng, image, lab, valid_f)
        return Tile(np.ascontiguousarray(image), np.ascontiguousarray(lab),
                    np.ascontiguousarray(valid_f), window)


def _augment(rng, image, label, valid):
    """Random flips and 90° rotations (the 8 dihedral transforms), same for all arrays."""
    k = int(rng.integers(0, 4))
    flip = bool(rng.integers(0, 2))
    image, label, valid = (np.rot90(a, k, axes=(-2, -1)) for a in (image, label, valid))
    if flip:
        image, label, valid = (a[..., ::-1] for a in (image, label, valid))
    return image, label, valid
