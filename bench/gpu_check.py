"""The GPU check (issue 15): one command, about a minute on an H100, on a machine with torch
but without QGIS, segmentation-models-pytorch or rasterio installed (they travel as wheels).

0. how fast the training tiles are read (no network), 1 thread vs the GPU default;
1. CUDA training steps with AMP for `none`, `kmeans` and `consistency` (finite losses, the
   loss scaler in use), on synthetic rasters laid out like the Dubai data;
2. the out-of-memory back-off, forced by capping the process's GPU memory: the trainer must
   halve its micro-batch and finish;
3. berunda:classify's engine on a 67 Mpx raster with default parameters, twice (Mpx/s of
   the second run: the first includes the kernels' first calls);
4. the throughput ratios of bench_training (Berunda's loop, for `none`, `kmeans` and
   `consistency`, vs a bare smp step on as many tiles) and
   bench_inference (classify_raster vs the bare network at 512-px tiles) on the GPU.

Prints a markdown table and writes gpu_check.json to --out.  On the device machine:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out $OUT

(`scripts/gpu_wheels.sh` downloads those wheels into .whl/.)  `--device cpu --quick` runs
the same steps at toy sizes as a smoke test of the script itself.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / ".build" / "plugins"
if not (PLUGINS / "berunda").exists():
    PLUGINS.mkdir(parents=True, exist_ok=True)
    (PLUGINS / "berunda").symlink_to(REPO, target_is_directory=True)
sys.path[:0] = [str(PLUGINS), str(REPO / "bench")]

import numpy as np  # noqa: E402
import torch  # noqa: E402


def synthetic_scenes(folder: Path, size: int, scenes: int = 4, seed: int = 0) -> Path:
    """images/sceneK_partP.tif + labels/… like the Dubai data: smooth random classes (5) and
    RGB uint8 images whose colour depends on the class, plus noise."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 220, size=(5, 3))
    for kind in ("images", "labels"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    for scene in range(1, scenes + 1):
        for part in (1, 2):
            coarse = rng.integers(1, 6, size=(size // 32 + 1, size // 32 + 1))
            label = np.kron(coarse, np.ones((32, 32), dtype=np.int64))[:size, :size].astype(np.uint8)
            image = colours[label - 1].transpose(2, 0, 1) + rng.normal(0, 12, (3, size, size))
            image = np.clip(image, 0, 255).astype(np.uint8)
            profile = dict(driver="GTiff", width=size, height=size, crs="EPSG:32640",
                           transform=from_origin(500000, 2800000, 0.5, 0.5), tiled=True)
            name = f"scene{scene}_part{part}.tif"
            with rasterio.open(folder / "images" / name, "w", count=3, dtype="uint8", **profile) as ds:
                ds.write(image)
            with rasterio.open(folder / "labels" / name, "w", count=1, dtype="uint8", nodata=0,
                               **profile) as ds:
                ds.write(label[None])
    return folder


def big_raster(path: Path, side: int) -> str:
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(1)
    profile = dict(driver="GTiff", width=side, height=side, count=3, dtype="uint8",
                   crs="EPSG:32640", transform=from_origin(500000, 2800000, 0.5, 0.5),
                   tiled=True, blockxsize=512, blockysize=512)
    with rasterio.open(path, "w", **profile) as ds:
        for row in range(0, side, 1024):
            h = min(1024, side - row)
            block = rng.integers(0, 255, (3, h, side), dtype=np.uint8)
            ds.write(block, window=((row, row + h), (0, side)))
    return str(path)


class Log:
    def __init__(self):
        from berunda.engine.progress import Reporter

        class _R(Reporter):
            lines = []

            def info(self, message):
                self.lines.append(message)
                print("   ", message, flush=True)

        self.reporter = _R()


def config_for(data: Path, task: str, args, **kw):
    from berunda.engine.config import TrainingConfig

    img = lambda n: str(data / "images" / f"{n}.tif")  # noqa: E731
    lab = lambda n: str(data / "labels" / f"{n}.tif")  # noqa: E731
    labeled = [f"scene{s}_part1" for s in range(1, 5)]
    values = dict(labeled_images=[img(n) for n in labeled], labels=[lab(n) for n in labeled],
                  unlabeled_images=[img(f"scene{s}_part2") for s in range(1, 5)], aux_task=task,
                  encoder=args.encoder, tile_size=args.tile, batch_size=args.batch, epochs=2,
                  samples_per_epoch=args.batch * args.steps, device=args.device, clusters=10,
                  mask_size=args.tile // 4, learning_rate=1e-3)
    values.update(kw)
    return TrainingConfig(**values)


def check_training(data, args, tmp, record):
    from berunda.engine.trainer import train

    rows = []
    for task in ("none", "kmeans", "consistency"):
        log = Log()
        t0 = time.perf_counter()
        result = train(config_for(data, task, args), str(tmp / f"{task}.pt"), log.reporter)
        last = result.history[-1]
        rows.append({"task": task, "samples_per_s": last["samples_per_s"],
                     "loss": last["loss"], "finite": bool(np.isfinite(last["loss"])),
                     "seconds": time.perf_counter() - t0})
        print(f"  {task}: {last['samples_per_s']:.1f} tiles/s, loss {last['loss']:.4f}", flush=True)
    record["training"] = rows


def check_oom_backoff(data, args, tmp, record):
    """Cap the process's GPU memory so the step cannot fit; the trainer must halve."""
    from berunda.engine.trainer import train

    if args.device != "cuda":
        record["oom"] = {"skipped": "needs CUDA"}
        return
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, args.oom_cap_gib * 2**30 / total))
    log = Log()
    try:
        result = train(config_for(data, "kmeans", args, batch_size=args.oom_batch, epochs=1,
                                  tile_size=args.oom_tile, samples_per_epoch=2 * args.oom_batch),
                       str(tmp / "oom.pt"), log.reporter)
        halved = [line for line in log.reporter.lines if "ran out of memory" in line]
        record["oom"] = {"requested_batch": args.oom_batch,
                         "final_batch": result.history[-1]["batch_size"],
                         "messages": halved, "finished": True}
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    print(f"  OOM back-off: {record['oom']['requested_batch']} -> "
          f"{record['oom']['final_batch']} tiles per pass", flush=True)


def check_classify(data, args, tmp, record):
    from berunda.engine.inference import classify_raster

    raster = big_raster(tmp / "big.tif", args.classify_side)
    model = tmp / "kmeans.pt"
    times = []
    for run in ("cold", "warm"):   # cold: the kernels' first calls for these shapes
        t0 = time.perf_counter()
        classify_raster(raster, str(model), str(tmp / f"big_classes_{run}.tif"), device=args.device)
        times.append(time.perf_counter() - t0)
    mpx = args.classify_side ** 2 / 1e6
    record["classify"] = {"mpx": mpx, "seconds": times[1], "cold_seconds": times[0],
                          "mpx_per_s": mpx / times[1]}
    print(f"  classify {mpx:.1f} Mpx: {times[0]:.1f} s cold, {times[1]:.1f} s warm, "
          f"{mpx / times[1]:.2f} Mpx/s warm", flush=True)


def bare_network_mpx_per_s(model_path, device, tile=512, batch=8, rounds=10):
    from berunda.engine.model_file import load_model

    net = load_model(str(model_path)).build_network(device.type)
    x = torch.randn(batch, 3, tile, tile, device=device)
    amp = torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda")
    with torch.no_grad(), amp:
        for _ in range(2):
            net(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(rounds):
            net(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return rounds * batch * tile * tile / 1e6 / (time.perf_counter() - t0)


def check_ratios(data, args, tmp, record):
    import bench_training

    device = torch.device(args.device)
    ratios = []
    for row in record["training"]:      # consistency: what its ~2 extra passes cost
        bare = bench_training.bare_samples_per_s(args.encoder, args.batch * (1 if row["task"] == "none" else 2),
                                                 args.tile, 5, 3, device, args.steps,
                                                 amp=device.type == "cuda")
        ratios.append({"task": row["task"], "berunda": row["samples_per_s"], "bare": bare,
                       "ratio": row["samples_per_s"] / bare})
    record["training_ratio"] = ratios
    bare = bare_network_mpx_per_s(tmp / "kmeans.pt", device, tile=args.bare_tile)
    record["inference_ratio"] = {"classify_mpx_per_s": record["classify"]["mpx_per_s"],
                                 "bare_mpx_per_s_512": bare,
                                 "ratio": record["classify"]["mpx_per_s"] / bare}


def check_reading(data, args, record):
    """Tiles/s the reading threads deliver (no network), 1 thread vs the GPU default."""
    import bench_reading
    from berunda.engine.prefetch import reading_workers
    from berunda.engine.progress import Reporter
    from berunda.engine.training_data import prepare_training_data

    prepared = prepare_training_data(config_for(data, "kmeans", args), Reporter(), True)
    try:
        rows = []
        for workers in sorted({1, reading_workers("cuda", args.tile)}):
            rate = bench_reading.reading_tiles_per_s(prepared, workers, args.steps, args.batch)
            rows.append({"workers": workers, "tiles_per_s": rate})
            print(f"  {workers} reading thread(s): {rate:.1f} tiles/s", flush=True)
    finally:
        prepared.close()
    record["reading"] = rows


def markdown(record) -> str:
    lines = [f"GPU check on {record['device_name']} (torch {record['torch']}), "
             f"{record['seconds']:.0f} s", "", "| check | figure |", "|---|---|"]
    for row in record["training"]:
        lines.append(f"| train {row['task']} (AMP) | {row['samples_per_s']:.1f} tiles/s, "
                     f"loss {row['loss']:.3f}, finite {row['finite']} |")
    oom = record["oom"]
    lines.append("| OOM back-off | " + (oom.get("skipped") or
                 f"{oom['requested_batch']} → {oom['final_batch']} tiles per pass") + " |")
    c = record["classify"]
    lines.append(f"| classify {c['mpx']:.1f} Mpx (model load included) | {c['cold_seconds']:.1f} s "
                 f"cold, {c['seconds']:.1f} s warm = {c['mpx_per_s']:.2f} Mpx/s |")
    for row in record["training_ratio"]:
        lines.append(f"| bench_training {row['task']} | {row['berunda']:.1f} vs bare "
                     f"{row['bare']:.1f} tiles/s = **{row['ratio']:.2f}** |")
    for row in record.get("reading", []):
        lines.append(f"| reading tiles, {row['workers']} thread(s), no network | "
                     f"{row['tiles_per_s']:.1f} tiles/s |")
    inf = record["inference_ratio"]
    lines.append(f"| bench_inference (defaults vs bare 512 px) | {inf['classify_mpx_per_s']:.2f} vs "
                 f"{inf['bare_mpx_per_s_512']:.2f} Mpx/s = **{inf['ratio']:.2f}** |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default=os.environ.get("OUT", str(REPO / "out" / "gpu-check")))
    p.add_argument("--quick", action="store_true", help="toy sizes (CPU smoke test of the script)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu --quick to test the script")
    sizes = (dict(encoder="resnet18", tile=64, batch=2, steps=2, scene=256, classify_side=512,
                  bare_tile=128, oom_cap_gib=0.5, oom_batch=8, oom_tile=64) if args.quick else
             dict(encoder="resnet34", tile=320, batch=8, steps=40, scene=2048, classify_side=8192,
                  bare_tile=512, oom_cap_gib=3.0, oom_batch=64, oom_tile=512))
    for key, value in sizes.items():
        setattr(args, key, value)
    start = time.perf_counter()
    record = {"torch": torch.__version__, "python": platform.python_version(),
              "device_name": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "args": vars(args)}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        data = synthetic_scenes(tmp / "data", args.scene)
        print("0. reading tiles", flush=True)
        check_reading(data, args, record)
        print("1. training steps with AMP", flush=True)
        check_training(data, args, tmp, record)
        print("2. out-of-memory back-off", flush=True)
        check_oom_backoff(data, args, tmp, record)
        print("3. classify", flush=True)
        check_classify(data, args, tmp, record)
        print("4. throughput ratios", flush=True)
        check_ratios(data, args, tmp, record)
    record["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(record, indent=1, default=str))
    table = markdown(record)
    (out / "gpu_check.md").write_text(table + "\n")
    print("\n" + table)


if __name__ == "__main__":
    main()
