"""Benchmark: how fast the training tiles are read, with 1, 2, … reading threads.

The trainer's own reading path (engine/sampling.read_step through engine/prefetch, the
rasters' windows read, normalised and flipped/rotated), no network: tiles/s that a
training step could consume at most.  On a GPU the reading, not the network, limited the
training loop (bench/README.md, gpu_check.py); several threads give the same tiles.

    .venv/bin/python bench/bench_reading.py --workers 1 2 --tile 320 --batch 8
"""
import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".build" / "plugins"))


def reading_tiles_per_s(data, workers: int, steps: int, batch: int) -> float:
    """Labeled + unlabeled tiles per second read by ``workers`` threads over ``steps`` steps
    of ``batch`` + ``batch`` tiles (``data``: engine.training_data.TrainingData)."""
    from berunda.engine.prefetch import prefetch
    from berunda.engine.sampling import read_step, step_generator

    produce = lambda i: read_step(data.labeled, data.unlabeled,  # noqa: E731
                                  step_generator(0, 1, i), batch)
    for _ in prefetch(produce, workers, workers=workers):   # open every thread's rasters
        pass
    t0 = time.perf_counter()
    for _ in prefetch(produce, steps, depth=2 * workers, workers=workers):
        pass
    return steps * 2 * batch / (time.perf_counter() - t0)


def main():
    import torch
    from bench_training import dubai_config
    from berunda.engine.progress import Reporter
    from berunda.engine.training_data import prepare_training_data

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dubai"))
    p.add_argument("--tile", type=int, default=320)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeat", type=int, default=3, help="the best of each is reported")
    args = p.parse_args()
    config = dubai_config("kmeans", Path(args.data), "resnet18", args.tile, args.batch,
                          args.steps, torch.device("cpu"))
    data = prepare_training_data(config, Reporter(), uses_unlabeled=True)
    try:
        print(f"tile {args.tile}, {args.batch} + {args.batch} tiles per step, {args.steps} steps")
        print("| reading threads | tiles/s | vs 1 thread |")
        print("|---|---|---|")
        first = None
        for workers in args.workers:
            rate = max(reading_tiles_per_s(data, workers, args.steps, args.batch)
                       for _ in range(args.repeat))
            first = first or rate
            print(f"| {workers} | {rate:.1f} | {rate / first:.2f} |", flush=True)
    finally:
        data.close()


if __name__ == "__main__":
    main()
