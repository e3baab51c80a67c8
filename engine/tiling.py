"""The sliding-window geometry of inference: a global tile grid over the raster,
the blocks the raster is processed in, and the blending weights.  Pure
arithmetic, no I/O.

Along each axis tiles start at ``k * stride - overlap // 2``: shifting the grid by
half the overlap puts every raster pixel, borders included, at least that far
from the edge of some tile (the part outside the raster is filled by
reflection).  Blocks are whole numbers of strides, so without overlap each tile
belongs to exactly one block."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

WEIGHT_FLOOR = 1e-3          # tile edges still count a little: no pixel is left with weight 0
TIFF_BLOCK_MAX, TIFF_BLOCK_MIN = 512, 128   # smaller GeoTIFF blocks compress poorly


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class AxisGrid:
    length: int     # raster size along this axis
    tile: int
    stride: int
    offset: int     # the first tile starts at -offset
    count: int

    def start(self, k: int) -> int:
        return k * self.stride - self.offset

    def touching(self, lo: int, hi: int) -> range:
        """Indices of the tiles whose extent intersects [lo, hi)."""
        if hi <= lo:
            return range(0)
        first = max(0, (lo + self.offset - self.tile) // self.stride + 1)
        last = min(self.count - 1, -(-(hi + self.offset) // self.stride) - 1)
        return range(first, last + 1)


def axis_grid(length: int, tile: int, overlap: int, multiple: int) -> AxisGrid:
    offset = overlap // 2
    if length + 2 * offset <= tile:
        # One tile is enough: shrink it (to the network's multiple) instead of
        # classifying mostly reflected padding.
        size = min(tile, round_up(length + 2 * offset, multiple))
        return AxisGrid(length, size, size, offset, 1)
    count = 1 + -(-(length + 2 * offset - tile) // (tile - overlap))
    # The same number of tiles, shrunk to just cover the axis: a 2048-px raster in
    # 512-px tiles with 32 px of overlap takes 5 tiles a side, of 448 px (23 % fewer pixels).
    tile = min(tile, round_up(-(-(length + 2 * offset + (count - 1) * overlap) // count),
                              multiple))
    return AxisGrid(length, tile, tile - overlap, offset, count)


def ramp(size: int, overlap: int) -> np.ndarray:
    """1-D blending weight of a tile.

    In an overlap of width ``overlap`` the two neighbours cross-fade linearly over
    its middle half (their weights sum to 1); in the outer quarter next to a tile's
    edge, where zero padding inside the network distorts its predictions, the tile
    keeps only WEIGHT_FLOOR, which matters only where no other tile covers the pixel.
    (A plain linear ramp over the whole overlap lets those distorted edges flip the
    class of ~5 % of pixels with an uncertain model; this keeps it under 0.1 %.)"""
    if overlap <= 0:
        return np.ones(size, np.float32)
    x = np.arange(size, dtype=np.float32) + 0.5
    distance = np.minimum(x, size - x)
    margin = overlap / 4
    return np.clip((distance - margin) / (overlap - 2 * margin), WEIGHT_FLOOR, 1.0).astype(
        np.float32)


@dataclass(frozen=True)
class Block:
    row: int            # block index
    col: int
    r0: int             # output window [r0, r1) x [c0, c1), inside the raster
    r1: int
    c0: int
    c1: int
    tile_rows: range    # tiles touching the block
    tile_cols: range
    new_cols: range     # tile columns not already computed for the block to the left
    keep_cols: range    # tile columns the block to the right needs too


class BlockPlan:
    """Blocks covering the raster row by row, each holding whole strides, sized so
    that the block's accumulator (classes + 1 float32 planes) stays under
    ``budget_bytes`` whatever the raster size."""

    def __init__(self, height: int, width: int, tile: int, overlap: int, multiple: int,
                 classes: int, budget_bytes: int = 64 << 20):
        self.rows = axis_grid(height, tile, overlap, multiple)
        self.cols = axis_grid(width, tile, overlap, multiple)
        self.overlap = overlap
        area = max(budget_bytes // (4 * (classes + 1)), 1)
        self.block_cols = self._block_size(self.cols, math.sqrt(area / 2))
        self.block_rows = self._block_size(self.rows, area / self.block_cols)

    @staticmethod
    def _block_size(grid: AxisGrid, target: float) -> int:
        if grid.count == 1:
            return grid.length
        # At least a tile wide, so that a tile spans no more than two blocks, and a
        # multiple of 16 where possible so that GeoTIFF blocks can align with it.
        step = 16 // math.gcd(grid.stride, 16)
        n = max(-(-grid.tile // grid.stride), int(target) // grid.stride)
        return round_up(n, step) * grid.stride

    @property
    def tile_shape(self):
        return self.rows.tile, self.cols.tile

    def weights(self) -> np.ndarray:
        """(tile_h, tile_w) blending weight: product of the two axes' ramps."""
        wr = ramp(self.rows.tile, self.overlap if self.rows.count > 1 else 0)
        wc = ramp(self.cols.tile, self.overlap if self.cols.count > 1 else 0)
        return np.outer(wr, wc)

    def _col_range(self, bj: int) -> range:
        c0 = bj * self.block_cols
        return self.cols.touching(c0, min(c0 + self.block_cols, self.cols.length))

    def blocks(self) -> Iterator[Block]:
        n_cols = -(-self.cols.length // self.block_cols)
        for bi, r0 in enumerate(range(0, self.rows.length, self.block_rows)):
            r1 = min(r0 + self.block_rows, self.rows.length)
            tile_rows = self.rows.touching(r0, r1)
            for bj in range(n_cols):
                c0 = bj * self.block_cols
                c1 = min(c0 + self.block_cols, self.cols.length)
                cols = self._col_range(bj)
                before = self._col_range(bj - 1) if bj > 0 else range(0)
                after = self._col_range(bj + 1) if bj + 1 < n_cols else range(0)
                new = range(max(cols.start, before.stop), cols.stop)
                keep = range(max(cols.start, after.start), min(cols.stop, after.stop)) \
                    if len(after) else range(0)
                yield Block(bi, bj, r0, r1, c0, c1, tile_rows, cols, new, keep)

    def total_tiles(self) -> int:
        """Forward passes needed (before skipping nodata tiles)."""
        return sum(len(b.tile_rows) * len(b.new_cols) for b in self.blocks())

    def tiff_block(self, axis: str) -> int:
        """GeoTIFF block side dividing the processing blocks, so that each TIFF block is
        written once, whole (no re-compression of partial blocks)."""
        size = self.block_rows if axis == "rows" else self.block_cols
        length = (self.rows if axis == "rows" else self.cols).length
        if size >= length:   # a single block along this axis: just fit the raster
            return 256 if length > 256 else round_up(length, 16)
        for candidate in range(TIFF_BLOCK_MAX, TIFF_BLOCK_MIN - 1, -16):
            if size % candidate == 0:
                return candidate
        return 256   # GDAL's block cache copes with the partial blocks
