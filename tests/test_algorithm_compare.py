"""berunda:compare through processing.run in a real QgsApplication, on real Dubai
imagery with tiny budgets: Table 1 (one row per (task, λ), mean ± std over seeds,
best row, gains), the λ plot, progress over the whole grid, cancel keeping the
finished rows, and the kept models.  The expensive runs are module-scoped."""
import base64
import csv
import re
import statistics
from pathlib import Path

import pytest
from rasterio.windows import Window

from helpers import TINY, crop, image, label, recording_feedback

TASKS = ["l1", "kmeans", "inpainting"]
PAPER_LAMBDA = {"l1": 0.5, "kmeans": 1.0, "inpainting": 5.0}
RUNS = 2




@pytest.fixture(scope="module")
def validation(tmp_path_factory):
    """A 128x128 window of scene 7 (unseen in training) holding all five classes."""
    folder = tmp_path_factory.mktemp("validation")
    window = Window(576, 448, 128, 128)
    return ([crop(image("scene7_part1"), folder / "s7.tif", window)],
            [crop(label("scene7_part1"), folder / "s7_label.tif", window)])


def base_params(validation, folder, **extra):
    return dict(TINY, LABELED_IMAGES=[image("scene1_part1")], LABELS=[label("scene1_part1")],
                UNLABELED_IMAGES=[image("scene2_part1")], VALIDATION_IMAGES=validation[0],
                VALIDATION_LABELS=validation[1], OUTPUT_TABLE=str(folder / "table.csv"),
                OUTPUT_REPORT=str(folder / "report.html"), **extra)


def recording_compare_feedback(cancel_after=None):
    """recording_feedback that also counts the scored runs ("OA …" lines), notes the
    progress at each score, and cancels itself once ``cancel_after`` runs are scored."""
    def on_info(feedback, line):
        if line.strip().startswith("OA "):
            feedback.scored += 1
            feedback.progress_at_scores.append(feedback.progress())
            if cancel_after is not None and feedback.scored >= cancel_after:
                feedback.cancel()

    feedback = recording_feedback(on_info)
    feedback.scored, feedback.progress_at_scores = 0, []
    return feedback


def run_compare(params, feedback=None):
    import processing
    from qgis.core import QgsProcessingContext

    return processing.run("berunda:compare", params, context=QgsProcessingContext(),
                          feedback=feedback)


def read_table(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def grid_run(qgis_app, validation, tmp_path_factory):
    """Supervised + 3 tasks at their paper λ, 2 seeds each, models kept."""
    folder = tmp_path_factory.mktemp("compare")
    feedback = recording_compare_feedback()
    params = base_params(validation, folder, AUX_TASKS=TASKS, RUNS=RUNS,
                         OUTPUT_FOLDER=str(folder / "models"))
    result = run_compare(params, feedback)
    return result, folder, feedback


def test_table_has_one_row_per_task_with_mean_and_std_over_seeds(grid_run):
    result, folder, _ = grid_run
    assert result["OUTPUT_TABLE"] == str(folder / "table.csv")
    rows = read_table(result["OUTPUT_TABLE"])
    assert [(r["mode"], r["aux"]) for r in rows] == [("supervised", "none")] + [
        ("semi", t) for t in TASKS]
    assert rows[0]["lambda"] == ""
    assert [float(r["lambda"]) for r in rows[1:]] == [PAPER_LAMBDA[t] for t in TASKS]
    for row in rows:
        assert int(row["runs"]) == RUNS
        for metric in ("oa", "miou"):
            seeds = [float(v) for v in row[f"seeds_{metric}"].split()]
            assert len(seeds) == RUNS
            assert all(0 <= v <= 100 for v in seeds)
            # per-seed values are printed to 2 decimals: allow for that rounding
            assert float(row[f"{metric}_mean"]) == pytest.approx(statistics.mean(seeds), abs=0.011)
            assert float(row[f"{metric}_std"]) == pytest.approx(statistics.stdev(seeds), abs=0.011)


def test_exactly_one_best_row_and_gains_over_supervised(grid_run):
    result, _, _ = grid_run
    rows = read_table(result["OUTPUT_TABLE"])
    best = [r for r in rows if r["best"] == "yes"]
    assert len(best) == 1
    assert all(r["best"] == "" for r in rows if r is not best[0])
    assert float(best[0]["miou_mean"]) == max(float(r["miou_mean"]) for r in rows)
    supervised = rows[0]
    assert supervised["oa_gain"] == supervised["miou_gain"] == ""
    for row in rows[1:]:
        for metric in ("oa", "miou"):
            gain = float(row[f"{metric}_mean"]) - float(supervised[f"{metric}_mean"])
            assert float(row[f"{metric}_gain"]) == pytest.approx(gain, abs=0.011)
    # the numeric outputs name the same rows
    label = "supervised" if best[0]["aux"] == "none" else f"{best[0]['aux']} λ={best[0]['lambda']}"
    assert result["BEST"] == label
    assert result["BEST_MEAN_IOU"] == pytest.approx(float(best[0]["miou_mean"]), abs=0.006)
    assert result["SUPERVISED_MEAN_IOU"] == pytest.approx(float(supervised["miou_mean"]), abs=0.006)


def test_html_report_shows_the_table_without_plot_for_single_lambdas(grid_run):
    result, folder, _ = grid_run
    page = Path(result["OUTPUT_REPORT"]).read_text(encoding="utf-8")
    assert result["OUTPUT_REPORT"] == str(folder / "report.html")
    for row in read_table(result["OUTPUT_TABLE"]):
        assert f"{row['miou_mean']} ± {row['miou_std']}" in page
        assert f"{row['oa_mean']} ± {row['oa_std']}" in page
    for task in TASKS:
        assert f"<td>{task}</td>" in page
    assert page.count("font-weight:bold") == 1           # the best row
    assert "data:image/png" not in page                   # one λ per task: no λ plot
    assert "s7.tif" in page                               # settings name the validation image


def test_settings_list_the_parameters_the_user_set_and_only_those(grid_run):
    result, _, _ = grid_run
    page = Path(result["OUTPUT_REPORT"]).read_text(encoding="utf-8")
    settings = dict(re.findall(r"<tr><td>([A-Z_]+)</td><td>([^<]*)</td></tr>", page))
    assert settings["ENCODER"] == "resnet18" and settings["TILE_SIZE"] == "64"
    assert settings["RUNS"] == "2" and settings["SEED"] == "0..1"
    assert settings["MASK_SIZE"] == "16" and settings["CLUSTERS"] == "4"   # tasks compared
    assert "PERMUTATIONS" not in settings                 # jigsaw is not compared
    for internal in ("amp", "max_invalid_fraction", "encoder_weights", "labels"):
        assert f"<td>{internal}</td>" not in page         # no algorithm exposes them


def test_output_folder_keeps_every_model(grid_run):
    from berunda.engine.model_file import load_model

    result, folder, _ = grid_run
    assert result["OUTPUT_FOLDER"] == str(folder / "models")
    models = sorted(p.name for p in (folder / "models").iterdir())
    expected = sorted(f"{task}_lambda{lam:g}_seed{seed}.pt"
                      for task, lam in [("none", 0.0)] + [(t, PAPER_LAMBDA[t]) for t in TASKS]
                      for seed in range(RUNS))
    assert models == expected        # RUNS x rows models; no checkpoints, no leftovers
    meta = load_model(str(folder / "models" / "kmeans_lambda1_seed1.pt")).metadata
    assert meta["task"]["id"] == "kmeans" and meta["task"]["lambda"] == 1.0
    assert meta["training"]["seed"] == 1
    assert meta["training"]["config"]["epochs"] == TINY["EPOCHS"]


def test_progress_covers_the_whole_grid(grid_run):
    _, _, feedback = grid_run
    values = feedback.progress_values
    assert values and max(values) == pytest.approx(100, abs=0.5)
    assert all(b >= a - 1e-6 for a, b in zip(values, values[1:])), "progress went backwards"
    # one "== label, seed s (i/N)" line per training, N = rows x runs
    steps = [line for line in feedback.infos if line.startswith("== ")]
    total = (len(TASKS) + 1) * RUNS
    assert len(steps) == total and steps[-1].endswith(f"({total}/{total})")
    # run i (training + scoring) fills the i-th of N equal shares of the bar
    assert len(feedback.progress_at_scores) == total
    for i, p in enumerate(feedback.progress_at_scores):
        assert 100 * i / total < p <= 100 * (i + 1) / total + 1e-6


def test_the_first_steps_estimate_the_whole_grid_and_each_epoch_has_an_eta(grid_run):
    _, _, feedback = grid_run
    total = (len(TASKS) + 1) * RUNS
    estimates = [line for line in feedback.infos if line.startswith("Time estimate")]
    assert len(estimates) == 1 and f"{total} trainings will take about" in estimates[0]
    assert "with validation scoring" in estimates[0]
    etas = [line for line in feedback.infos if line.startswith("Epoch 1/1 (training ")]
    assert len(etas) == total and etas[-1].startswith(f"Epoch 1/1 (training {total}/{total}): "
                                                      "about ")
    assert len(feedback.texts) == total and all("left" in t for t in feedback.texts)


def test_several_lambdas_embed_the_sensitivity_plot(qgis_app, validation, tmp_path):
    result = run_compare(base_params(validation, tmp_path, AUX_TASKS=["l2"],
                                     LAMBDAS="0.5, 2, auto", RUNS=1))
    rows = read_table(result["OUTPUT_TABLE"])
    assert [(r["aux"], r["lambda"], r["runs"]) for r in rows] == [
        ("none", "", "1"), ("l2", "0.5", "1"), ("l2", "2", "1"), ("l2", "auto", "1")]
    assert [(r["oa_std"], r["miou_std"]) for r in rows] == [("n/a", "n/a")] * 4   # one run
    page = Path(result["OUTPUT_REPORT"]).read_text(encoding="utf-8")
    assert page.count("(spread n/a)") == 8          # OA and mIoU of each of the 4 rows
    assert "± 0.00" not in page, page[page.find("± 0.00") - 300:page.find("± 0.00") + 50]
    assert "Sensitivity to λ" in page
    found = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert found, "no embedded PNG"
    assert base64.b64decode(found.group(1)).startswith(b"\x89PNG\r\n\x1a\n")
    assert not result["OUTPUT_FOLDER"]                    # models not kept unless asked
    assert not list(tmp_path.glob("*.pt"))


def test_lambda_plot_draws_auto_as_its_own_column():
    from berunda.engine.comparison_report import lambda_figure
    from berunda.engine.experiment import ComparisonRow

    sup = ComparisonRow("none", 0.0, [50.0], [20.0])
    rows = [sup, ComparisonRow("l2", 0.5, [51.0], [21.0]), ComparisonRow("l2", 5.0, [49.0], [19.0]),
            ComparisonRow("l2", "auto", [52.0, 54.0], [22.0, 24.0]),
            ComparisonRow("kmeans", "auto", [53.0], [25.0]), ComparisonRow("kmeans", 1.0, [52.0], [23.0])]
    ax = lambda_figure(rows, sup).axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["0.5", "1", "5", "auto"]
    x_auto = ax.get_xticks()[-1]
    stars = [(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax.get_lines()
             if line.get_marker() == "*"]
    assert sorted(stars) == [((x_auto,), (23.0,)), ((x_auto,), (25.0,))]   # l2 mean, kmeans
    assert lambda_figure(rows[:2] + rows[3:4], sup) is not None   # one number + auto: a plot
    assert lambda_figure(rows[:2], sup) is None                    # one λ per task: none


def test_cancel_after_the_first_run_keeps_the_finished_rows(qgis_app, validation, tmp_path):
    from qgis.core import QgsProcessingException

    feedback = recording_compare_feedback(cancel_after=1)
    params = base_params(validation, tmp_path, AUX_TASKS=["l1", "kmeans"], RUNS=2)
    with pytest.raises(QgsProcessingException, match="keeps the finished runs"):
        run_compare(params, feedback)
    assert feedback.scored == 1
    rows = read_table(tmp_path / "table.csv")
    assert len(rows) == 1
    assert (rows[0]["aux"], rows[0]["runs"]) == ("none", "1")   # seed-major: supervised first
    assert 0 <= float(rows[0]["miou_mean"]) <= 100
    assert rows[0]["best"] == "yes"
    assert (tmp_path / "report.html").exists()
    # cancelled before a second training finished: fewer than 2 of the 6 steps started
    assert len([line for line in feedback.infos if line.startswith("== ")]) == 2


@pytest.mark.parametrize("text, message", [("0.5, abc", "not a number"), ("1, -2", "negative")])
def test_bad_lambdas_are_refused_before_training(qgis_app, validation, tmp_path, text, message):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match=message):
        run_compare(base_params(validation, tmp_path, AUX_TASKS=["kmeans"], LAMBDAS=text, RUNS=1))
    assert not (tmp_path / "table.csv").exists()


def test_validation_lists_of_different_length_are_refused(qgis_app, validation, tmp_path):
    from qgis.core import QgsProcessingException

    params = base_params(validation, tmp_path, AUX_TASKS=["kmeans"], RUNS=1)
    params["VALIDATION_LABELS"] = validation[1] * 2
    with pytest.raises(QgsProcessingException, match="same length"):
        run_compare(params)
    assert not (tmp_path / "table.csv").exists()
