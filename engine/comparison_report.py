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
    lam = row.lam if isinstance(row.lam, str) else f"{row.lam:g}"
    return [row.mode, row.task, lam if row.task != "none" else "", len(row.oa),
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
    """The λ figure as base64 PNG, or None."""
    fig = lambda_figure(rows, supervised)
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def lambda_figure(rows, supervised):
    """mIoU vs λ per task (log x axis), like the paper's Fig. 3; None with < 2 λ per task.
    λ = auto is drawn as a star of the task's colour in its own column right of the numbers."""
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
    numbers = [r.lam for r in rows if not isinstance(r.lam, str) and r.task != "none"]
    x_auto = max([max(v, 1e-3) for v in numbers] or [1.0]) * 4
    for task, task_rows in sorted(by_task.items()):
        numeric = sorted((r for r in task_rows if not isinstance(r.lam, str)), key=lambda r: r.lam)
        spread = lambda r: 0.0 if math.isnan(r.miou_std) else r.miou_std  # noqa: E731 - one run
        if numeric:
            line = ax.errorbar([max(r.lam, 1e-3) for r in numeric],
                               [r.miou_mean for r in numeric], yerr=[spread(r) for r in numeric],
                               marker="o", capsize=3, label=task)
            colour = line.lines[0].get_color()
        else:
            colour = ax.plot([], [])[0].get_color()   # the task's colour in the cycle
        for r in (r for r in task_rows if isinstance(r.lam, str)):
            ax.errorbar([x_auto], [r.miou_mean], yerr=[spread(r)], marker="*", markersize=11,
                        capsize=3, color=colour, linestyle="none",
                        label=None if numeric else f"{task} (auto)")
    ax.set_xscale("log")
    ticks = sorted({max(v, 1e-3) for v in numbers})
    labels = [f"{v:g}" for v in ticks]
    if any(isinstance(r.lam, str) for r in rows if r.task != "none"):
        ax.axvline(x_auto / 2, color="0.8", linewidth=0.8)
        ticks, labels = ticks + [x_auto], labels + ["auto"]
    ax.set_xticks(ticks, labels)
    ax.minorticks_off()
    if supervised is not None:
        ax.axhline(supervised.miou_mean, color="k", linestyle="--", label="supervised")
    ax.set_xlabel("λ")
    ax.set_ylabel("mIoU (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
