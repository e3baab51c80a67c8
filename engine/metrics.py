"""Confusion matrices and the scores derived from them (one place for the
trainer's validation and the evaluation of classified rasters).

Convention: rows are the ground truth, columns the prediction.  Overall
accuracy, mean IoU and the per-class scores are percentages (as in the paper);
Cohen's kappa is a coefficient in [-1, 1].  A per-class score whose
denominator is 0 is NaN.  The mean IoU averages the classes present in the
ground truth or in the prediction (a class absent from both says nothing about
the classifier and is left out)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

# Pair codes are counted with one np.bincount while the value range is at most this
# wide (65,536 bins); wider ranges fall back to np.unique.
_BINCOUNT_SPAN = 256


def confusion_matrix(truth: np.ndarray, prediction: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts of class indices 0..C-1 (other indices, e.g. ignore, are skipped)."""
    t = np.asarray(truth, np.int64).ravel()
    p = np.asarray(prediction, np.int64).ravel()
    keep = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    codes = t[keep] * num_classes + p[keep]
    return np.bincount(codes, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


class PairCounter:
    """Accumulates (truth value, predicted value) pair counts for arbitrary integer
    class values, window after window, without knowing the values beforehand."""

    def __init__(self):
        self.counts: Dict[Tuple[int, int], int] = {}

    def update(self, truth: np.ndarray, prediction: np.ndarray) -> None:
        t = np.asarray(truth).astype(np.int64, copy=False).ravel()
        p = np.asarray(prediction).astype(np.int64, copy=False).ravel()
        if t.size == 0:
            return
        lo = int(min(t.min(), p.min()))
        span = int(max(t.max(), p.max())) - lo + 1
        if span <= _BINCOUNT_SPAN:
            n = np.bincount((t - lo) * span + (p - lo), minlength=span * span)
            codes = np.flatnonzero(n)
            pairs = zip((codes // span + lo).tolist(), (codes % span + lo).tolist(),
                        n[codes].tolist())
        else:
            uniq, n = np.unique(np.stack([t, p]), axis=1, return_counts=True)
            pairs = zip(uniq[0].tolist(), uniq[1].tolist(), n.tolist())
        for tv, pv, k in pairs:
            self.counts[(tv, pv)] = self.counts.get((tv, pv), 0) + k

    def values(self) -> List[int]:
        return sorted({v for pair in self.counts for v in pair})

    def matrix(self, values: Sequence[int]) -> np.ndarray:
        """Counts as a (len(values), len(values)) matrix; pairs with another value are
        left out (list every observed value to keep them all)."""
        index = {int(v): i for i, v in enumerate(values)}
        m = np.zeros((len(values), len(values)), np.int64)
        for (tv, pv), k in self.counts.items():
            if tv in index and pv in index:
                m[index[tv], index[pv]] += k
        return m


@dataclass
class Scores:
    pixels: int
    overall_accuracy: float        # %
    mean_iou: float                # % over classes present in truth or prediction
    kappa: float                   # Cohen's kappa
    iou: np.ndarray                # % per class
    precision: np.ndarray          # % per class (user's accuracy)
    recall: np.ndarray             # % per class (producer's accuracy)
    f1: np.ndarray                 # % per class
    truth_pixels: np.ndarray       # per class (row sums)
    predicted_pixels: np.ndarray   # per class (column sums)
    present: np.ndarray            # bool per class: counted in the mean IoU

    def to_dict(self) -> dict:
        """JSON-able (NaN -> None), e.g. for a model's validation record."""
        def clean(a):
            return [None if isinstance(x, float) and np.isnan(x) else x for x in a]

        return {
            "pixels": self.pixels,
            "overall_accuracy": clean([self.overall_accuracy])[0],
            "mean_iou": clean([self.mean_iou])[0],
            "kappa": clean([self.kappa])[0],
            "iou": clean(self.iou.tolist()), "precision": clean(self.precision.tolist()),
            "recall": clean(self.recall.tolist()), "f1": clean(self.f1.tolist()),
            "truth_pixels": self.truth_pixels.tolist(),
            "predicted_pixels": self.predicted_pixels.tolist(),
        }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def compute_scores(matrix: np.ndarray) -> Scores:
    m = np.asarray(matrix, np.float64)
    total = m.sum()
    tp = np.diag(m)
    rows, cols = m.sum(axis=1), m.sum(axis=0)
    iou = _ratio(tp, rows + cols - tp)
    precision, recall = _ratio(tp, cols), _ratio(tp, rows)
    f1 = _ratio(2 * tp, rows + cols)
    present = (rows + cols) > 0
    oa = float(_ratio(tp.sum(), total))
    expected = float(_ratio((rows * cols).sum(), total * total)) if total else float("nan")
    # kappa is undefined (NaN) when chance agreement is already perfect (one class only).
    kappa = float(_ratio(oa - expected, 1.0 - expected)) if total else float("nan")
    miou = float(np.mean(iou[present])) if present.any() else float("nan")
    return Scores(
        pixels=int(total), overall_accuracy=100 * oa, mean_iou=100 * miou, kappa=kappa,
        iou=100 * iou, precision=100 * precision, recall=100 * recall, f1=100 * f1,
        truth_pixels=rows.astype(np.int64), predicted_pixels=cols.astype(np.int64),
        present=present)
