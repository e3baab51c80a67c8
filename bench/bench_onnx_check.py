"""How far onnxruntime's soft-max is from torch's for correct exports (rounding) and for
deliberately broken ones, against the export check's float32 bound (engine/onnx_check.py).

Models: tiny trainings on a Dubai crop (resnet18: RGB UInt8, 4-band UInt16 with nodata,
Float32 with nodata, as in tests/test_onnx_export.py) and a resnet34 (the default encoder)
trained a little longer.  Each is exported at every tile size × thread count × opset; the
thread count is torch's and onnxruntime's.  The broken graphs (bands swapped, standardisation
skipped, classes reordered) are exported at 64 px with the check disabled and compared the
same way.  "ratio" = difference / (the bound without its SAFETY factor).

    .venv/bin/python bench/bench_onnx_check.py --out out/onnx_check
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".build" / "plugins"))
sys.path.insert(0, str(REPO / "tests"))

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from berunda.engine import onnx_check, onnx_export  # noqa: E402
from berunda.engine.config import TrainingConfig  # noqa: E402
from berunda.engine.errors import ExportError  # noqa: E402
from berunda.engine.model_file import load_model  # noqa: E402
from berunda.engine.trainer import train  # noqa: E402
from helpers import read_crop, write_raster  # noqa: E402

DATA = Path(os.environ.get("BERUNDA_DATA", REPO.parent / "shared" / "data" / "dubai"))


def as_kind(data, kind):
    if kind == "rgb_uint8":
        return data, None
    if kind == "4band_uint16":
        rgb = data.astype(np.uint16) * 257
        out = np.concatenate([rgb, (65535 - rgb[1] // 2).astype(np.uint16)[None]])
        out[:, 10:30, 40:70] = 0
        return out, 0
    out = data.astype(np.float32) / 255
    out[:, 5:20, 5:25] = -9999
    return out, -9999.0


def make_models(folder: Path):
    img, lab = str(DATA / "images" / "scene1_part1.tif"), str(DATA / "labels" / "scene1_part1.tif")
    rgb, geo, _ = read_crop(img, 0, 560, 320)
    lab_data, lgeo, lcmap = read_crop(lab, 0, 560, 320)
    label = write_raster(folder / "label.tif", lab_data, lgeo, lcmap)
    models = {}
    for kind, encoder, epochs in (("rgb_uint8", "resnet18", 1), ("4band_uint16", "resnet18", 1),
                                  ("float32", "resnet18", 1), ("rgb_uint8_resnet34", "resnet34", 6)):
        data, nodata = as_kind(rgb, kind.replace("_resnet34", ""))
        image = write_raster(folder / f"{kind}.tif", data, dict(geo, nodata=nodata))
        model = str(folder / f"{kind}.pt")
        if not os.path.exists(model):
            train(TrainingConfig([image], [label], encoder=encoder, tile_size=64, batch_size=4,
                                 samples_per_epoch=16, epochs=epochs, device="cpu"), model)
        models[kind] = model
    return models


class Recorder:
    """Wraps onnx_check.compare to keep what the export check saw."""

    def __init__(self):
        self.seen = []
        self.original = onnx_check.compare

    def __call__(self, onnx_probs, torch_probs, valid, tolerance, everywhere=True):
        result = self.original(onnx_probs, torch_probs, valid, tolerance, everywhere)
        self.seen.append(result)
        return result


def set_threads(n: int):
    torch.set_num_threads(n)
    original = ort.SessionOptions

    def options():
        o = original()
        o.intra_op_num_threads = n
        return o
    ort.SessionOptions = options
    return original


def row(check, **fields) -> dict:
    """One export's line: its settings and what the check saw."""
    return dict(fields, difference=check.max_difference, tolerance=check.tolerance,
                agreement=check.agreement,
                ratio=check.max_difference / (check.tolerance / onnx_check.SAFETY))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/onnx_check")
    parser.add_argument("--tiles", default="64,128,256,384,512")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--opsets", default="13,17")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = make_models(out)
    recorder = Recorder()
    onnx_export.compare = recorder   # the name the export calls
    rows = []
    for kind, model in models.items():
        depth, longest = onnx_check.network_rounding(load_model(model).build_network("cpu").unet)
        for tile in map(int, args.tiles.split(",")):
            for threads in map(int, args.threads.split(",")):
                for opset in map(int, args.opsets.split(",")):
                    original = set_threads(threads)
                    start = time.perf_counter()
                    try:
                        onnx_export.export_onnx(model, str(out / "x.onnx"), tile_size=tile,
                                                opset=opset)
                        refused = False
                    except ExportError:
                        refused = True
                    finally:
                        ort.SessionOptions = original
                    rows.append(row(recorder.seen[-1], model=kind, variant="correct", tile=tile,
                                    threads=threads, opset=opset, refused=refused, depth=depth,
                                    longest=longest, seconds=round(time.perf_counter() - start, 2)))
                    print(json.dumps(rows[-1]), flush=True)
                    os.remove(out / "x.onnx") if (out / "x.onnx").exists() else None
    from test_onnx_export import _broken  # the test's own broken graphs
    correct = onnx_export.DeepnessGraph
    for kind, model in models.items():
        for variant in ("bands_swapped", "standardisation_skipped", "classes_reordered"):
            onnx_export.DeepnessGraph = _broken(variant)
            try:
                onnx_export.export_onnx(model, str(out / "x.onnx"), tile_size=64)
                refused = False
            except ExportError:
                refused = True
            finally:
                onnx_export.DeepnessGraph = correct
            rows.append(row(recorder.seen[-1], model=kind, variant=variant, tile=64,
                            threads=torch.get_num_threads(), opset=onnx_export.DEFAULT_OPSET,
                            refused=refused))
            print(json.dumps(rows[-1]), flush=True)
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    good = [r for r in rows if r["variant"] == "correct"]
    bad = [r for r in rows if r["variant"] != "correct"]
    worst = max(good, key=lambda r: r["ratio"])
    print(f"correct exports: {len(good)}, refused {sum(r['refused'] for r in good)}; largest "
          f"difference {max(r['difference'] for r in good):.2e}; largest ratio {worst['ratio']:.3f} "
          f"({worst['model']}, {worst['tile']} px, {worst['threads']} threads, opset {worst['opset']})")
    print(f"broken exports: {len(bad)}, refused {sum(r['refused'] for r in bad)}; smallest ratio "
          f"{min(r['ratio'] for r in bad):.0f}; smallest difference "
          f"{min(r['difference'] for r in bad):.2e}; lowest agreement "
          f"{min(r['agreement'] for r in bad):.3f}")
    return 0 if not any(r["refused"] for r in good) and all(r["refused"] for r in bad) else 1


if __name__ == "__main__":
    sys.exit(main())
