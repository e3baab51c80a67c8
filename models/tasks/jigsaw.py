"""Jigsaw puzzle (Noroozi & Favaro 2016, used as in JiGen, Carlucci et al. 2019).

The tile is cut into a 3×3 grid and the cells are permuted with one of P fixed
permutations; the pooled bottleneck classifier predicts which one
(cross-entropy).  The segmentation target and the nodata mask are permuted
identically with the image.

Classes: 0 = identity (tile left in order), 1..P = the P permutations.
JiGen keeps a share of ordered tiles (its β, "bias_whole_image"); a tile is left
in order with probability UNSHUFFLED_SHARE = 0.3.

The supervised head never learns from shuffled cells (artificial seams and
out-of-context cells never occur at inference); ``supervision`` says how:

- ``labeled_ordered`` (default): only tiles without labels (the unlabeled
  rasters' tiles) are shuffled, 70 % of them; labeled tiles stay in order and
  count as identity examples for the classifier.  Ls keeps every labelled pixel.
- ``ordered_only``: every tile may be shuffled, and the labels of shuffled tiles
  are ignored: Ls learns from the 30 % ordered labeled tiles only.
- ``shuffled``: the first version (as in the paper following JiGen): Ls trains
  on the shuffled tiles with shuffled targets.

With no unlabeled raster at all, ``labeled_ordered`` leaves nothing to shuffle
(the puzzle is trivial); give unlabeled rasters for jigsaw.
Why ``labeled_ordered`` is the default: Ls keeps all its labels (``ordered_only`` drops 70 %
of them) and no shuffled cell reaches Ls.  The variants have not been measured against each
other yet (bench/README.md, issue 12); ``shuffled`` stays reachable only for that measurement.

Permutation sets: Noroozi & Favaro's Algorithm 1 ("maxtotal") adds, among all
9! permutations, the one with the largest *total* Hamming distance to those
already chosen; that leaves pairs at distance 2.  "maxmin" (default) adds the
one with the largest *minimum* distance (ties: larger total, then lowest
index), which keeps every pair far apart.
"""
from __future__ import annotations

import functools
import itertools
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import register
from .. import IGNORE_INDEX
from ._common import choice, float32, number
from .base import AuxiliaryTask, PreparedBatch, unlabeled_rows

GRID = 3
UNSHUFFLED_SHARE = 0.3
SELECTIONS = ("maxmin", "maxtotal")
SUPERVISION = ("labeled_ordered", "ordered_only", "shuffled")


@functools.lru_cache(maxsize=None)
def _all_permutations() -> np.ndarray:
    """(9!, 9) uint8, lexicographic: row 0 is the identity."""
    return np.array(list(itertools.permutations(range(GRID * GRID))), dtype=np.uint8)


@functools.lru_cache(maxsize=16)
def hamming_permutations(count: int, selection: str = "maxmin", seed: int = 0) -> np.ndarray:
    """``count`` permutations of 0..8 (never the identity), chosen greedily by Hamming distance.

    Deterministic for a given (count, selection, seed); returns a read-only (count, 9) array.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    perms = _all_permutations()
    columns = np.ascontiguousarray(perms.T)  # (9, N): one position at a time is faster
    n = perms.shape[0]
    if not 1 <= count < n:
        raise ValueError(f"count must be in [1, {n - 1}], got {count}")
    available = np.ones(n, dtype=bool)
    available[0] = False  # identity: it is class 0, not one of the P
    total = np.zeros(n, dtype=np.int64)   # Σ distance to the chosen set
    nearest = np.full(n, 99, dtype=np.int64)  # min distance to the chosen set
    chosen = [int(np.random.default_rng(seed).integers(1, n))]
    while True:
        j = chosen[-1]
        available[j] = False
        dist = np.zeros(n, dtype=np.int64)
        for pos in range(GRID * GRID):
            dist += columns[pos] != columns[pos, j]
        total += dist
        np.minimum(nearest, dist, out=nearest)
        if len(chosen) == count:
            break
        # key: min distance first (maxmin) with the total (< 10**6) as tie-break;
        # argmax returns the lowest index among equal keys.
        key = nearest * 10**6 + total if selection == "maxmin" else total.copy()
        key[~available] = -1
        chosen.append(int(np.argmax(key)))
    out = perms[chosen].copy()
    out.flags.writeable = False
    return out


def _cells(h: int, w: int):
    """Slices of the 3×3 grid cells, row-major; leftover bottom/right stripes are not in any cell."""
    ch, cw = h // GRID, w // GRID
    return [(slice(r * ch, (r + 1) * ch), slice(c * cw, (c + 1) * cw))
            for r in range(GRID) for c in range(GRID)]


def shuffle_tiles(x: torch.Tensor, perm: Sequence[int]) -> torch.Tensor:
    """Cell j of the result is cell perm[j] of x (x: (..., H, W))."""
    cells = _cells(x.shape[-2], x.shape[-1])
    out = x.clone()
    for j, src in enumerate(perm):
        out[..., cells[j][0], cells[j][1]] = x[..., cells[int(src)][0], cells[int(src)][1]]
    return out


def unshuffle_tiles(x: torch.Tensor, perm: Sequence[int]) -> torch.Tensor:
    """Inverse of shuffle_tiles: cell perm[j] of the result is cell j of x."""
    cells = _cells(x.shape[-2], x.shape[-1])
    out = x.clone()
    for j, dst in enumerate(perm):
        out[..., cells[int(dst)][0], cells[int(dst)][1]] = x[..., cells[j][0], cells[j][1]]
    return out


@register
class JigsawTask(AuxiliaryTask):
    task_id = "jigsaw"
    default_lambda = 0.5
    description = "jigsaw puzzle (3×3 patches)"

    # Variant (bench/paper.py --variant jigsaw.supervision=…); see the module docstring.
    supervision = "labeled_ordered"

    def __init__(self, permutations: int = 100, unshuffled_share: float = UNSHUFFLED_SHARE,
                 selection: str = "maxmin", supervision: str = None):
        self.permutations = number("permutations", permutations, 1, 1000, integer=True)
        # share 1 would never shuffle: no puzzle to learn
        self.unshuffled_share = number("unshuffled_share", unshuffled_share, 0.0, 1.0,
                                       high_open=True)
        self.selection = choice("selection", selection, SELECTIONS)
        self.supervision = choice("supervision", supervision or self.supervision, SUPERVISION)
        self.perm_table = hamming_permutations(self.permutations, selection)

    def hparams(self):
        return {"permutations": self.permutations, "unshuffled_share": self.unshuffled_share,
                "selection": self.selection, "supervision": self.supervision}

    def classifier_classes(self):
        return self.permutations + 1

    def permutation(self, cls: int) -> Sequence[int]:
        """The cell order of class ``cls`` (0 = identity)."""
        return range(GRID * GRID) if cls == 0 else self.perm_table[cls - 1].tolist()

    def prepare(self, images, labels, valid, generator=None):
        b = images.shape[0]
        ordered = torch.rand(b, generator=generator) < self.unshuffled_share
        shuffled = torch.randint(1, self.permutations + 1, (b,), generator=generator)
        classes = torch.where(ordered, torch.zeros_like(shuffled), shuffled)
        if self.supervision == "labeled_ordered":     # only tiles without labels are shuffled
            classes = torch.where(unlabeled_rows(labels), classes, torch.zeros_like(classes))
        inputs, new_labels, new_valid = [], [], []
        for i in range(b):
            perm = self.permutation(int(classes[i]))
            inputs.append(shuffle_tiles(images[i], perm))
            new_labels.append(shuffle_tiles(labels[i], perm))
            new_valid.append(shuffle_tiles(valid[i], perm))
        inputs = torch.stack(inputs)
        new_labels = torch.stack(new_labels)
        if self.supervision == "ordered_only":        # labels of shuffled tiles are not used
            new_labels[classes > 0] = IGNORE_INDEX
        return PreparedBatch(inputs=inputs, targets=inputs, labels=new_labels,
                             valid=torch.stack(new_valid),
                             extra={"perm_class": classes.to(images.device)})

    def loss(self, out, batch):
        with float32(out.cls.device):
            return F.cross_entropy(out.cls.float(), batch.extra["perm_class"].to(out.cls.device))
