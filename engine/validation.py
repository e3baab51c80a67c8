"""Scoring a trained model on held-out image/label pairs (berunda:train's optional
validation, and every run of berunda:compare)."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Sequence

import numpy as np

from .progress import Reporter, ScaledReporter


def score_model(model_path: str, images: Sequence[str], labels: Sequence[str], folder: str,
                reporter: Reporter, device: str = "auto") -> dict:
    """Classify each validation image (on the training's device) and score the pooled
    confusion matrix; a JSON-able record (stored in the model as "validation")."""
    from .evaluation import evaluate_rasters
    from .inference import classify_raster
    from .metrics import compute_scores
    from .model_file import load_model

    package = load_model(model_path)
    classes = package.metadata["classes"]
    pooled = {}   # (truth value, predicted value) -> pixels, over all validation images
    # One private folder: two trainings writing models to the same folder never share a file.
    scratch = tempfile.mkdtemp(prefix=".berunda-validation-", dir=folder)
    try:
        for i, (image, label) in enumerate(zip(images, labels)):
            out = os.path.join(scratch, f"{i}.tif")
            # The package keeps its network: built once for all the rasters.
            classify_raster(image, package, out, device=device, reporter=ScaledReporter(
                reporter, i / len(images), (i + 0.9) / len(images)))
            evaluation = evaluate_rasters(out, label, classes=classes)
            for leftover in os.listdir(scratch):   # keep the disk use of one raster
                os.remove(os.path.join(scratch, leftover))
            for i_t, tv in enumerate(evaluation.values):
                for i_p, pv in enumerate(evaluation.values):
                    pooled[(tv, pv)] = pooled.get((tv, pv), 0) + int(evaluation.matrix[i_t, i_p])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    values = sorted({v for pair in pooled for v in pair})
    index = {v: i for i, v in enumerate(values)}
    matrix = np.zeros((len(values), len(values)), np.int64)
    for (tv, pv), n in pooled.items():
        matrix[index[tv], index[pv]] += n
    record = compute_scores(matrix).to_dict()
    record.update(class_values=values, images=[os.path.basename(p) for p in images])
    return record
