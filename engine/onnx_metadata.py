"""The metadata an exported ONNX model carries: Deepness's keys (PUTvision's QGIS
plugin reads them when the model is loaded) plus the Berunda header, verbatim.

Deepness reads each value with ``json.loads``, so every value is a JSON string:

- ``model_type``: "Segmentor";
- ``class_names``: {output channel: class name}, channels 0..C-1 in the order of the
  model's classes;
- ``resolution``: cm per pixel of the training rasters — only when it is known from
  real data (see ``training_resolution``), never guessed;
- ``tiles_size`` (the documented key) and ``tile_size`` (the key older Deepness code
  reads): the exported tile side;
- ``tiles_overlap``: Berunda's default overlap, a quarter of the training tile, in % of the
  exported tile (25 when the exported tile is the training tile);
- ``seg_thresh``: 0.0 — Deepness zeroes probabilities below it before its argmax, so
  anything above 0 would turn uncertain pixels into class channel 0;
- ``seg_small_segment``: 0 — no median filter, Berunda's per-pixel result;
- ``standardization_mean`` / ``standardization_std``: zeros / ones, one per band —
  Deepness's own standardisation is the identity because the graph standardises;
- ``berunda``: the model file's JSON header (classes with their values and colours,
  task, λ, training record, versions);
- ``berunda_input``: what the graph expects as input, for other consumers.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Tuple

OVERLAP_OF_TRAINING_TILE = 0.25   # Berunda's classify default: a quarter of the training tile
METRE_NAMES = ("metre", "meter", "metres", "meters", "m")


def deepness_metadata(meta: dict, tile: int, resolution_cm: Optional[float],
                      input_description: dict) -> Dict[str, str]:
    classes = meta["classes"]
    values = [int(v) for v in classes["values"]]
    names = list(classes.get("names") or [f"class {v}" for v in values])
    bands = int(meta["bands"]["count"])
    entries = {
        "model_type": "Segmentor",
        "class_names": {str(i): name for i, name in enumerate(names)},
        "tiles_size": tile,
        "tile_size": tile,
        "tiles_overlap": overlap_percent(int(meta["tile_size"]), tile),
        "seg_thresh": 0.0,
        "seg_small_segment": 0,
        "standardization_mean": [0.0] * bands,
        "standardization_std": [1.0] * bands,
        "berunda": meta,
        "berunda_input": input_description,
    }
    if resolution_cm is not None:
        entries["resolution"] = resolution_cm
    return {key: json.dumps(value) for key, value in entries.items()}


def overlap_percent(training_tile: int, tile: int) -> int:
    """Deepness's overlap (whole %, of its tile) for a quarter of the training tile in pixels."""
    return max(1, min(50, round(100 * OVERLAP_OF_TRAINING_TILE * training_tile / tile)))


def training_resolution(meta: dict) -> Tuple[Optional[float], str]:
    """(cm per pixel, where it comes from) of the rasters the model was trained on.

    The pixel size stored in the model file when there is one; otherwise the training
    rasters the model lists, when they are still readable here, share one pixel size and
    have a projected CRS in metres (or feet etc., converted).  Otherwise (None, why)."""
    stored = _stored_pixel_size(meta)
    if stored is not None:
        return stored, "the pixel size stored in the model file"
    config = (meta.get("training") or {}).get("config") or {}
    paths = list(config.get("labeled_images") or []) + list(config.get("unlabeled_images") or [])
    if not paths:
        return None, "the model file stores neither a pixel size nor its training rasters"
    sizes: List[Tuple[str, float, float]] = []
    for path in paths:
        size = _raster_pixel_size_m(path)
        if isinstance(size, str):
            return None, size
        sizes.append((path, *size))
    _, x0, y0 = sizes[0]
    for path, x, y in sizes:
        if not (_close(x, x0) and _close(y, y0)):
            return None, (f"the training rasters have different pixel sizes ({os.path.basename(sizes[0][0])}: "
                          f"{x0:g} × {y0:g} m, {os.path.basename(path)}: {x:g} × {y:g} m)")
    return round((x0 + y0) / 2 * 100, 6), (
        f"the training rasters listed in the model ({len(paths)} raster"
        f"{'s' if len(paths) != 1 else ''}, read now; the model file stores no pixel size)")


def _stored_pixel_size(meta: dict) -> Optional[float]:
    """cm/px from a pixel size in metres stored in the header (``pixel_size``: a number
    or [x, y], with its CRS units), if the model has one."""
    for holder in (meta, meta.get("bands") or {}):
        size = holder.get("pixel_size")
        if size is None:
            continue
        units = str(holder.get("pixel_size_units") or holder.get("crs_units") or "").lower()
        if units not in METRE_NAMES:
            continue
        xy = [float(v) for v in (size if isinstance(size, (list, tuple)) else (size, size))]
        if len(xy) == 2 and all(v > 0 for v in xy):
            return round((abs(xy[0]) + abs(xy[1])) / 2 * 100, 6)
    return None


def _raster_pixel_size_m(path: str):
    """(x, y) pixel size in metres, or a string saying why there is none."""
    import rasterio
    from rasterio.errors import CRSError, RasterioIOError

    name = os.path.basename(path)
    if not os.path.isfile(path):
        return f"the training raster {path} is no longer there"
    try:
        with rasterio.open(path) as ds:
            crs, res = ds.crs, ds.res
    except RasterioIOError as exc:
        return f"the training raster {name} cannot be read ({exc})"
    if crs is None:
        return f"the training raster {name} has no CRS"
    if not crs.is_projected:
        return (f"the training raster {name} is in a geographic CRS ({crs.to_string()}); "
                "a pixel size in cm needs a projected CRS")
    try:
        unit, factor = crs.linear_units_factor
    except CRSError:
        return f"the units of {name}'s CRS ({crs.to_string()}) are unknown"
    return abs(res[0]) * factor, abs(res[1]) * factor


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.01 * max(abs(a), abs(b))
