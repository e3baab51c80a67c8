"""Draw the λ figure of berunda:compare (mIoU vs λ per task, `auto` as a star, the
supervised mean as a dashed line; the paper's Fig. 3) from the --out folders of
several bench/paper.py runs, one (task, λ, seed) or more per folder:

    .venv/bin/python bench/lambda_plot.py --out bench/lambda_sweep.png \\
        out/med-sup out/sweep-l2-0.1-s0 out/sweep-l2-0.5-s0 out/auto-l2-s0 ...

Rows of the same (task, λ) found in several folders are merged (their seeds pooled),
so a point's error bar is the sample std over every seed found.  ``--tasks l2,kmeans``
keeps only those tasks (the supervised row is always kept).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".build" / "plugins"))

from berunda.engine.comparison_report import lambda_figure  # noqa: E402
from berunda.engine.experiment import ComparisonRow  # noqa: E402
from collect import read_rows as table_rows  # noqa: E402 - bench/collect.py, beside this file


def read_rows(folders, tasks=None):
    """One ComparisonRow per (task, λ) over all folders' table.csv, seeds pooled."""
    rows = {}
    for folder in folders:
        if not (Path(folder) / "table.csv").exists():
            print(f"skipped {folder}: no table.csv (run not finished?)", file=sys.stderr)
            continue
        for line in table_rows(Path(folder)):
            task = line["aux"]
            if tasks and task != "none" and task not in tasks:
                continue
            lam = line["lambda"]
            lam = lam if lam in ("", "auto") else float(lam)
            row = rows.setdefault((task, lam), ComparisonRow(task, lam if lam != "" else 0.0))
            row.oa += [float(v) for v in line["seeds_oa"].split()]
            row.miou += [float(v) for v in line["seeds_miou"].split()]
    return list(rows.values())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="bench/paper.py --out folders")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--tasks", type=lambda text: text.split(","), help="only these tasks: l2,kmeans")
    args = p.parse_args(argv)
    rows = read_rows(args.folders, args.tasks)
    supervised = next((r for r in rows if r.task == "none"), None)
    fig = lambda_figure(rows, supervised)
    if fig is None:
        sys.exit("need at least two λ of one task")
    fig.savefig(args.out)
    for row in sorted(rows, key=lambda r: (r.task, str(r.lam))):
        print(f"{row.task:14s} λ={row.lam!s:6s} seeds {len(row.miou)}  mIoU {row.miou_mean:.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
