"""Random training windows read straight from the rasters.

A raster is drawn in proportion to its valid area (labelled pixels for
labeled pairs, pixel count for unlabeled rasters), then a random window in it;
windows with too much nodata are redrawn.  Only the window is read.  All
randomness comes from the ``numpy.random.Generator`` passed in, so a step's
tiles are a pure function of its generator's seed: resuming reproduces them, and
so does reading them in any number of threads.
"""
from __future__ import annotations

import threading
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

    A rasterio dataset must not be used by two threads at once: each ``sample`` call
    borrows a set of open datasets that no other call holds (opened lazily, raster
    by raster), so there are never more sets than threads sampling at the same time."""

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
        self._lock = threading.Lock()
        self._sets: List[list] = []   # every set opened (closed by close())
        self._free: List[list] = []   # the sets no sample call holds

    def _pair(self, datasets: list, index: int):
        if datasets[index] is None:
            lab = self.labels[index] if self.labels else None
            datasets[index] = (open_raster(self.images[index]),
                               open_raster(lab) if lab else None)
        return datasets[index]

    def close(self) -> None:
        with self._lock:
            for datasets in self._sets:
                for pair in datasets:
                    for ds in pair or ():
                        if ds is not None:
                            ds.close()
            self._sets, self._free = [], []

    def sample(self, rng: np.random.Generator) -> Tile:
        with self._lock:
            if not self._free:
                self._sets.append([None] * len(self.images))
                self._free.append(self._sets[-1])
            datasets = self._free.pop()
        try:
            return self._sample(rng, datasets)
        finally:
            with self._lock:
                if any(s is datasets for s in self._sets):   # not closed meanwhile
                    self._free.append(datasets)

    def _sample(self, rng: np.random.Generator, datasets: list) -> Tile:
        t = self.tile
        best = None
        for _ in range(MAX_DRAWS):
            index = int(rng.choice(len(datasets), p=self.p))
            img_ds, lab_ds = self._pair(datasets, index)
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


def step_generator(seed: int, epoch: int, step: int, rank_parts=()) -> np.random.Generator:
    """The random stream of one training step: its tiles depend on (seed, epoch, rank,
    step) alone, not on which thread reads them or in which order."""
    return np.random.default_rng([seed, epoch, *rank_parts, step])


def read_step(labeled: WindowSampler, unlabeled: Optional[WindowSampler],
              rng: np.random.Generator, tiles: int):
    """One step's ``tiles`` labeled (+ as many unlabeled) tiles: (images, labels, valid)
    stacked, and the labeled tiles' windows."""
    drawn = [labeled.sample(rng) for _ in range(tiles)]
    windows = [list(t.window) for t in drawn]
    if unlabeled is not None:
        drawn += [unlabeled.sample(rng) for _ in range(tiles)]
    return (np.stack([t.image for t in drawn]), np.stack([t.label for t in drawn]),
            np.stack([t.valid for t in drawn])[:, None], windows)


def _augment(rng, image, label, valid):
    """Random flips and 90° rotations (the 8 dihedral transforms), same for all arrays."""
    k = int(rng.integers(0, 4))
    flip = bool(rng.integers(0, 2))
    image, label, valid = (np.rot90(a, k, axes=(-2, -1)) for a in (image, label, valid))
    if flip:
        image, label, valid = (a[..., ::-1] for a in (image, label, valid))
    return image, label, valid
