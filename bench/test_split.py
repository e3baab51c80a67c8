"""Score kept models on the **test split** -- once, after every choice was made on the tuning split.

bench/paper.py chooses on its validation rasters (the tuning split: scenes 7-8); with
--keep-models it leaves every trained model in <out>/models.  This script classifies the
test scenes (by default all nine parts of scene 6, which is neither trained on -- paper.py
--train-scenes 1-5 -- nor chosen on) with each of them and writes, per run folder, the
supervised and semi-supervised rows with their per-seed mIoU and the gain paired by seed:

    .venv/bin/python bench/test_split.py out/p28/few-lite0-imagenet out/p28/few-lite0-random \
        safe=out/p28/few-lite0-imagenet-safe+out/p28/few-lite0-imagenet-safe-s2 \
        --baseline safe=out/p28/few-lite0-imagenet --out out/p28/test

A run is a folder, or NAME=FOLDER+FOLDER… (seeds trained in several folders, one row);
--baseline NAME=FOLDER pairs a run without its own supervised row with FOLDER's.

<out>/scores.json holds every model's full scores (per-class IoU included); the markdown
table is printed and written to <out>/table.md.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from paper import parse_range  # noqa: E402  (also links .build/plugins/berunda)

NAME = re.compile(r"^(?P<task>\w+?)_lambda(?P<lam>[^_]+)_seed(?P<seed>\d+)\.pt$")


def test_rasters(data: Path, scenes: str, parts: str):
    pairs = [(data / "images" / f"scene{s}_part{k}.tif", data / "labels" / f"scene{s}_part{k}.tif")
             for s in parse_range(scenes) for k in parse_range(parts)]
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise SystemExit(f"missing {missing[0]}; set --data to the dubai folder")
    return [str(i) for i, _ in pairs], [str(l) for _, l in pairs]


def trained_scenes(run: Path):
    record = run / "run.json"
    if not record.is_file():
        return set()
    split = json.loads(record.read_text()).get("split", {})
    names = split.get("labeled", []) + split.get("unlabeled", []) + split.get("validation", [])
    return {int(m.group(1)) for n in names for m in [re.match(r"scene(\d+)_", n)] if m}


def spread(values):
    mean = statistics.fmean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="bench/paper.py --out folders run with --keep-models "
                   "(or NAME=FOLDER+FOLDER…)")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=FOLDER",
                   help="the supervised rows of run NAME come from FOLDER")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dubai"))
    p.add_argument("--scenes", default="6")
    p.add_argument("--parts", default="1-9")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from berunda.engine.progress import Reporter
    from berunda.engine.validation import score_model

    images, labels = test_rasters(Path(args.data), args.scenes, args.parts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "scores.json"
    scores = json.loads(saved.read_text()) if saved.is_file() else {}
    lines = ["| run | row | mIoU per seed | mIoU % | Δ paired by seed (mean; per seed) | OA % |",
             "|---|---|---|---|---|---|"]
    def rows_of(folders):
        rows = {}
        for run in folders:
            overlap = trained_scenes(run) & set(parse_range(args.scenes))
            if overlap:
                raise SystemExit(f"{run} trained or chose on scene(s) {sorted(overlap)}: "
                                 "not a test split")
            for model in sorted((run / "models").glob("*.pt")):
                m = NAME.match(model.name)
                if not m:
                    continue
                key = f"{run.name}/{model.name}"
                if key not in scores:   # scored once; a rerun only adds new models
                    with tempfile.TemporaryDirectory() as scratch:
                        scores[key] = score_model(str(model), images, labels, scratch,
                                                  Reporter(), args.device)
                    saved.write_text(json.dumps(scores, indent=1))
                    print(f"{key}: mIoU {scores[key]['mean_iou']:.2f} %", flush=True)
                rows.setdefault((m["task"], m["lam"]), {})[int(m["seed"])] = scores[key]
        return rows

    def folders(text):
        name, _, paths = text.rpartition("=")
        paths = [Path(f) for f in paths.split("+")]
        return name or paths[0].name, paths

    baselines = dict(folders(b) for b in args.baseline)
    for name, group in map(folders, args.runs):
        rows = rows_of(group)
        base = rows.get(("none", "0")) or rows_of(baselines.get(name, [])).get(("none", "0"), {})
        for (task, lam), by_seed in sorted(rows.items(), key=lambda kv: kv[0][0] != "none"):
            seeds = sorted(by_seed)
            miou = [by_seed[s]["mean_iou"] for s in seeds]
            oa = [by_seed[s]["overall_accuracy"] for s in seeds]
            paired = [by_seed[s]["mean_iou"] - base[s]["mean_iou"] for s in seeds if s in base]
            gain = ("–" if task == "none" or not paired else
                    f"{statistics.fmean(paired):+.2f}; " + " ".join(f"{d:+.2f}" for d in paired))
            label = "supervised" if task == "none" else f"{task} λ {lam}"
            lines.append(f"| {name} | {label} | {' '.join(f'{v:.2f}' for v in miou)} | "
                         f"{spread(miou)} | {gain} | {spread(oa)} |")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(f"\nTest split: scene(s) {args.scenes}, parts {args.parts} ({len(images)} rasters)\n\n{table}")


if __name__ == "__main__":
    main()
