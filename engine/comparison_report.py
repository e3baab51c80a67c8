"""Table 1 of the paper for the user's data: CSV and a self-contained HTML report
with the λ-sensitivity plot (the paper's Fig. 3) when several λ were tried."""
from __future__ import annotations

import base64
import csv
import html
import io
import math
from typing import List

from .atomic import atomic_output

COLUMNS = ["mode", "aux", "lambda", "runs", "oa_mean", "oa_std", "miou_mean", "miou_std",
           "oa_gain", "miou_gain", "best", "seeds_oa", "seeds_miou"]


def write_comparison_csv(rows: List, supervised, best, path: str) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(_cells(row, supervised, best))


def _spread(std: float) -> str:
    return "n/a" if math.isnan(std) else f"{std:.2f}"   # one run: no spread to report


def _with_spread(mean: str, spread: str) -> str:
    return f"{mean} (spread n/a)" if spread == "n/a" else f"{mean} ± {spread}"


def _cells(row, supervised, best):
    gain = lambda a, b: "" if supervised is None or row is supervised else f"{a - b:+.2f}"  # noqa: E731
    return [row.mode, row.task, f"{row.lam:g}" if row.task != "none" else "", len(row.oa),
            f"{row.oa_mean:.2f}", _spread(row.oa_std), f"{row.miou_mean:.2f}",
            _spread(row.miou_std),
            gain(row.oa_mean, supervised.oa_mean if supervised else 0),
            gain(row.miou_mean, supervised.miou_mean if supervised else 0),
            "yes" if row is best else "",
            " ".join(f"{v:.2f}" for v in row.oa), " ".join(f"{v:.2f}" for v in row.miou)]


def write_comparison_html(rows: List, supervised, best, path: str, title: str,
                          settings: dict) -> None:
    body = [f"<h1>{html.escape(title)}</h1>",
            "<p>OA and mIoU in percent, mean ± std over seeds, on the validation rasters. "
            "The best row (highest mean mIoU) is in bold; gains are over the supervised "
            "baseline.</p>",
            "<table><tr><th>mode</th><th>aux</th><th>λ</th><th>runs</th><th>OA %</th>"
            "<th>mIoU %</th><th>ΔOA</th><th>ΔmIoU</th></tr>"]
    for row in rows:
        c = _cells(row, supervised, best)
        style = ' style="font-weight:bold;background:#eef6ee"' if row is best else ""
        body.append(f"<tr{style}><td>{c[0]}</td><td>{c[1]}</td><td>{c[2] or '–'}</td><td>{c[3]}</td>"
                    f"<td>{_with_spread(c[4], c[5])}</td><td>{_with_spread(c[6], c[7])}</td>"
                    f"<td>{c[8] or '–'}</td>"
                    f"<td>{c[9] or '–'}</td></tr>")
    body.append("</table>")
    plot = _lambda_plot(rows, supervised)
    if plot:
        body.append("<h2>Sensitivity to λ</h2>")
        body.append(f'<img alt="mIoU vs lambda" src="data:image/png;base64,{plot}">')
    body.append("<h2>Settings</h2><table>")
    for key, value in settings.items():
        body.append(f"<tr><td>{html.escape(str(key))}</td><td>{html.escape(str(value))}</td></tr>")
    body.append("</table>")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(title) +
            "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}</style></head><body>"
            + "\n".join(body) + "</body></html>")
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(page)


def _lambda_plot(rows, supervised):
    """mIoU vs λ per task (log x axis), like the paper's Fig. 3; None with < 2 λ per task."""
    by_task = {}
    for row in rows:
        if row.task != "none":
            by_task.setdefault(row.task, []).append(row)
    if not any(len(v) > 1 for v in by_task.values()):
        return None
    # The object-oriented API with its own Agg canvas: no pyplot, so QGIS's (or another
    # plugin's) matplotlib backend is left alone and nothing global is touched from the
    # Processing worker thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for task, task_rows in sorted(by_task.items()):
        task_rows = sorted(task_rows, key=lambda r: r.lam)
        ax.errorbar([max(r.lam, 1e-3) for r in task_rows], [r.miou_mean for r in task_rows],
                    yerr=[0.0 if math.isnan(r.miou_std) else r.miou_std for r in task_rows],
                    marker="o", capsize=3, label=task)
    if supervised is not None:
        ax.axhline(supervised.miou_mean, color="k", linestyle="--", label="supervised")
    ax.set_xscale("log")
    ax.set_xlabel("λ")
    ax.set_ylabel("mIoU (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")
