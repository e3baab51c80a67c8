"""Does the default inference tile cost accuracy?  (A benchmark, not a test.)

Trains a small model on 128-px tiles on the Dubai data (labeled part 1 of scenes
1-6; or takes --model), then classifies held-out images of scenes 7-8 twice:
with the old default (the training tile, 128 px, with a quarter overlap, 32 px)
and with classify_raster's defaults, and scores both against the labels (OA,
mIoU) and against each other (share of pixels with the same class).

    .venv/bin/python bench/inference_accuracy.py --out out/inference-accuracy
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".build" / "plugins"))
if not (REPO / ".build" / "plugins" / "berunda").exists():   # same link as tests/conftest.py
    (REPO / ".build" / "plugins").mkdir(parents=True, exist_ok=True)
    (REPO / ".build" / "plugins" / "berunda").symlink_to(REPO, target_is_directory=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dubai"))
    p.add_argument("--out", default=str(REPO / "out" / "inference-accuracy"))
    p.add_argument("--model", help="an existing model trained at 128 px (skips training)")
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--samples", type=int, default=96)
    p.add_argument("--images", default="scene7_part1,scene8_part2")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    import numpy as np
    import rasterio

    from berunda.engine.config import TrainingConfig
    from berunda.engine.evaluation import evaluate_rasters
    from berunda.engine.inference import classify_raster
    from berunda.engine.model_file import load_model
    from berunda.engine.progress import PrintReporter
    from berunda.engine.trainer import train

    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = args.model
    if not model:
        model = str(out / "model128.pt")
        names = [f"scene{s}_part1" for s in range(1, 7)]
        config = TrainingConfig(
            labeled_images=[str(data / "images" / f"{n}.tif") for n in names],
            labels=[str(data / "labels" / f"{n}.tif") for n in names], aux_task="none",
            encoder="resnet18", tile_size=128, batch_size=4, epochs=args.epochs,
            samples_per_epoch=args.samples, learning_rate=1e-3, device=args.device, seed=0,
            supervised_loss="ce")   # the loss of the measured model (bench/README.md)
        train(config, model, PrintReporter())
    package = load_model(model)
    assert package.metadata["tile_size"] == 128, "the case is a model trained at 128 px"
    rows = []
    for name in args.images.split(","):
        image, truth = str(data / "images" / f"{name}.tif"), str(data / "labels" / f"{name}.tif")
        row = {"image": name}
        for key, params in (("old", {"tile_size": 128, "overlap": 32}), ("default", {})):
            path = str(out / f"{name}_{key}.tif")
            start = time.perf_counter()
            result = classify_raster(image, package, path, device=args.device, **params)
            seconds = time.perf_counter() - start
            scores = evaluate_rasters(path, truth, classes=package.metadata["classes"]).scores
            row[key] = {"oa": round(scores.overall_accuracy, 2), "miou": round(scores.mean_iou, 2),
                        "seconds": round(seconds, 1), "tiles": result.tiles,
                        "mpx_s": round(result.pixels / 1e6 / seconds, 3)}
        with rasterio.open(str(out / f"{name}_old.tif")) as a, \
                rasterio.open(str(out / f"{name}_default.tif")) as b:
            row["agreement_percent"] = round(100 * float(np.mean(a.read(1) == b.read(1))), 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / "result.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
