"""How good would a trained model's pseudo-labels be?  (issue 11's "why")

Classifies image/label pairs with a Berunda model (the labels are read only to
score), and reports per group of rasters, for each threshold τ: the share of
valid pixels whose top class probability is ≥ τ (what `consistency` would train
on) and the accuracy of those pixels against the hand labels, next to the
accuracy and mIoU of all pixels (whole rasters: a steadier score than the
benchmark's four 320-px crops).  Pseudo-labels that are right only where the network
is already right teach little; wrong ones teach errors.

    .venv/bin/python bench/pseudo_labels.py MODEL.pt \\
        --group "scenes 1-6 (unlabeled)" scene1_part2 scene1_part3 ... \\
        --group "scenes 7-8 (held out)" scene7_part1 ...

Classification is in eval mode with the model's recalibrated batch norm, as
berunda:classify does; during training the pseudo-labels come from batch
statistics of the step's tiles, so the figures describe the final network, not
exactly the pseudo-labels of its last steps.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".build" / "plugins"))

THRESHOLDS = (0.7, 0.8, 0.9, 0.95)


def score_group(model, names, data: Path, folder: Path):
    from berunda.engine.inference import classify_raster
    from berunda.engine.metrics import PairCounter, compute_scores

    classes = model.metadata["classes"]
    pairs = PairCounter()
    covered = np.zeros(len(THRESHOLDS))
    right = np.zeros(len(THRESHOLDS))
    valid_total = correct_total = 0
    for name in names:
        out, conf = folder / f"{name}.tif", folder / f"{name}_conf.tif"
        classify_raster(str(data / "images" / f"{name}.tif"), model, str(out),
                        confidence_path=str(conf), device="cpu")
        with rasterio.open(data / "labels" / f"{name}.tif") as ds:
            truth = ds.read(1)
        with rasterio.open(out) as ds:
            predicted = ds.read(1)
        with rasterio.open(conf) as ds:
            confidence = ds.read(1).astype(np.float64)
        valid = truth != classes["nodata"]
        ok = (predicted == truth) & valid
        pairs.update(truth[valid], predicted[valid])
        valid_total += int(valid.sum())
        correct_total += int(ok.sum())
        for i, tau in enumerate(THRESHOLDS):
            keep = valid & (confidence >= tau)
            covered[i] += keep.sum()
            right[i] += (ok & keep).sum()
        out.unlink(), conf.unlink()
    miou = compute_scores(pairs.matrix(classes["values"])).mean_iou
    return valid_total, correct_total, miou, covered, right


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dubai"))
    p.add_argument("--group", nargs="+", action="append", required=True,
                   metavar=("TITLE", "IMAGE"), help="a title and image names (no .tif)")
    args = p.parse_args(argv)
    from berunda.engine.model_file import load_model

    model = load_model(args.model)
    print(f"| rasters | all pixels: accuracy | mIoU | "
          + " | ".join(f"τ {t}: share / accuracy" for t in THRESHOLDS) + " |")
    print("|---|---|---|" + "---|" * len(THRESHOLDS))
    with tempfile.TemporaryDirectory() as folder:
        for title, *names in args.group:
            valid, correct, miou, covered, right = score_group(model, names, Path(args.data),
                                                         Path(folder))
            cells = [f"{100 * c / valid:.1f} % / {100 * r / max(c, 1):.1f} %"
                     for c, r in zip(covered, right)]
            print(f"| {title} ({len(names)}) | {100 * correct / valid:.1f} % | {miou:.1f} % | "
                  + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
