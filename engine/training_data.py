"""Checks the training rasters and sets up what the training loop draws from:
band description, classes, normalisation statistics and the window samplers."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .config import TrainingConfig
from .errors import InvalidParameterError, RasterError
from .labels import ClassInfo, ClassMapper, check_label_raster, scan_classes
from .normalization import compute_statistics
from .progress import Reporter
from .rasters import check_same_grid, describe
from .sampling import WindowSampler


@dataclass
class TrainingData:
    bands: dict
    grid: dict
    classes: ClassInfo
    stats: dict
    labeled: WindowSampler
    unlabeled: Optional[WindowSampler]

    def close(self) -> None:
        self.labeled.close()
        if self.unlabeled is not None:
            self.unlabeled.close()


def describe_bands(config: TrainingConfig) -> dict:
    """The bands every image must provide, with dtype and nodata: the model's "bands".

    ``indexes``: the 1-based bands used (BANDS, or every band but alpha: an alpha band is
    the validity mask, never data); ``source_count``: the data bands of the training images."""
    if not config.labeled_images:
        raise InvalidParameterError("LABELED_IMAGES is empty: give at least one annotated image.")
    if len(config.labeled_images) != len(config.labels):
        raise InvalidParameterError(
            f"LABELED_IMAGES has {len(config.labeled_images)} rasters but LABELS has "
            f"{len(config.labels)}; give one label raster per image, in the same order.")
    images = [describe(p) for p in config.labeled_images + config.unlabeled_images]
    ref = images[0]
    indexes = list(config.bands) or ref.data_bands
    for info in images:
        _check_image_bands(info, ref, config.bands, indexes, "Image")
    if all(min(i.width, i.height) < config.tile_size for i in images):
        largest = max(images, key=lambda i: min(i.width, i.height))
        raise InvalidParameterError(
            f"TILE_SIZE {config.tile_size} is larger than every training raster (the largest, "
            f"{largest.name}, is {largest.width}x{largest.height}); choose a TILE_SIZE of at "
            f"most {min(largest.width, largest.height) // 32 * 32}.")
    for info, label in zip(images, config.labels):   # labeled images come first in ``images``
        if os.path.abspath(info.path) == os.path.abspath(label):
            raise InvalidParameterError(
                f"{info.path} is given both as an image and as its label raster.")
        check_same_grid(info, check_label_raster(label), "label raster")
    _check_validation_pairs(config, ref, indexes)
    return {"count": len(indexes), "indexes": indexes, "source_count": len(ref.data_bands),
            "dtype": ref.dtype, "dtype_family": ref.dtype_family,
            "nodata": ref.nodata if ref.nodata is None or np.isfinite(ref.nodata) else None}


def describe_grid(config: TrainingConfig) -> dict:
    """Pixel size and its unit of the (first) annotated image: classify warns when a
    raster's pixels differ much from these."""
    info = describe(config.labeled_images[0])
    return {"pixel_size": list(info.pixel_size), "crs_units": info.crs_units}


def _check_image_bands(info, ref, chosen, indexes, what) -> None:
    """With BANDS: each image has those bands; without: the same data bands as the first."""
    if chosen:
        missing = [b for b in indexes if not 1 <= b <= info.count]
        if missing:
            raise RasterError(
                f"{what} {info.path} has {info.count} band{'s' if info.count != 1 else ''}; "
                f"BANDS asks for band {', '.join(map(str, missing))}. Choose bands every "
                "training image has.")
    elif info.data_bands != ref.data_bands:
        raise RasterError(
            f"{what} {info.path} has {len(info.data_bands)} bands but {ref.path} has "
            f"{len(ref.data_bands)} (alpha bands not counted); all training images must have "
            "the same bands in the same order (or choose the bands to use with BANDS).")
    if info.dtype_family != ref.dtype_family:
        raise RasterError(
            f"{what} {info.path} is {info.dtype} but {ref.path} is {ref.dtype}; all "
            "training images must be of the same data type family (integer or float).")


def _check_validation_pairs(config: TrainingConfig, ref, indexes) -> None:
    if len(config.validation_images) != len(config.validation_labels):
        raise InvalidParameterError(
            f"VALIDATION_IMAGES has {len(config.validation_images)} rasters but VALIDATION_LABELS "
            f"has {len(config.validation_labels)}; give one label raster per image, same order.")
    for image, label in zip(config.validation_images, config.validation_labels):
        info = describe(image)
        if (max(indexes) > info.count or not config.bands and info.data_bands != ref.data_bands
                or info.dtype_family != ref.dtype_family):
            raise RasterError(
                f"Validation image {image} has {len(info.data_bands)} bands of {info.dtype}; the "
                f"training images have {len(ref.data_bands)} bands of {ref.dtype}. Validate on "
                "rasters like them.")
        check_same_grid(info, check_label_raster(label), "validation label raster")


def prepare_training_data(config: TrainingConfig, reporter: Reporter, uses_unlabeled: bool,
                          stats: Optional[dict] = None, classes: Optional[ClassInfo] = None,
                          parent=None) -> TrainingData:
    """``parent`` (INIT_MODEL, engine/parent_model.py) gives the classes and statistics
    unless they are given (resume, training job)."""
    bands = describe_bands(config)
    reporter.info("Scanning label rasters for classes…")
    scanned = scan_classes(config.labels)
    if parent is not None:
        classes, stats = _from_parent(parent, config, bands, scanned, reporter, classes, stats)
    if classes is None:
        classes = scanned
    elif not set(scanned.values) <= set(classes.values):
        raise RasterError(
            f"The label rasters hold class values {sorted(set(scanned.values) - set(classes.values))} "
            "that the checkpoint being resumed does not know; resume with the same labels.")
    reporter.info("Classes: " + ", ".join(f"{v}={n}" for v, n in zip(classes.values, classes.names)))
    if stats is None:
        stats = training_statistics(config, bands["indexes"])
    mapper = ClassMapper(classes.values, classes.nodata)
    # Labeled pairs are drawn in proportion to their labelled pixels.
    label_weights = [max(n, 1) for n in scanned.raster_pixels]
    labeled = WindowSampler(config.labeled_images, config.labels, label_weights, config.tile_size,
                            stats, mapper, config.max_invalid_fraction, config.augment,
                            bands["indexes"])
    unlabeled = None
    if uses_unlabeled and config.unlabeled_images:
        areas = [describe(p) for p in config.unlabeled_images]
        unlabeled = WindowSampler(config.unlabeled_images, None, [i.width * i.height for i in areas],
                                  config.tile_size, stats, None, config.max_invalid_fraction,
                                  config.augment, bands["indexes"])
    return TrainingData(bands, describe_grid(config), classes, stats, labeled, unlabeled)



def prepare_job_data(config: TrainingConfig, reporter: Reporter) -> dict:
    """What a training job carries besides its parameters (see engine/job.py): the band
    description, the classes and the normalisation statistics, computed exactly as
    prepare_training_data computes them."""
    bands = describe_bands(config)
    reporter.info("Scanning label rasters for classes…")
    classes, stats = scan_classes(config.labels), None
    if config.init_model:
        from .parent_model import load_parent

        parent = load_parent(config, reporter)
        classes, stats = _from_parent(parent, config, bands, classes, reporter, None, None)
    return {"bands": bands, "classes": classes.to_metadata(),
            "normalization": stats or training_statistics(config, bands["indexes"])}


def _from_parent(parent, config, bands, scanned, reporter, classes, stats):
    from .parent_model import check_bands, classes_for, statistics_for

    check_bands(parent, bands)
    return (classes or classes_for(parent, scanned, reporter),
            stats or statistics_for(parent, config, reporter))


def training_statistics(config: TrainingConfig, bands) -> dict:
    """Per-band statistics of the labeled + unlabeled images (seeded sample of pixels)."""
    rng = np.random.default_rng([config.seed, 7919])
    return compute_statistics(config.labeled_images + config.unlabeled_images, rng,
                              bands=bands)
