"""Raster I/O in one place: opening with clear errors, grid checks, padded
window reads and validity masks.  Everything reads windows; nothing loads a
whole raster.

Which image pixels hold data follows GDAL's mask semantics (RFC 15, what QGIS shows
and what rasterio's ``dataset_mask()`` computes), for the bands a model uses:

1. a per-dataset mask (an internal or ``.msk`` mask band) or an **alpha band**: the pixel
   is valid where the mask / alpha is not 0;
2. else **nodata**: the pixel is invalid only where **every** used band equals its band's
   nodata value (a dark red (120, 0, 0) pixel of an RGB image with nodata 0 is data);
3. else every pixel is valid.

GDAL applies an alpha band by itself only to 2- and 4-band rasters (gray + alpha, RGBA);
Berunda also takes an alpha band of other rasters (e.g. RGBN + alpha) as their mask, when
no nodata value is set.

On top of GDAL's rule, a pixel with NaN or ±inf in any used band is invalid (the network
cannot take it), and so is everything outside the raster.  Training windows,
normalisation statistics and classification all read through ``read_pixels``, so they
share this one rule.  An alpha band is a mask, never data: ``data_bands`` leaves it out."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

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
    alpha_bands: Tuple[int, ...] = ()          # 1-based bands whose colour interpretation is alpha
    pixel_size: Tuple[float, float] = (0.0, 0.0)   # (x, y), positive, in crs_units
    crs_units: Optional[str] = None            # 'metre', 'degree', 'US survey foot', …

    @property
    def data_bands(self) -> List[int]:
        """1-based bands that hold image data (all but alpha)."""
        return [b for b in range(1, self.count + 1) if b not in self.alpha_bands]

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
    from rasterio.enums import ColorInterp

    return RasterInfo(
        path=path or ds.name,
        width=ds.width,
        height=ds.height,
        count=ds.count,
        dtype=ds.dtypes[0],
        crs=ds.crs.to_wkt() if ds.crs else None,
        transform=(ds.transform.a, ds.transform.b, ds.transform.c, ds.transform.d, ds.transform.e, ds.transform.f),
        nodata=ds.nodata,
        alpha_bands=tuple(i + 1 for i, c in enumerate(ds.colorinterp) if c == ColorInterp.alpha),
        pixel_size=(abs(float(ds.res[0])), abs(float(ds.res[1]))),
        crs_units=crs_units(ds.crs),
    )


def crs_units(crs) -> Optional[str]:
    """The CRS's unit of length or angle ('metre', 'degree', …); None without a CRS."""
    if not crs:
        return None
    try:
        return crs.units_factor[0]
    except Exception:   # rasterio raises CRSError for CRSs without units
        return crs.linear_units or None


def same_crs(a: RasterInfo, b: RasterInfo) -> bool:
    if a.crs == b.crs:
        return True
    if not a.crs or not b.crs:
        return False
    from rasterio.crs import CRS

    return CRS.from_wkt(a.crs) == CRS.from_wkt(b.crs)


def grid_differences(reference: RasterInfo, other: RasterInfo) -> List[str]:
    """How ``other`` is off the pixel grid of ``reference`` (empty when aligned)."""
    problems = []
    if (reference.width, reference.height) != (other.width, other.height):
        problems.append(f"size {other.width}x{other.height} vs {reference.width}x{reference.height}")
    if not np.allclose(reference.transform, other.transform, rtol=0, atol=1e-6 * max(
            1.0, abs(reference.transform[0]))):
        problems.append("different origin or pixel size")
    if not same_crs(reference, other):
        problems.append("different CRS")
    return problems


def check_same_grid(reference: RasterInfo, other: RasterInfo, what: str = "label raster") -> None:
    """Refuse (never resample) rasters that are not pixel-aligned with ``reference``."""
    problems = grid_differences(reference, other)
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


def is_nodata(band: np.ndarray, nodata: Optional[float]) -> np.ndarray:
    """Where one band equals its nodata value (NaN nodata matches NaN)."""
    if nodata is None:
        return np.zeros(band.shape, dtype=bool)
    if np.isnan(nodata):
        return np.isnan(band) if band.dtype.kind == "f" else np.zeros(band.shape, dtype=bool)
    if band.dtype.kind in "iub" and not _fits(nodata, band.dtype):
        return np.zeros(band.shape, dtype=bool)   # a nodata value the type cannot hold
    return band == np.array(nodata, dtype=band.dtype)


def _fits(value: float, dtype) -> bool:
    info = np.iinfo(dtype)
    return float(value).is_integer() and info.min <= value <= info.max


def valid_mask(data: np.ndarray, nodata) -> np.ndarray:
    """(H, W) True where the pixel holds data by the nodata rule: not every band equals
    nodata (GDAL's all-bands rule), and no band is NaN/inf.  ``nodata``: one value for
    every band, or one per band."""
    bands = data.shape[0]
    per_band = list(nodata) if isinstance(nodata, (list, tuple)) else [nodata] * bands
    valid = np.zeros(data.shape[1:], dtype=bool)
    for band, value in zip(data, per_band):
        valid |= ~is_nodata(band, value)
    if data.dtype.kind == "f":
        valid &= np.isfinite(data).all(axis=0)
    return valid


def data_bands(ds) -> List[int]:
    """1-based bands of an open dataset that hold data (all but alpha)."""
    from rasterio.enums import ColorInterp

    return [i + 1 for i, c in enumerate(ds.colorinterp) if c != ColorInterp.alpha]


def read_pixels(ds, bands: Sequence[int], row: int, col: int, height: int, width: int,
                fill: float = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(data, valid) of ``bands`` (1-based) in a window that may stick out of the raster:
    data (len(bands), height, width) in the raster's dtype, ``fill`` outside; valid
    (height, width) by the module's mask rule (False outside the raster)."""
    from rasterio.enums import ColorInterp, MaskFlags
    from rasterio.windows import Window

    bands = [int(b) for b in bands]
    data = np.full((len(bands), height, width), fill, dtype=ds.dtypes[bands[0] - 1])
    valid = np.zeros((height, width), dtype=bool)
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + height, ds.height), min(col + width, ds.width)
    if r1 <= r0 or c1 <= c0:
        return data, valid
    window = Window(c0, r0, c1 - c0, r1 - r0)
    inner = (slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
    raw = read_checked(ds, window, bands)
    data[(slice(None),) + inner] = raw
    flags = ds.mask_flag_enums[bands[0] - 1]
    alpha = [i + 1 for i, c in enumerate(ds.colorinterp) if c == ColorInterp.alpha]
    if MaskFlags.per_dataset in flags:
        # a mask band, or an alpha band GDAL applies (RGBA, gray + alpha): > 0 = data
        ok = ds.read_masks(bands[0], window=window) > 0
    elif MaskFlags.nodata in flags or not alpha:
        ok = np.zeros(raw.shape[1:], dtype=bool)
        for i, b in enumerate(bands):
            band_flags = ds.mask_flag_enums[b - 1]
            if MaskFlags.nodata in band_flags:
                ok |= ~is_nodata(raw[i], ds.nodatavals[b - 1])
            elif MaskFlags.all_valid in band_flags:
                ok[:] = True
                break
            else:
                ok |= ds.read_masks(b, window=window) > 0
    else:
        # an alpha band GDAL does not apply by itself (e.g. RGBN + alpha): still a mask
        ok = ds.read(alpha[0], window=window) > 0
    if raw.dtype.kind == "f":
        ok &= np.isfinite(raw).all(axis=0)
    valid[inner] = ok
    return data, valid


def block_windows(height: int, width: int, block: int = 1024):
    """Row-major (row, col, h, w) blocks covering a raster, for streaming passes."""
    for r in range(0, height, block):
        for c in range(0, width, block):
            yield r, c, min(block, height - r), min(block, width - c)
