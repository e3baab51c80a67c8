"""What train's and compare's default settings cost on this machine (not a test).

Runs the real trainer with the defaults (resnet34, 320-px tiles, batch 8 labeled
+ 8 unlabeled, kmeans) for a few steps on the Dubai data, takes the rate the
time estimator measured (engine/time_estimate.py) and extrapolates to the
defaults' budget: train = 50 epochs x 5000 labeled (+ 5000 unlabeled) tiles;
compare = supervised + kmeans + mumford_shah, 4 runs each (12 trainings).
Scoring of validation rasters is not included.

    .venv/bin/python bench/bench_defaults_cost.py --device cpu
"""
import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".build" / "plugins"))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dubai"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=6)
    args = p.parse_args()

    import torch

    from berunda.engine.config import TrainingConfig
    from berunda.engine.progress import PrintReporter
    from berunda.engine.time_estimate import TrainingClock, format_duration
    from berunda.engine.trainer import train

    data = Path(args.data)
    img = lambda n: str(data / "images" / f"{n}.tif")   # noqa: E731
    lab = lambda n: str(data / "labels" / f"{n}.tif")   # noqa: E731
    defaults = TrainingConfig([], [])
    config = TrainingConfig([img(f"scene{s}_part1") for s in range(1, 7)],
                            [lab(f"scene{s}_part1") for s in range(1, 7)],
                            [img(f"scene{s}_part2") for s in range(1, 7)],
                            epochs=1, samples_per_epoch=args.steps * defaults.batch_size,
                            device=args.device)
    class Clock(TrainingClock):   # keep the first steps' rate (the epoch's includes warm-up)
        def _first_estimate(self, measured):
            self.first_rate = self.rate
            super()._first_estimate(measured)

    reporter = PrintReporter()
    clock = Clock(reporter, config, [0])
    with tempfile.TemporaryDirectory() as folder:
        train(config, str(Path(folder) / "m.pt"), reporter, clock=clock)
    steps = -(-defaults.samples_per_epoch // defaults.batch_size)
    tiles = defaults.epochs * steps * defaults.batch_size
    train_s = clock.first_rate * 2 * tiles                    # kmeans: labeled + unlabeled
    compare_s = clock.first_rate * 4 * (tiles + 2 * 2 * tiles)  # 4 runs x (supervised + 2 semi)
    print(f"torch threads {torch.get_num_threads()}, device {args.device}, encoder "
          f"{defaults.encoder}, tile {defaults.tile_size}: {1 / clock.first_rate:.2f} tiles/s")
    print(f"train defaults (kmeans, {2 * tiles} tiles): {format_duration(train_s)}")
    print(f"compare defaults (12 trainings): {format_duration(compare_s)}")


if __name__ == "__main__":
    main()
