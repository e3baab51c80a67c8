"""Label rasters on another grid or CRS than their image: resampled onto the image's grid
(nearest neighbour: class values are categories, never averaged), instead of refused.

A label raster that does not overlap its image at all is refused: it is almost always the
label of another image (a list given in another order).  The resampled copies live in a
temporary folder for the length of the training; the inputs are never written."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from .errors import RasterError
from .labels import POLYGON_LABEL_NODATA, check_label_raster, label_nodata
from .progress import Reporter
from .rasters import RasterInfo, describe, grid_differences, open_raster, same_crs

# Nodata for the area a label raster does not cover, when it declares none: a wider type
# whose extra value no class can use (16-bit keeps a GeoTIFF colour table possible).
WIDER_NODATA = {"uint8": ("uint16", 65535)}


@contextlib.contextmanager
def labels_on_image_grids(config, reporter: Reporter):
    """The config itself, or a copy whose label rasters (LABELS and VALIDATION_LABELS) that
    are not on their image's grid are replaced by copies resampled onto it."""
    folder = None
    replaced = {}
    try:
        for what, images, labels in (("LABELS", config.labeled_images, config.labels),
                                     ("VALIDATION_LABELS", config.validation_images,
                                      config.validation_labels)):
            out = []
            for i, (image, label) in enumerate(zip(images, labels)):
                if not os.path.isfile(image) or not os.path.isfile(label):
                    out.append(label)   # describe_bands names the missing file
                    continue
                img, lab = describe(image), check_label_raster(label)
                problems = grid_differences(img, lab)
                if not problems:
                    out.append(label)
                    continue
                check_overlap(img, lab, what)
                folder = folder or tempfile.mkdtemp(prefix="berunda_aligned_")
                target = os.path.join(folder, f"{what.lower()}_{i}.tif")
                resample_labels(label, img, target)
                reporter.info(f"{what}: {lab.name} is not on the grid of {img.name} "
                              f"({'; '.join(problems)}): resampled onto the image's grid "
                              "(nearest neighbour, class values kept).")
                out.append(target)
            out += list(labels)[len(out):]   # unpaired labels: describe_bands refuses them
            if out != list(labels):
                replaced[what.lower()] = out
        if not replaced:
            yield config
        else:
            yield dataclasses.replace(config, **replaced)
    finally:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def check_overlap(image: RasterInfo, label: RasterInfo, what: str = "LABELS") -> None:
    """Refuse a label raster that shares no area with its image (or cannot be placed)."""
    if bool(image.crs) != bool(label.crs):
        lacking = label if not label.crs else image
        raise RasterError(
            f"{what}: {label.path} is not on the grid of {image.path} and {lacking.name} has no "
            "CRS, so it cannot be resampled onto the image. Assign the CRS (Raster > Projections "
            "> Assign Projection) or align it (Raster > Projections > Warp).")
    left, bottom, right, top = _bounds(label)
    if label.crs and image.crs and not same_crs(label, image):
        from rasterio.crs import CRS
        from rasterio.warp import transform_bounds

        left, bottom, right, top = transform_bounds(CRS.from_wkt(label.crs),
                                                    CRS.from_wkt(image.crs),
                                                    left, bottom, right, top)
    i_left, i_bottom, i_right, i_top = _bounds(image)
    if min(right, i_right) <= max(left, i_left) or min(top, i_top) <= max(bottom, i_bottom):
        raise RasterError(
            f"{what}: {label.path} does not overlap its image {image.path} at all: it is probably "
            "the label raster of another image. Give the label rasters in the same order as "
            "the images.")


def _bounds(info: RasterInfo):
    from rasterio.transform import Affine, array_bounds

    left, bottom, right, top = array_bounds(info.height, info.width, Affine(*info.transform))
    return min(left, right), min(bottom, top), max(left, right), max(bottom, top)


def resample_labels(label_path: str, image: RasterInfo, out_path: str) -> str:
    """Warp a label raster onto the image's grid by nearest neighbour, streaming (GDAL warps
    window by window); what the label does not cover becomes nodata.  Its colour table and
    category names are copied."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import Affine
    from rasterio.warp import Resampling, reproject

    with open_raster(label_path) as src:
        dtype, nodata = src.dtypes[0], label_nodata(src)
        if nodata is None:
            dtype, nodata = WIDER_NODATA.get(dtype, ("int32", POLYGON_LABEL_NODATA))
        crs = CRS.from_wkt(image.crs) if image.crs else None
        profile = dict(driver="GTiff", width=image.width, height=image.height, count=1,
                       dtype=dtype, crs=crs, transform=Affine(*image.transform), nodata=nodata,
                       tiled=True, compress="deflate")
        try:
            colours = src.colormap(1)
        except ValueError:
            colours = None   # no colour table
        with rasterio.open(out_path, "w", **profile) as dst:
            reproject(rasterio.band(src, 1), rasterio.band(dst, 1),
                      src_nodata=label_nodata(src), dst_nodata=nodata,
                      resampling=Resampling.nearest)
            if colours and dtype in ("uint8", "uint16"):   # GeoTIFF colour tables: 8/16 bit
                dst.write_colormap(1, colours)
    _copy_category_names(label_path, out_path)
    return out_path


def _copy_category_names(src_path: str, dst_path: str) -> None:
    """GDAL category names (they name the classes; PAM metadata in the .aux.xml)."""
    from .categories import read_category_names

    names = read_category_names(src_path)
    if names:
        from osgeo import gdal

        dst = gdal.Open(dst_path, gdal.GA_ReadOnly)   # PAM: the TIFF itself is not written
        dst.GetRasterBand(1).SetCategoryNames(list(names))
        dst = None
