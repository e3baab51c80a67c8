"""Merge the tables of several bench/paper.py runs (one --out folder each) into one
markdown table: mean ± std over every seed found, gain over a baseline row, wall time.

    .venv/bin/python bench/collect.py --baseline supervised \\
        supervised=out/med-sup consistency=out/cons-s0,out/cons-s1,out/cons-s2

Each LABEL=DIR[,DIR...] collects the rows of those folders' table.csv; a folder holding
several (task, λ) rows (a λ sweep) gives one line per row, labelled "LABEL task λ".
``--history KEY`` also prints KEY of the per-epoch history (e.g. confident_share,
lambda), mean over seeds, from each folder's run.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path


def read_rows(folder: Path):
    with open(folder / "table.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            yield row


def collect(groups):
    """{line label: {"oa": [...], "miou": [...], "seconds": [...], "histories": [...]}}"""
    lines = {}
    for label, folders in groups:
        for folder in folders:
            folder = Path(folder)
            if not (folder / "table.csv").exists():
                continue
            rows = list(read_rows(folder))
            record = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
            histories = {(r["task"], str(r["lambda"])): r.get("histories", [])
                         for r in record.get("rows", [])}
            for row in rows:
                key = label if len(rows) == 1 else f"{label} {row['aux']} λ={row['lambda']}"
                line = lines.setdefault(key, {"oa": [], "miou": [], "seconds": [], "histories": []})
                line["oa"] += [float(v) for v in row["seeds_oa"].split()]
                line["miou"] += [float(v) for v in row["seeds_miou"].split()]
                lam = row["lambda"]
                lam_key = lam if lam in ("", "auto") else str(float(lam))
                for (task, lam_r), hist in histories.items():
                    if task == row["aux"] and (lam_r == lam_key or (lam == "" and task == "none")):
                        line["histories"] += hist
                runs = sum(len(r["miou"]) for r in record.get("rows", []))
                if record.get("seconds") and runs:   # the folder's wall time per training
                    line["seconds"].append(record["seconds"] / runs)
    return lines


def mean_std(values):
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def markdown(lines, baseline=None, history_key=None):
    base = mean_std(lines[baseline]["miou"])[0] if baseline in lines else None
    out = ["| run | seeds | OA % | mIoU % | ΔmIoU | mIoU per seed | wall min / run |",
           "|---|---|---|---|---|---|---|"]
    for label, line in lines.items():
        oa, oa_s = mean_std(line["oa"])
        mi, mi_s = mean_std(line["miou"])
        gain = "–" if base is None or label == baseline else f"{mi - base:+.2f}"
        wall = (f"{statistics.mean(line['seconds']) / 60:.1f}" if line["seconds"] else "–")
        out.append(f"| {label} | {len(line['miou'])} | {oa:.2f} ± {oa_s:.2f} | {mi:.2f} ± {mi_s:.2f} "
                   f"| {gain} | {' '.join(f'{v:.2f}' for v in line['miou'])} | {wall} |")
    if history_key:
        out.append("")
        out.append(f"Per-epoch `{history_key}` (mean over seeds):")
        out.append("")
        for label, line in lines.items():
            per_epoch = [[r.get(history_key) for r in h] for h in line["histories"]]
            per_epoch = [v for v in per_epoch if v and all(x is not None for x in v)]
            if per_epoch:
                means = [statistics.mean(col) for col in zip(*per_epoch)]
                out.append(f"- {label}: " + " ".join(f"{v:.3g}" for v in means))
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("groups", nargs="+", metavar="LABEL=DIR[,DIR...]")
    p.add_argument("--baseline", help="label of the row the gains are measured against")
    p.add_argument("--history", help="a per-epoch history key to print (e.g. confident_share)")
    args = p.parse_args(argv)
    groups = []
    for item in args.groups:
        label, _, dirs = item.partition("=")
        groups.append((label, [d for d in dirs.split(",") if d]))
    print(markdown(collect(groups), args.baseline, args.history))


if __name__ == "__main__":
    main()
