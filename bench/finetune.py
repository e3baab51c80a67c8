"""Fine-tuning vs training from scratch on the Dubai data (issue 14), without QGIS.

For each seed:
  parent     trained from random weights on the labels of --parent-scenes (parts --parent-parts)
  scratch    trained from random weights on the labels of --target-scenes (parts --target-parts)
  finetune   INIT_MODEL = the parent, trained on the same target labels, same budget
  finetune+freezeK   the same with FREEZE_ENCODER_EPOCHS = K (for each K of --freeze)
  finetune lr X  (--rows ... finetune_lr) the same as finetune at learning rate X (each of
             --finetune-lrs): a network that already learned wants smaller steps
  scratch x2 (--rows ... scratch_long) random weights, twice the epochs: as many optimiser steps
             as parent + fine-tune together, to separate "more compute" from "transfer"
all supervised (AUX_TASK none), every row scored on the same held-out validation crops
(centred --val-crop px windows of --val-parts of --val-scenes, as bench/paper.py makes them).
Writes <out>/runs.json after every run and prints the table (mean ± std over seeds).

    .venv/bin/python bench/finetune.py --out out/finetune
    .venv/bin/python bench/finetune.py --summarize out/finetune-s0 out/finetune-s1   # merged table
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paper  # noqa: E402  (its split, crops, reporter and machine description)


ROWS = ["parent", "scratch", "finetune", "freeze", "scratch_long", "finetune_lr"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("BERUNDA_DATA",
                                                    str(paper.REPO.parent / "shared" / "data" / "dubai")))
    p.add_argument("--out", default=str(paper.REPO / "out" / "finetune"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--samples", type=int, default=96)
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--parent-scenes", default="1-4")
    p.add_argument("--parent-parts", default="1-9")
    p.add_argument("--target-scenes", default="5-6")
    p.add_argument("--target-parts", default="1")
    p.add_argument("--val-scenes", default="7-8")
    p.add_argument("--val-parts", default="1-9")
    p.add_argument("--val-crop", type=int, default=320)
    p.add_argument("--freeze", type=int, nargs="*", default=[4],
                   help="FREEZE_ENCODER_EPOCHS values tried on top of plain fine-tuning")
    p.add_argument("--finetune-lrs", type=float, nargs="+", default=[1e-4, 3e-4],
                   help="learning rates of the finetune_lr rows")
    p.add_argument("--rows", nargs="+", choices=ROWS, default=ROWS[:4],
                   help="what to train (the parent is trained when a fine-tuning row needs it); "
                        "scratch_long = from scratch for twice the epochs")
    p.add_argument("--summarize", nargs="+", metavar="DIR",
                   help="only print the table of earlier runs (their runs.json), merged")
    p.add_argument("--device", default="cpu", choices=["auto", "cuda", "cpu"])
    return p.parse_args(argv)


def summarize(folders):
    runs, seconds = [], 0.0
    for folder in folders:
        record = json.loads((Path(folder) / "runs.json").read_text())
        runs += record["runs"]
        seconds += sum(r["seconds"] for r in record["runs"])
    rows = list(dict.fromkeys(r["row"] for r in runs))
    print(markdown(rows, runs))
    print(f"\n{len(runs)} trainings, {seconds / 60:.1f} min of training + scoring in all")


def pairs(data, scenes, parts):
    img = lambda s, k: str(Path(data) / "images" / f"scene{s}_part{k}.tif")  # noqa: E731
    lab = lambda s, k: str(Path(data) / "labels" / f"scene{s}_part{k}.tif")  # noqa: E731
    out = [(img(s, k), lab(s, k)) for s in paper.parse_range(scenes) for k in paper.parse_range(parts)]
    for path in [p for pair in out for p in pair]:
        if not os.path.isfile(path):
            raise SystemExit(f"missing {path}; set --data to the dubai folder")
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.summarize:
        return summarize(args.summarize)
    from berunda.engine.config import TrainingConfig
    from berunda.engine.devices import resolve_device
    from berunda.engine.trainer import train

    overlap = set(paper.parse_range(args.val_scenes)) & (
        set(paper.parse_range(args.parent_scenes)) | set(paper.parse_range(args.target_scenes)))
    if overlap:
        raise SystemExit(f"scenes {sorted(overlap)} are both trained on and held out")
    device = resolve_device(args.device)
    out = Path(args.out)
    (out / "validation").mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(exist_ok=True)
    validation = [(paper.centre_crop(i, out / "validation" / f"{Path(i).stem}.tif", args.val_crop),
                   paper.centre_crop(l, out / "validation" / f"{Path(l).stem}_label.tif", args.val_crop))
                  for i, l in pairs(args.data, args.val_scenes, args.val_parts)]
    parent_pairs = pairs(args.data, args.parent_scenes, args.parent_parts)
    target_pairs = pairs(args.data, args.target_scenes, args.target_parts)
    base = TrainingConfig(
        labeled_images=[], labels=[], aux_task="none", encoder=args.encoder, tile_size=args.tile,
        batch_size=args.batch, epochs=args.epochs, samples_per_epoch=args.samples,
        learning_rate=args.lr, device=device.type, supervised_loss="ce",   # as measured
        validation_images=[i for i, _ in validation], validation_labels=[l for _, l in validation])
    parent_data = dict(labeled_images=[i for i, _ in parent_pairs], labels=[l for _, l in parent_pairs])
    target_data = dict(labeled_images=[i for i, _ in target_pairs], labels=[l for _, l in target_pairs])
    wanted = set(args.rows)
    if wanted & {"finetune", "freeze", "finetune_lr"}:
        wanted.add("parent")
    rows = (["parent (scenes %s, no fine-tuning)" % args.parent_scenes] if "parent" in wanted else [])
    rows += ["scratch"] if "scratch" in wanted else []
    rows += ["finetune"] if "finetune" in wanted else []
    rows += [f"finetune + freeze {k}" for k in args.freeze] if "freeze" in wanted else []
    rows += ["scratch x2 epochs"] if "scratch_long" in wanted else []
    rows += [f"finetune lr {lr:g}" for lr in args.finetune_lrs] if "finetune_lr" in wanted else []
    env = paper.machine(device)
    print(f"Fine-tuning bench on {env.get('gpu', env['cpu'])}: parent = scenes {args.parent_scenes} "
          f"parts {args.parent_parts} ({len(parent_pairs)} images), target = scenes "
          f"{args.target_scenes} parts {args.target_parts} ({len(target_pairs)} images), "
          f"validation = {len(validation)} centred {args.val_crop}-px crops of scenes "
          f"{args.val_scenes}; {args.encoder}, tile {args.tile}, batch {args.batch}, "
          f"{args.epochs} epochs × {args.samples} tiles, lr {args.lr:g}, {args.seeds} seeds",
          flush=True)
    runs, start = [], time.perf_counter()
    reporter = paper.ConsoleReporter().reporter

    def run(row, seed, **changes):
        config = dataclasses.replace(base, seed=seed, **changes)
        path = out / "models" / f"{row.split(' (')[0].replace(' ', '_')}_seed{seed}.pt"
        t0 = time.perf_counter()
        print(f"== {row}, seed {seed}", flush=True)
        result = train(config, str(path), reporter)
        os.remove(result.checkpoint_path)
        seconds = time.perf_counter() - t0
        scores = result.validation
        runs.append({"row": row, "seed": seed, "oa": scores["overall_accuracy"],
                     "miou": scores["mean_iou"], "seconds": round(seconds, 1)})
        print(f"   OA {scores['overall_accuracy']:.2f} %, mIoU {scores['mean_iou']:.2f} %, "
              f"{seconds / 60:.1f} min", flush=True)
        (out / "runs.json").write_text(json.dumps({"args": vars(args), "machine": env,
                                                   "runs": runs}, indent=1))
        return str(path)

    for seed in range(args.first_seed, args.first_seed + args.seeds):
        parent = run(rows[0], seed, **parent_data) if "parent" in wanted else None
        if "scratch" in wanted:
            run("scratch", seed, **target_data)
        if "finetune" in wanted:
            run("finetune", seed, init_model=parent, **target_data)
        for k in args.freeze if "freeze" in wanted else []:
            run(f"finetune + freeze {k}", seed, init_model=parent, freeze_encoder_epochs=k,
                **target_data)
        if "scratch_long" in wanted:
            run("scratch x2 epochs", seed, epochs=2 * args.epochs, **target_data)
        for lr in args.finetune_lrs if "finetune_lr" in wanted else []:
            run(f"finetune lr {lr:g}", seed, init_model=parent, learning_rate=lr, **target_data)
        for f in (out / "models").glob(f"*_seed{seed}.pt"):
            f.unlink()
    seconds = time.perf_counter() - start
    table = markdown(rows, runs)
    (out / "runs.json").write_text(json.dumps({"args": vars(args), "machine": env, "runs": runs,
                                               "seconds": round(seconds, 1), "markdown": table},
                                              indent=1))
    print(f"\n{table}\n\n{len(runs)} trainings in {seconds / 60:.1f} min; {out / 'runs.json'}")


def markdown(rows, runs):
    lines = ["| start | runs | OA % | mIoU % | ΔmIoU vs scratch | min per run |",
             "|---|---|---|---|---|---|"]
    scratch = [r["miou"] for r in runs if r["row"] == "scratch"]
    stats = {"scratch": float(np.mean(scratch))} if scratch else {}
    for row in rows:
        done = [r for r in runs if r["row"] == row]
        if not done:
            continue
        miou = np.array([r["miou"] for r in done])
        oa = np.array([r["oa"] for r in done])
        std = lambda a: float(np.std(a, ddof=1)) if len(a) > 1 else 0.0  # noqa: E731
        gain = "–" if row == "scratch" or "scratch" not in stats else f"{miou.mean() - stats['scratch']:+.2f}"
        lines.append(f"| {row} | {len(done)} | {oa.mean():.2f} ± {std(oa):.2f} | "
                     f"{miou.mean():.2f} ± {std(miou):.2f} | {gain} | "
                     f"{np.mean([r['seconds'] for r in done]) / 60:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
