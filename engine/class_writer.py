"""The GeoTIFFs of a classification, written block by block (from the writer
thread): the class raster (original class values, colour table, nodata), the
optional per-class probabilities and the optional confidence (max probability).

All are tiled and DEFLATE-compressed on the input's grid, with GeoTIFF blocks
that divide the processing blocks so that each is written once, whole."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .categories import colormap, supports_colormap


class ClassWriter:
    def __init__(self, plan, georef: dict, values: Sequence[int], names: Sequence[str],
                 colors: Sequence[str], output: str, dtype: str, nodata: int,
                 probabilities: Optional[str] = None, probabilities_dtype: str = "float32",
                 confidence: Optional[str] = None, tags: Optional[dict] = None):
        self.classes = len(values)
        self.nodata = nodata
        self.lut = np.asarray(values, dtype=dtype)   # network channel i -> class value i
        self.counts = np.zeros(self.classes, np.int64)
        self.probabilities = probabilities is not None
        self.confidence = confidence is not None
        self.probabilities_dtype = probabilities_dtype
        profile = dict(driver="GTiff", width=plan.cols.length, height=plan.rows.length,
                       crs=georef["crs"], transform=georef["transform"], tiled=True,
                       blockxsize=plan.tiff_block("cols"), blockysize=plan.tiff_block("rows"),
                       compress="deflate", BIGTIFF="IF_SAFER")
        self._datasets = []
        self.prob = self.conf = None
        try:
            self._open_all(profile, values, names, colors, output, dtype, nodata, probabilities,
                           probabilities_dtype, confidence)
            for ds in self._datasets:   # e.g. which model made it (berunda:evaluate names it)
                ds.update_tags(**(tags or {}))
        except BaseException:
            self.close()
            raise

    def _open_all(self, profile, values, names, colors, output, dtype, nodata, probabilities,
                  probabilities_dtype, confidence):
        import rasterio
        from rasterio.windows import Window

        self.out = self._open(output, count=1, dtype=dtype, nodata=nodata, **profile)
        if supports_colormap(dtype):
            self.out.write_colormap(1, colormap(values, colors, nodata))
        if probabilities:
            # One band per class, never a photo: GDAL would tag 3 or 4 Byte bands as RGB(A).
            profile = dict(profile, photometric="MINISBLACK")
            if probabilities_dtype == "uint8":
                # 0..255 uses every value: nodata pixels go to an internal mask instead.
                with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
                    self.prob = self._open(probabilities, count=self.classes, dtype="uint8",
                                           **profile)
                    self.prob.write_mask(np.zeros((1, 1), np.uint8),
                                         window=Window(0, 0, 1, 1))
            else:
                self.prob = self._open(probabilities, count=self.classes, dtype="float32",
                                       nodata=float("nan"), predictor=3, **profile)
            for i, name in enumerate(names, start=1):
                self.prob.set_band_description(i, str(name))
        if confidence:
            self.conf = self._open(confidence, count=1, dtype="float32", nodata=float("nan"),
                                   predictor=3, **profile)
            self.conf.set_band_description(1, "confidence (max probability)")

    def _open(self, path: str, **profile):
        import rasterio

        ds = rasterio.open(path, "w", **profile)
        self._datasets.append(ds)
        return ds

    def write(self, item) -> None:
        """One finished block: (block, class index, valid, probabilities, confidence)."""
        from rasterio.windows import Window

        block, index, valid, probs, conf = item
        window = Window(block.c0, block.r0, block.c1 - block.c0, block.r1 - block.r0)
        classes = self.lut[index]
        classes[~valid] = self.nodata
        self.out.write(classes, 1, window=window)
        self.counts += np.bincount(index[valid].ravel(), minlength=self.classes)[:self.classes]
        if self.prob is not None:
            if self.probabilities_dtype == "uint8":
                scaled = np.rint(np.clip(probs, 0.0, 1.0) * 255).astype(np.uint8)
                scaled[:, ~valid] = 0
                self.prob.write(scaled, window=window)
                self.prob.write_mask(valid.astype(np.uint8) * 255, window=window)
            else:
                probs[:, ~valid] = np.nan
                self.prob.write(probs, window=window)
        if self.conf is not None:
            conf[~valid] = np.nan
            self.conf.write(conf, 1, window=window)

    def close(self) -> None:
        """Close every dataset (flushing it), even when one fails; then raise the first error."""
        error = None
        while self._datasets:
            try:
                self._datasets.pop().close()
            except Exception as exc:   # e.g. the disk filled up while flushing
                error = error or exc
        if error is not None:
            raise error
