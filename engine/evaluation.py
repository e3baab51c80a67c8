"""Compare a classified raster with a ground-truth raster, window by window (any
size): confusion matrix, class names and colours, scores.

Pixels that are nodata in either raster (or hold the model's label nodata in
the truth) are left out.  The class list is the model's classes when given,
followed by any other value found in either raster."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from .categories import class_labels
from .errors import Cancelled, DataError, RasterError
from .metrics import PairCounter, Scores, compute_scores
from .palette import default_color
from .progress import Reporter
from .rasters import (block_windows, check_same_grid, describe, open_raster, read_checked,
                      valid_mask)

WINDOW = 1024


@dataclass
class EvaluationResult:
    prediction: str
    truth: str
    values: List[int]
    names: List[str]
    colors: List[str]          # '#RRGGBB'
    matrix: np.ndarray         # rows: truth, columns: prediction, in ``values`` order
    scores: Scores
    model: Optional[str] = None        # the model that made the prediction, when it says so
    warnings: List[str] = field(default_factory=list)   # shown in the log and the report

    @property
    def pixels(self) -> int:
        return int(self.matrix.sum())


def evaluate_rasters(prediction_path: str, truth_path: str, classes: Optional[dict] = None,
                     reporter: Optional[Reporter] = None) -> EvaluationResult:
    reporter = reporter or Reporter()
    truth_info, pred_info = describe(truth_path), describe(prediction_path)
    for info, what in ((pred_info, "classified raster"), (truth_info, "ground-truth raster")):
        if info.count != 1:
            raise RasterError(f"The {what} {info.path} has {info.count} bands; evaluation needs "
                              "one band of class values (not the probabilities raster).")
    check_same_grid(truth_info, pred_info, what="classified raster")
    label_nodata = (classes or {}).get("nodata")
    counter = PairCounter()
    windows = list(block_windows(truth_info.height, truth_info.width, WINDOW))
    from rasterio.windows import Window

    with open_raster(truth_path) as truth_ds, open_raster(prediction_path) as pred_ds:
        for i, (r, c, h, w) in enumerate(windows):
            if reporter.cancelled():
                raise Cancelled("Evaluation cancelled.")
            t = read_checked(truth_ds, Window(c, r, w, h), 1)
            p = read_checked(pred_ds, Window(c, r, w, h), 1)
            ok = valid_mask(t[None], truth_ds.nodata) & valid_mask(p[None], pred_ds.nodata)
            if label_nodata is not None:
                ok &= t != label_nodata
            counter.update(_class_values(t[ok], truth_path), _class_values(p[ok], prediction_path))
            reporter.progress((i + 1) / len(windows))
    if not counter.counts:
        raise DataError(f"No pixel holds data in both {prediction_path} and {truth_path}; "
                        "check their nodata values and that they cover the same area.")
    values = _class_list(classes, counter.values())
    matrix = counter.matrix(values)
    names, colors = _names_and_colors(values, classes, truth_path, prediction_path)
    scores = compute_scores(matrix)
    warnings = _disjoint_classes(counter)
    for line in warnings:
        reporter.warning(line)
    model = _model_of(prediction_path)
    reporter.info(f"Evaluated {scores.pixels} pixels{' classified by ' + model if model else ''}: "
                  f"overall accuracy {scores.overall_accuracy:.2f} %, mean IoU "
                  f"{scores.mean_iou:.2f} %, kappa {scores.kappa:.3f}.")
    return EvaluationResult(prediction_path, truth_path, values, names, colors, matrix, scores,
                            model, warnings)


def _disjoint_classes(counter: PairCounter) -> List[str]:
    truth = sorted({t for t, _ in counter.counts})
    predicted = sorted({p for _, p in counter.counts})
    if set(truth) & set(predicted):
        return []
    return [f"The classified raster and the ground truth share no class value (classified: "
            f"{', '.join(map(str, predicted))}; ground truth: {', '.join(map(str, truth))}), so "
            "every pixel counts as wrong. Usually the labels were recoded (e.g. reclassified to "
            "other values) after the model was trained, or the wrong ground truth was chosen: "
            "compare rasters that use the same class values."]


def _model_of(path: str) -> Optional[str]:
    """The model berunda:classify recorded in the classified raster's metadata."""
    with open_raster(path) as ds:
        return ds.tags().get("BERUNDA_MODEL") or None


def _class_values(values: np.ndarray, path: str) -> np.ndarray:
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise RasterError(f"{path} holds fractional values; evaluation needs class values "
                          "(integers). Did you pass the probabilities or confidence raster?")
    return values


def _class_list(classes: Optional[dict], observed: List[int]) -> List[int]:
    listed = [int(v) for v in (classes or {}).get("values", [])]
    return listed + [v for v in observed if v not in set(listed)]


def _names_and_colors(values, classes, truth_path, prediction_path):
    """The model's names and colours, else those the truth declares, else those the
    classified raster declares, else defaults."""
    names = {v: f"class {v}" for v in values}
    colors = {v: default_color(i) for i, v in enumerate(values)}
    for path in (prediction_path, truth_path):   # truth last: it wins
        found_names, found_colors = class_labels(path, values)
        names.update(found_names)
        colors.update(found_colors)
    if classes:
        model_values = [int(v) for v in classes.get("values", [])]
        names.update(zip(model_values, map(str, classes.get("names") or [])))
        colors.update(zip(model_values, map(str, classes.get("colors") or [])))
    return [names[v] for v in values], [colors[v].upper() for v in values]
