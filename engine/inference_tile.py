"""Choosing the tile and overlap of inference.

The network is fully convolutional, so the inference tile need not be the
training tile.  Small tiles are slow: with the overlap needed to hide seams, a
64-px tile computes each pixel ~1.8 times, and tiny forward passes use a device
poorly.  By default the tile is therefore the device's efficient size (CPU 512
px, where single-thread throughput per pixel still holds up; GPU 1024 px), at
least twice the training tile, and bounded by the memory free on the device.

The default overlap is a quarter of the *training* tile, in pixels: the same
margin from tile edges as when classifying at the training tile, whatever the
inference tile (a fraction of a larger tile would only cost time); a quarter of
the tile when TILE_SIZE asks for one smaller than the training tile.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Tuple

import numpy as np

from .errors import InvalidParameterError
from .progress import Reporter
from .tiling import round_up

NETWORK_STRIDE = 32        # the U-Net halves the tile 5 times: tiles are multiples of 32
DEVICE_TILE = {"cpu": 512, "cuda": 1024}
# Peak memory of a forward pass per input pixel: measured ~560-620 B/px on CPU (float32,
# resnet18/34, efficientnet-b0, 512-px tiles, ru_maxrss of a fresh process); rounded up.
BYTES_PER_PIXEL = 1024
MEMORY_SHARE = {"cpu": 0.25, "cuda": 0.5}   # of the memory available now


def available_memory(device) -> Optional[int]:
    """Bytes free for the network on ``device`` now, or None when unknown."""
    try:
        if device.type == "cuda":
            import torch

            free, _total = torch.cuda.mem_get_info(device)
            return int(free)
        return _meminfo_available() or int(os.sysconf("SC_AVPHYS_PAGES") *
                                           os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None


def _meminfo_available() -> Optional[int]:
    """Linux's MemAvailable: free memory plus the file cache it can drop (SC_AVPHYS_PAGES
    counts only the free pages, a fraction of it on a machine that has read files)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_bound_tile(device, batch_size: int, free: Optional[int]) -> Optional[int]:
    """Largest tile (multiple of the stride) whose batch fits the device's memory share."""
    if free is None:
        return None
    share = MEMORY_SHARE.get(device.type, 0.25)
    side = math.sqrt(free * share / (BYTES_PER_PIXEL * max(batch_size, 1)))
    return int(side) // NETWORK_STRIDE * NETWORK_STRIDE


def choose_tile(requested, train_tile: int, device, batch_size: int,
                reporter: Reporter, free: Optional[int] = -1) -> Tuple[int, str]:
    """(tile, how it was chosen).  ``requested`` (TILE_SIZE) wins when given; it is
    rounded up to the stride and said so."""
    if requested:
        return checked_tile_size(requested, reporter), "as requested"
    train_tile = int(train_tile)
    target = max(DEVICE_TILE.get(device.type, 512), 2 * train_tile)
    if free == -1:
        free = available_memory(device)
    bound = memory_bound_tile(device, batch_size, free)
    if bound is not None and bound < target:
        # The training tile fitted in training (with gradients): never go below it.
        tile = max(bound, round_up(train_tile, NETWORK_STRIDE))
        return tile, (f"bounded by the {free / 2**30:.1f} GiB free on {device.type}; the "
                      f"model was trained on {train_tile}-px tiles")
    return target, f"the default on {device.type} for a model trained on {train_tile}-px tiles"


def checked_tile_size(requested, reporter: Reporter) -> int:
    try:
        value = int(requested)
    except (TypeError, ValueError):
        value = 0
    if value <= 0 or value != requested:
        raise InvalidParameterError(f"TILE_SIZE must be a positive whole number of pixels "
                                    f"(got {requested!r}).")
    rounded = round_up(value, NETWORK_STRIDE)
    if rounded != value:
        reporter.info(f"Tile size {value} is not a multiple of {NETWORK_STRIDE} (the network's "
                      f"stride); using {rounded}.")
    return rounded


def overlap_pixels(overlap, tile: int, train_tile: int) -> int:
    """OVERLAP in pixels: None = a quarter of the training tile, or of the tile when a
    smaller one was asked for."""
    if overlap is None:
        return min(int(train_tile), tile) // 4
    if isinstance(overlap, bool) or not isinstance(
            overlap, (int, float, np.integer, np.floating)) or not np.isfinite(overlap):
        raise InvalidParameterError(f"OVERLAP must be a number (got {overlap!r}).")
    if 0 < overlap < 1:
        return int(round(overlap * tile))
    if overlap < 0 or overlap != int(overlap) or overlap >= tile:
        raise InvalidParameterError(
            f"OVERLAP must be whole pixels from 0 to {tile - 1}, or a fraction of the tile "
            f"between 0 and 1 (got {overlap}).")
    return int(overlap)
