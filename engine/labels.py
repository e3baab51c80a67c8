"""Label rasters: which classes they hold (with names and colours), the
value <-> index mapping, and rasterising polygon labels onto an image grid."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..models import IGNORE_INDEX
from .errors import DataError, InvalidParameterError, RasterError
from .rasters import block_windows, describe, open_raster, read_checked

POLYGON_LABEL_NODATA = -2147483648   # Int32 minimum: never a class value users pick


@dataclass
class ClassInfo:
    values: List[int]
    names: List[str]
    colors: List[str]
    nodata: Optional[int]
    pixel_counts: List[int]
    raster_pixels: Optional[List[int]] = None   # labelled pixels per label raster (sampling weights)

    def to_metadata(self) -> dict:
        return {"values": self.values, "names": self.names, "colors": self.colors,
                "nodata": self.nodata, "pixel_counts": self.pixel_counts}

    @classmethod
    def from_metadata(cls, c: dict) -> "ClassInfo":
        return cls(c["values"], c["names"], c["colors"], c["nodata"], c.get("pixel_counts", []))


class ClassMapper:
    """Class values (any integers, e.g. 0, 10, 255) <-> contiguous indices 0..C-1.
    Nodata and values the model does not know map to IGNORE_INDEX."""

    def __init__(self, values: Sequence[int], nodata: Optional[int] = None):
        self.values = np.asarray(sorted(values), dtype=np.int64)
        self.nodata = nodata

    def to_index(self, labels: np.ndarray) -> np.ndarray:
        lab = labels.astype(np.int64)
        pos = np.clip(np.searchsorted(self.values, lab), 0, len(self.values) - 1)
        known = self.values[pos] == lab
        if self.nodata is not None:
            known &= lab != self.nodata
        return np.where(known, pos, IGNORE_INDEX)


def label_nodata(info) -> Optional[int]:
    return None if info.nodata is None or np.isnan(info.nodata) else int(info.nodata)


def check_label_raster(path: str):
    """The label raster's RasterInfo, after checking it holds one band of integers."""
    info = describe(path)
    if info.count != 1:
        raise RasterError(f"Label raster {path} has {info.count} bands; a label raster has one "
                          "band of integer class values.")
    if info.dtype_family == "float":
        raise RasterError(f"Label raster {path} is of type {info.dtype}; labels must be integer "
                          "class values. Convert it (Raster > Conversion > Translate, Int32 / "
                          "UInt8) or use polygon labels.")
    return info


def scan_classes(label_paths: Sequence[str]) -> ClassInfo:
    """Read the label rasters block by block: class values present and their pixel counts;
    names and colours from the first raster's colour table / category names when present."""
    counts: Dict[int, int] = {}
    raster_pixels: List[int] = []
    nodata_value: Optional[int] = None
    for path in label_paths:
        labelled = 0
        with open_raster(path) as ds:
            nodata = label_nodata(ds)
            nodata_value = nodata if nodata_value is None else nodata_value
            from rasterio.windows import Window

            for r, c, h, w in block_windows(ds.height, ds.width, 2048):
                block = read_checked(ds, Window(c, r, w, h), 1)
                values, n = np.unique(block, return_counts=True)
                for v, k in zip(values.tolist(), n.tolist()):
                    if nodata is not None and v == nodata:
                        continue
                    counts[int(v)] = counts.get(int(v), 0) + int(k)
                    labelled += int(k)
        raster_pixels.append(labelled)
    if not counts:
        raise DataError(
            "The label rasters hold no labelled pixel (everything is nodata): "
            f"{', '.join(os.path.basename(p) for p in label_paths)}. Check their nodata value.")
    if len(counts) < 2:
        only = next(iter(counts))
        raise DataError(
            f"The label rasters hold a single class (value {only}): "
            f"{', '.join(os.path.basename(p) for p in label_paths)}; training needs at least 2 "
            "classes. Add labelled areas of other classes.")
    values = sorted(counts)
    names, colors = _names_and_colors(label_paths[0], values)
    return ClassInfo(values, names, colors, nodata_value, [counts[v] for v in values], raster_pixels)


def _names_and_colors(path: str, values: List[int]):
    """The label raster's category names / colour table where it has them, else defaults."""
    from .categories import class_labels
    from .palette import default_color

    names, colors = class_labels(path, values)
    return ([names.get(v, f"class {v}") for v in values],
            [colors.get(v, default_color(i)) for i, v in enumerate(values)])


def rasterize_polygons(vector_path: str, class_field: str, image_path: str, out_path: str,
                       layer_name: Optional[str] = None) -> str:
    """Burn ``class_field`` of the polygons onto the image's grid (Int32, nodata where no
    polygon).  Polygons are reprojected to the image CRS first."""
    from osgeo import gdal, ogr, osr

    gdal.UseExceptions()
    try:
        vds = gdal.OpenEx(vector_path, gdal.OF_VECTOR)
    except RuntimeError:
        vds = None
    if vds is None:
        raise RasterError(f"Cannot open the polygon label layer {vector_path}.")
    layer = vds.GetLayerByName(layer_name) if layer_name else vds.GetLayer(0)
    defn = layer.GetLayerDefn()
    idx = defn.GetFieldIndex(class_field)
    if idx < 0:
        fields = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
        raise RasterError(f"The polygon label layer has no field {class_field!r} "
                          f"(fields: {', '.join(fields)}). Set CLASS_FIELD to the class field.")
    if defn.GetFieldDefn(idx).GetType() not in (ogr.OFTInteger, ogr.OFTInteger64):
        raise RasterError(f"The class field {class_field!r} of the polygon label layer is not an "
                          "integer field; use a field of integer class values.")
    info = describe(image_path)
    img_srs = osr.SpatialReference()
    img_srs.ImportFromWkt(info.crs or "")
    img_srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    tmp_vector = out_path + ".reprojected.gpkg"
    gdal.VectorTranslate(tmp_vector, vds, layers=[layer.GetName()], dstSRS=img_srs,
                         reproject=True, format="GPKG", layerName="labels")
    drv = gdal.GetDriverByName("GTiff")
    out = drv.Create(out_path, info.width, info.height, 1, gdal.GDT_Int32,
                     options=["COMPRESS=DEFLATE", "TILED=YES"])
    out.SetGeoTransform((info.transform[2], info.transform[0], info.transform[1],
                         info.transform[5], info.transform[3], info.transform[4]))
    out.SetProjection(info.crs or "")
    band = out.GetRasterBand(1)
    band.SetNoDataValue(POLYGON_LABEL_NODATA)
    band.Fill(POLYGON_LABEL_NODATA)
    gdal.Rasterize(out, tmp_vector, layers=["labels"], attribute=class_field)
    out.FlushCache()
    out = None
    os.remove(tmp_vector)
    return out_path


@contextlib.contextmanager
def burnt_polygon_labels(config, reporter):
    """The config itself, or — with LABEL_POLYGONS — a copy whose ``labels`` are the polygons
    burnt onto each image's grid, in a temporary folder removed afterwards."""
    if not config.label_polygons:
        yield config
        return
    if not config.class_field:
        raise InvalidParameterError("LABEL_POLYGONS needs CLASS_FIELD: the integer field holding "
                                    "each polygon's class value.")
    folder = tempfile.mkdtemp(prefix="berunda_labels_")
    try:
        labels = []
        for i, image in enumerate(config.labeled_images):
            reporter.info(f"Rasterising label polygons onto {image}")
            labels.append(rasterize_polygons(config.label_polygons, config.class_field, image,
                                             os.path.join(folder, f"labels_{i}.tif"),
                                             config.label_layer))
        yield dataclasses.replace(config, labels=labels)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
