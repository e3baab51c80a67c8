"""Raster I/O in one place: opening with clear errors, grid checks, padded
window reads and validity masks.  Everything reads windows; nothing loads a
whole raster."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .errors import RasterError


def dtype_family(dtype: str) -> str:
    """'uint', 'int' or 'float': models accept any dtype of the family they were trained on."""
    kind = np.dtype(dtype).kind
    return {"u": "uint", "i": "int", "f": "float", "b": "uint"}.get(kind, kind)


@dataclass(frozen=True)
class RasterInfo:
    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: Optional[str]
    transform: Tuple[float, ...]
    nodata: Optional[float]

    @property
    def dtype_family(self) -> str:
        return dtype_family(self.dtype)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def open_raster(path: str):
    import rasterio

    if not os.path.exists(path):
        raise RasterError(f"Raster {path} does not exist.")
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterError(f"Cannot read raster {path}: {exc}. Is it a GDAL-readable raster?") from None


def describe(path: str) -> RasterInfo:
    with open_raster(path) as ds:
        return info_of(ds, path)


def info_of(ds, path: Optional[str] = None) -> RasterInfo:
    return RasterInfo(
        path=path or ds.name,
        width=ds.width,
        height=ds.height,
        count=ds.count,
        dtype=ds.dtypes[0],
        crs=ds.crs.to_wkt() if ds.crs else None,
        transform=(ds.transform.a, ds.transform.b, ds.transform.c, ds.transform.d, ds.transform.e, ds.transform.f),
        nodata=ds.nodata,
    )


def same_crs(a: RasterInfo, b: RasterInfo) -> bool:
    if a.crs == b.crs:
        return True
    if not a.crs or not b.crs:
        return False
    from rasterio.crs import CRS

    return CRS.from_wkt(a.crs) == CRS.from_wkt(b.crs)


def check_same_grid(reference: RasterInfo, other: RasterInfo, what: str = "label raster") -> None:
    """Refuse (never resample) rasters that are not pixel-aligned with ``reference``."""
    problems = []
    if (reference.width, reference.height) != (other.width, other.height):
        problems.append(f"size {other.width}x{other.height} vs {reference.width}x{reference.height}")
    if not np.allclose(reference.transform, other.transform, rtol=0, atol=1e-6 * max(
            1.0, abs(reference.transform[0]))):
        problems.append("different origin or pixel size")
    if not same_crs(reference, other):
        problems.append("different CRS")
    if problems:
        raise RasterError(
            f"The {what} {other.path} is not on the grid of {reference.path} "
            f"({'; '.join(problems)}). Berunda does not resample: align it first "
            "(e.g. Raster > Projections > Warp with the image as target extent and resolution)."
        )


def read_checked(ds, window, indexes=None) -> np.ndarray:
    """``ds.read`` of a window; a read error (a truncated or damaged file) becomes a
    RasterError naming the file and the window."""
    import rasterio

    try:
        return ds.read(indexes, window=window)
    except rasterio.errors.RasterioIOError as exc:
        cause = exc.__cause__ or exc
        r0, c0 = int(window.row_off), int(window.col_off)
        raise RasterError(
            f"Cannot read {ds.name} at rows {r0}-{r0 + int(window.height) - 1}, columns "
            f"{c0}-{c0 + int(window.width) - 1} ({cause}). The file is damaged or truncated "
            "(an interrupted copy or download?): copy or export it again.") from None


def read_window(ds, row: int, col: int, height: int, width: int,
                fill: float = 0) -> np.ndarray:
    """Read bands for a window that may stick out of the raster; the outside is
    filled with ``fill`` (and reported invalid by ``valid_mask`` when fill is nodata)."""
    from rasterio.windows import Window

    out = np.full((ds.count, height, width), fill, dtype=ds.dtypes[0])
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + height, ds.height), min(col + width, ds.width)
    if r1 > r0 and c1 > c0:
        out[:, r0 - row:r1 - row, c0 - col:c1 - col] = read_checked(
            ds, Window(c0, r0, c1 - c0, r1 - r0))
    return out


def inside_mask(ds, row: int, col: int, height: int, width: int) -> np.ndarray:
    """True where the window lies inside the raster."""
    mask = np.zeros((height, width), dtype=bool)
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + height, ds.height), min(col + width, ds.width)
    if r1 > r0 and c1 > c0:
        mask[r0 - row:r1 - row, c0 - col:c1 - col] = True
    return mask


def valid_mask(data: np.ndarray, nodata: Optional[float]) -> np.ndarray:
    """(H, W) True where every band holds data: not nodata, not NaN/inf."""
    valid = np.ones(data.shape[1:], dtype=bool)
    if data.dtype.kind == "f":
        valid &= np.isfinite(data).all(axis=0)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        valid &= ~(data == np.array(nodata, dtype=data.dtype)).any(axis=0)
    return valid


def block_windows(height: int, width: int, block: int = 1024):
    """Row-major (row, col, h, w) blocks covering a raster, for streaming passes."""
    for r in range(0, height, block):
        for c in range(0, width, block):
            yield r, c, min(block, height - r), min(block, width - c)
