"""How long training will take: measured on the first steps, refined every epoch.

The trainer calls ``begin`` once per training, ``step`` after every optimiser
step and ``epoch_done`` after every epoch; nothing else.  One clock may span
several trainings (berunda:compare passes the same clock to each): it knows the
tiles every planned training will process, measures seconds per tile, and
estimates the rest of the work from that.

Scoring validation rasters is estimated from the same rate: a classification
forward pass costs about half a training step per pixel (measured on CPU,
bench/README.md: 0.24 Mpx/s training vs 0.48 Mpx/s classifying, resnet18).
"""
from __future__ import annotations

import time
from typing import List, Optional, Sequence

from .progress import Reporter

WARMUP_STEPS = 1            # the first step pays for allocation and kernel selection
MEASURED_STEPS = 3          # steps timed for the first estimate
LONG_SECONDS = 3 * 3600     # beyond this, say so plainly and suggest what to change
INFERENCE_SPEEDUP = 2.0     # classifying a pixel vs training on it (see above)


def format_duration(seconds: float) -> str:
    seconds = max(float(seconds), 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours = minutes / 60
    if hours < 36:
        return f"{int(hours)} h {int(minutes % 60):02d} min"
    return f"{int(hours // 24)} d {int(hours % 24)} h"


class TrainingClock:
    def __init__(self, reporter: Reporter, config, trainings: Sequence[int],
                 validation_pixels: int = 0):
        """``trainings``: tiles each planned training processes (labeled + unlabeled);
        ``validation_pixels``: pixels scored after each training."""
        self.reporter, self.config = reporter, config
        self.plan: List[int] = list(trainings)
        self.validation_pixels = validation_pixels
        self.index = -1              # the training running now
        self.tiles_done = 0          # in the current training
        self.rate: Optional[float] = None    # seconds per tile
        self.estimated = False
        self.device = "cpu"

    @classmethod
    def for_config(cls, reporter: Reporter, config, semi: bool) -> "TrainingClock":
        """A clock for one training (``begin`` corrects the plan for a resumed run)."""
        steps = -(-config.samples_per_epoch // config.batch_size)
        tiles = config.epochs * steps * config.batch_size * (2 if semi else 1)
        return cls(reporter, config, [tiles], validation_pixels(config.validation_images))

    # --- hooks called by the trainer -------------------------------------------------------

    def begin(self, device, tiles: Optional[int] = None) -> None:
        """A training starts (``tiles``: what it will process, when the plan guessed wrong,
        e.g. a resumed run or a task that turned out not to use unlabeled tiles)."""
        self.index += 1
        if self.index >= len(self.plan):
            self.plan.append(tiles or 0)
        if tiles is not None:
            self.plan[self.index] = tiles
        self.device = getattr(device, "type", str(device))
        self.tiles_done, self.steps, self._epoch_tiles = 0, 0, 0
        self._t0 = self._epoch_t0 = time.perf_counter()
        self._measure_t0 = self._measure_tiles = 0

    def step(self, tiles: int) -> None:
        self.steps += 1
        self.tiles_done += tiles
        now = time.perf_counter()
        if self.steps == WARMUP_STEPS:
            self._measure_t0, self._measure_tiles = now, self.tiles_done
        elif not self.estimated and self.steps == WARMUP_STEPS + MEASURED_STEPS:
            self.rate = (now - self._measure_t0) / (self.tiles_done - self._measure_tiles)
            self._first_estimate(f"{MEASURED_STEPS} steps after a warm-up step took "
                                 f"{now - self._measure_t0:.1f} s")

    def epoch_done(self, epoch: int, epochs: int) -> None:
        now = time.perf_counter()
        if not self.estimated:   # fewer steps per epoch than the first estimate needs
            self.rate = (now - self._t0) / max(self.tiles_done, 1)
            self._first_estimate(f"the first epoch took {now - self._t0:.1f} s")
        else:   # the latest epoch is the best guess for the next ones (incl. checkpoint)
            tiles = self.tiles_done - self._epoch_tiles
            if tiles > 0:
                self.rate = (now - self._epoch_t0) / tiles
        self._epoch_t0, self._epoch_tiles = now, self.tiles_done
        left = self.remaining()
        finish = time.strftime("%H:%M", time.localtime(time.time() + left))
        more = f" (training {self.index + 1}/{len(self.plan)})" if len(self.plan) > 1 else ""
        self.reporter.info(f"Epoch {epoch}/{epochs}{more}: about {format_duration(left)} left "
                           f"(done around {finish}).")
        self.reporter.status(f"Epoch {epoch}/{epochs}{more}: about {format_duration(left)} left")

    # --- estimates ---------------------------------------------------------------------------

    def remaining(self) -> float:
        """Seconds left: this training's remaining tiles, the planned trainings after it,
        and the validation scoring of this and every later training."""
        if self.rate is None:
            return float("nan")
        tiles = max(self.plan[self.index] - self.tiles_done, 0) + sum(self.plan[self.index + 1:])
        scorings = len(self.plan) - self.index if self.validation_pixels else 0
        return self.rate * tiles + scorings * self._scoring_seconds()

    def _scoring_seconds(self) -> float:
        tile_pixels = self.config.tile_size ** 2
        return self.validation_pixels / tile_pixels * self.rate / INFERENCE_SPEEDUP

    def total(self) -> float:
        """Seconds for the whole plan at the measured rate."""
        scorings = len(self.plan) if self.validation_pixels else 0
        return self.rate * sum(self.plan) + scorings * self._scoring_seconds()

    def _first_estimate(self, measured: str) -> None:
        self.estimated = True
        c = self.config
        total = self.total()
        runs = f"{len(self.plan)} trainings" if len(self.plan) > 1 else "the training"
        self.reporter.info(
            f"Time estimate: {measured} ({1 / self.rate:.1f} tiles/s of {c.tile_size} px, "
            f"{c.encoder}, on {self.device}); {runs} will take about {format_duration(total)}"
            f"{' with validation scoring' if self.validation_pixels else ''}.")
        if total > LONG_SECONDS:
            self.reporter.warning(
                f"This will take about {format_duration(total)} on {self.device}. To shorten "
                f"it: {'; '.join(self.suggestions())}.")

    def suggestions(self) -> List[str]:
        c, out = self.config, []
        if self.device == "cpu":
            import torch

            out.append("DEVICE=cuda: a GPU was found" if torch.cuda.is_available() else
                       "run on a computer with a CUDA GPU (this one has none)")
        if c.encoder != "resnet18":
            out.append(f"ENCODER=resnet18 (a lighter network than {c.encoder})")
        if c.tile_size > 128:
            out.append(f"TILE_SIZE=128 (the cost grows with the tile's area: "
                       f"{(c.tile_size / 128) ** 2:.1f}x less per tile)")
        out.append(f"fewer SAMPLES_PER_EPOCH ({c.samples_per_epoch}) or EPOCHS ({c.epochs}): "
                   "the time is proportional to their product")
        if len(self.plan) > 1:
            out.append("fewer RUNS, AUX_TASKS or LAMBDAS (each adds trainings)")
        return out


def validation_pixels(paths: Sequence[str]) -> int:
    from .rasters import describe

    return sum(info.width * info.height for info in map(describe, paths))
