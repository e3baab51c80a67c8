"""Evaluation reports: a self-contained HTML page (no external files, opens in any
browser or QGIS's results viewer) and a CSV for spreadsheets and pandas (one
table, one header row).  Both are written atomically."""
from __future__ import annotations

import csv
import html
import io
import math

from .atomic import atomic_output
from .evaluation import EvaluationResult

_CSS = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #bbb;padding:3px 8px;text-align:right}
th{background:#eee} td.name,th.name{text-align:left}
.swatch{display:inline-block;width:1em;height:1em;border:1px solid #555;vertical-align:middle}
.summary td{font-size:1.2em}
.diag{font-weight:bold}
.warning{background:#fff3cd;border:1px solid #e0b000;padding:0.5em 1em}
"""


def _pct(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _num(value: float, digits: int = 4) -> str:
    """CSV cell: empty where a score is undefined."""
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _write_text(path: str, text: str) -> str:
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    return path


def evaluation_html(result: EvaluationResult) -> str:
    s, e = result.scores, html.escape
    label = [f'<span class="swatch" style="background:{e(c)}"></span> {e(n)}'
             for n, c in zip(result.names, result.colors)]
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Berunda evaluation"
           f"</title><style>{_CSS}</style></head><body>",
           "<h1>Classification accuracy</h1>",
           f"<p>Classified raster: <code>{e(result.prediction)}</code><br>"
           + (f"Model: <code>{e(result.model)}</code><br>" if result.model else "") +
           f"Ground truth: <code>{e(result.truth)}</code><br>"
           f"Pixels compared: {s.pixels:,} (nodata in either raster excluded)</p>"]
    out += [f"<p class='warning'><b>Warning:</b> {e(w)}</p>" for w in result.warnings]
    out += [
            "<table class='summary'><tr><th>Overall accuracy</th><th>Mean IoU</th>"
            "<th>Cohen's kappa</th></tr>",
            f"<tr><td>{_pct(s.overall_accuracy)} %</td><td>{_pct(s.mean_iou)} %</td>"
            f"<td>{_pct(s.kappa, 4)}</td></tr></table>",
            "<p>Mean IoU averages the classes present in the ground truth or the prediction."
            "</p>",
            "<h2>Per class</h2><table><tr><th class='name'>Class</th><th>Value</th>"
            "<th>Truth pixels</th><th>Predicted pixels</th><th>IoU %</th><th>Precision %</th>"
            "<th>Recall %</th><th>F1 %</th></tr>"]
    for i, v in enumerate(result.values):
        out.append(f"<tr><td class='name'>{label[i]}</td><td>{v}</td>"
                   f"<td>{s.truth_pixels[i]:,}</td><td>{s.predicted_pixels[i]:,}</td>"
                   f"<td>{_pct(s.iou[i])}</td><td>{_pct(s.precision[i])}</td>"
                   f"<td>{_pct(s.recall[i])}</td><td>{_pct(s.f1[i])}</td></tr>")
    out.append("</table><h2>Confusion matrix</h2><p>Rows: ground truth; columns: "
               "prediction; cells shaded by the share of the row.</p><table><tr>"
               "<th class='name'>truth \\ prediction</th>")
    out += [f"<th>{lab}</th>" for lab in label]
    out.append("<th>Total</th></tr>")
    for i in range(len(result.values)):
        row = result.matrix[i]
        total = int(row.sum())
        out.append(f"<tr><th class='name'>{label[i]}</th>")
        for j, n in enumerate(row):
            share = n / total if total else 0.0
            style = f"background:rgba(31,119,180,{0.6 * share:.3f})"
            cls = " class='diag'" if i == j else ""
            out.append(f"<td{cls} style='{style}'>{int(n):,}</td>")
        out.append(f"<td>{total:,}</td></tr>")
    out.append("<tr><th class='name'>Total</th>")
    out += [f"<td>{int(n):,}</td>" for n in result.matrix.sum(axis=0)]
    out.append(f"<td>{int(result.matrix.sum()):,}</td></tr></table></body></html>\n")
    return "\n".join(out)


def write_evaluation_html(result: EvaluationResult, path: str) -> str:
    return _write_text(path, evaluation_html(result))


def evaluation_csv(result: EvaluationResult) -> str:
    """One tidy table, one row per class: its scores, its row of the confusion matrix
    (``predicted_<value>``: pixels of this ground-truth class classified as <value>) and
    the overall scores (the same on every row), e.g. ``pandas.read_csv(path)``."""
    s = result.scores
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["value", "name", "truth_pixels", "predicted_pixels", "iou_percent",
                "precision_percent", "recall_percent", "f1_percent"]
               + [f"predicted_{v}" for v in result.values]
               + ["overall_accuracy_percent", "mean_iou_percent", "kappa", "pixels_compared"])
    overall = [_num(s.overall_accuracy), _num(s.mean_iou), _num(s.kappa, 6), s.pixels]
    for i, v in enumerate(result.values):
        w.writerow([v, result.names[i], int(s.truth_pixels[i]), int(s.predicted_pixels[i]),
                    _num(s.iou[i]), _num(s.precision[i]), _num(s.recall[i]), _num(s.f1[i])]
                   + [int(n) for n in result.matrix[i]] + overall)
    return buf.getvalue()


def write_evaluation_csv(result: EvaluationResult, path: str) -> str:
    return _write_text(path, evaluation_csv(result))
