"""What a raster must be to be classified with a model: the bands to read (the model's
BANDS, or the classify BANDS), the data type family, and a warning when its pixel size
differs much from the training images'."""
from __future__ import annotations

from typing import List, Optional

from .errors import InvalidParameterError, RasterError
from .progress import Reporter
from .rasters import RasterInfo, dtype_family


def check_compatible(info: RasterInfo, meta: dict, bands: Optional[List[int]] = None,
                     reporter: Optional[Reporter] = None) -> List[int]:
    """The 1-based bands of ``info`` to feed the model (``bands``, else the model's BANDS);
    refuse a raster that lacks them or whose data type family differs from training's."""
    meta_bands = meta["bands"]
    count = int(meta_bands["count"])
    family = meta_bands.get("dtype_family") or dtype_family(meta_bands["dtype"])
    trained = [int(b) for b in meta_bands.get("indexes") or range(1, count + 1)]
    source = int(meta_bands.get("source_count") or count)
    plural = lambda n: f"{n} band{'s' if n != 1 else ''}"  # noqa: E731
    if bands:
        if len(bands) != count:
            raise InvalidParameterError(
                f"BANDS {', '.join(map(str, bands))} gives {plural(len(bands))}; the model was "
                f"trained on {plural(count)} (bands {', '.join(map(str, trained))} of its "
                "training images). Give as many bands, in the same order.")
        missing = [b for b in bands if b > info.count]
        if missing:
            raise RasterError(f"BANDS asks for band {', '.join(map(str, missing))} but "
                              f"{info.name} has {plural(info.count)}.")
    else:
        bands = trained
        chosen = trained != list(range(1, source + 1))   # BANDS was given at training
        if (len(info.data_bands) != source and not chosen) or max(trained) > info.count:
            raise RasterError(
                f"The model expects {plural(source)} of {family} type; {info.name} has "
                f"{plural(len(info.data_bands))} of {info.dtype_family} ({info.dtype})"
                f"{' besides alpha' if info.alpha_bands else ''}. Use a raster with the same "
                "bands, in the same order, as the training images, or choose its bands with "
                f"BANDS ({plural(count)}).")
        if len(info.data_bands) != source and reporter is not None:
            reporter.warning(
                f"{info.name} has {plural(len(info.data_bands))}, the model's training images "
                f"had {source}; reading bands {', '.join(map(str, bands))} as in training. Set "
                "BANDS if they are not the same bands.")
    if info.dtype_family != family:
        raise RasterError(
            f"The model expects {plural(count)} of {family} type; {info.name} has "
            f"{plural(info.count)} of {info.dtype_family} ({info.dtype}). Use a raster with "
            "the same bands, in the same order, as the training images.")
    return list(bands)


RESOLUTION_TOLERANCE = 0.25   # warn when pixels differ from training's by more than 25 %


def warn_if_other_resolution(info: RasterInfo, meta: dict, reporter: Reporter) -> None:
    """Objects of another size in pixels than in training are often misclassified."""
    grid = meta.get("grid") or {}
    trained, units = grid.get("pixel_size"), grid.get("crs_units")
    if not trained or not all(trained) or not all(info.pixel_size):
        return
    size = lambda xy, u: f"{xy[0]:.6g} × {xy[1]:.6g} {u or 'units'}"  # noqa: E731
    if units != info.crs_units:
        reporter.warning(
            f"{info.name} has pixels of {size(info.pixel_size, info.crs_units)}; the model was "
            f"trained on pixels of {size(trained, units)}. The units differ, so Berunda cannot "
            "compare them: check that both have about the same ground resolution (else warp "
            "the raster to the training resolution).")
        return
    ratios = [info.pixel_size[i] / float(trained[i]) for i in (0, 1)]
    if max(abs(r - 1) for r in ratios) > RESOLUTION_TOLERANCE:
        reporter.warning(
            f"{info.name} has pixels of {size(info.pixel_size, units)}; the model was trained "
            f"on pixels of {size(trained, units)} ({max(ratios, key=lambda r: abs(r - 1)):.2f}× "
            "the size). Objects look larger or smaller than in training, which usually lowers "
            "accuracy: resample the raster to the training pixel size (Raster > Projections > "
            "Warp, output resolution), or train a model on images of this resolution.")
