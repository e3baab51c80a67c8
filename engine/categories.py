"""Class rasters as GIS users see them: the data type and nodata value of a
classified GeoTIFF, its colour table and GDAL category names (written and read).

Category names are PAM metadata: for GeoTIFF, GDAL keeps them in a
``<file>.aux.xml`` beside the raster (``engine.atomic.atomic_raster_output``
moves that side-car together with the file)."""
from __future__ import annotations

import itertools
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .palette import default_color, hex_to_rgba, rgba_to_hex

MAX_CATEGORY_VALUE = 65535   # category names are a list indexed by value: keep it bounded


def class_encoding(values: Sequence[int], nodata: Optional[float] = None) -> Tuple[str, int]:
    """The smallest dtype holding every class value plus a nodata value, and that value.

    Nodata is the model's label nodata when it is set and not a class value (so the
    output matches the training labels), else 0, else the dtype maximum (e.g. 255),
    else the smallest unused value."""
    vals = {int(v) for v in values}
    lo, hi = min(vals), max(vals)
    for dtype in ("uint8", "uint16", "int32"):
        info = np.iinfo(dtype)
        if lo < info.min or hi > info.max:
            continue
        if (nodata is not None and float(nodata).is_integer()
                and info.min <= nodata <= info.max and int(nodata) not in vals):
            return dtype, int(nodata)
        for candidate in (0, int(info.max)):
            if candidate not in vals:
                return dtype, candidate
        free = next(v for v in itertools.count(info.min) if v not in vals)
        if free <= info.max:
            return dtype, free
    raise ValueError(f"Class values {lo}..{hi} do not fit a 32-bit integer raster.")


def colormap(values: Sequence[int], colors: Sequence[str], nodata: int) -> Dict[int, tuple]:
    """Colour table entries: class colours (palette colour if a colour is unreadable),
    nodata transparent."""
    table = {int(nodata): (0, 0, 0, 0)}
    for i, value in enumerate(values):
        try:
            table[int(value)] = hex_to_rgba(colors[i])
        except (ValueError, IndexError, TypeError):
            table[int(value)] = hex_to_rgba(default_color(i))
    return table


def supports_colormap(dtype: str) -> bool:
    return dtype in ("uint8", "uint16")   # GeoTIFF colour tables are 8 or 16 bit only


def write_category_names(path: str, values: Sequence[int], names: Sequence[str],
                         nodata: Optional[int]) -> bool:
    """Set GDAL category names (a list indexed by pixel value) on a closed raster.
    Returns False when osgeo is not importable or values are out of range."""
    try:
        from osgeo import gdal
    except ImportError:
        return False
    top = max([int(v) for v in values] + ([int(nodata)] if nodata is not None else []))
    if min(int(v) for v in values) < 0 or top > MAX_CATEGORY_VALUE:
        return False
    categories = [""] * (top + 1)
    for value, name in zip(values, names):
        categories[int(value)] = str(name)
    if nodata is not None and nodata >= 0:
        categories[int(nodata)] = "nodata"
    # Read-only is enough: PAM metadata goes to the .aux.xml, the TIFF is left untouched.
    ds = gdal.Open(path, gdal.GA_ReadOnly)
    if ds is None:
        return False
    ok = ds.GetRasterBand(1).SetCategoryNames(categories) == 0
    ds = None   # closing writes the .aux.xml
    return ok


def read_category_names(path: str) -> Optional[List[str]]:
    try:
        from osgeo import gdal
    except ImportError:
        return None
    ds = gdal.Open(path, gdal.GA_ReadOnly)
    if ds is None:
        return None
    band = ds.GetRasterBand(1)
    band.GetMetadata()   # GTiff loads the .aux.xml (category names) lazily
    names = band.GetCategoryNames()
    ds = None
    return list(names) if names else None


def read_colormap(path: str) -> Optional[Dict[int, tuple]]:
    from .rasters import open_raster

    with open_raster(path) as ds:
        try:
            return dict(ds.colormap(1))
        except ValueError:
            return None   # no colour table


def class_labels(path: str, values: Sequence[int]) -> Tuple[Dict[int, str], Dict[int, str]]:
    """Names and hex colours that a class raster declares for ``values`` (only those it has;
    callers fill the rest from the palette).  Colour-table entries that do not tell the
    classes apart are not colours: see ``legend_colors``."""
    names: Dict[int, str] = {}
    categories = read_category_names(path) or []
    for v in values:
        if 0 <= v < len(categories) and categories[v]:
            names[v] = categories[v]
    return names, legend_colors(read_colormap(path) or {}, values)


def legend_colors(table: Dict[int, tuple], values: Sequence[int]) -> Dict[int, str]:
    """Hex colours of ``values`` in a colour table, leaving out entries that do not tell the
    classes apart (so the palette draws them instead of every class in black):

    - transparent entries (alpha 0): undefined;
    - every used entry the same colour (e.g. a table of 256 black entries): no legend at all;
    - opaque black shared by several classes: GDAL's filler for undefined entries."""
    used = {v: tuple(table[v]) for v in values if v in table and len(table[v]) >= 3
            and (len(table[v]) < 4 or table[v][3] > 0)}
    if len(used) >= 2 and len({rgba[:3] for rgba in used.values()}) == 1:
        return {}
    black = [v for v, rgba in used.items() if tuple(rgba[:3]) == (0, 0, 0)]
    if len(black) > 1:
        used = {v: rgba for v, rgba in used.items() if v not in black}
    return {v: rgba_to_hex(rgba) for v, rgba in used.items()}
