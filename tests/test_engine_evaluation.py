"""Evaluation against hand-computed confusion matrices; nodata exclusion, grid
checks, class names and colours, HTML and CSV reports."""
import csv
import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from berunda.engine.errors import RasterError
from berunda.engine.evaluation import evaluate_rasters
from berunda.engine.metrics import PairCounter, compute_scores, confusion_matrix
from berunda.engine.report import evaluation_csv, write_evaluation_csv, write_evaluation_html

TRUTH = np.array([[1, 1, 2, 2, 0],
                  [1, 1, 2, 3, 3],
                  [3, 3, 2, 2, 1],
                  [0, 1, 1, 3, 3]], np.uint8)           # 0 = nodata
PRED = np.array([[1, 2, 2, 2, 1],
                 [1, 1, 3, 3, 3],
                 [3, 1, 2, 255, 1],
                 [2, 1, 1, 3, 2]], np.uint8)            # 255 = nodata
# Counted by hand over the 17 pixels valid in both (rows truth 1..3, columns prediction 1..3).
EXPECTED = np.array([[6, 1, 0],
                     [0, 3, 1],
                     [1, 1, 4]])


def write(path, array, nodata=None, transform=None, dtype=None):
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0],
                       count=1, dtype=dtype or array.dtype, crs="EPSG:32640", nodata=nodata,
                       transform=transform or from_origin(300000, 2780000, 0.5, 0.5)) as dst:
        dst.write(array.astype(dtype or array.dtype), 1)
    return str(path)


@pytest.fixture()
def pair(tmp_path):
    return write(tmp_path / "pred.tif", PRED, 255), write(tmp_path / "truth.tif", TRUTH, 0)


def test_hand_computed_confusion_and_scores(pair):
    result = evaluate_rasters(*pair)
    assert result.values == [1, 2, 3]
    np.testing.assert_array_equal(result.matrix, EXPECTED)
    s = result.scores
    assert s.pixels == 17 == result.pixels
    assert s.overall_accuracy == pytest.approx(100 * 13 / 17)
    assert list(s.iou) == pytest.approx([100 * 6 / 8, 100 * 3 / 6, 100 * 4 / 7])
    assert s.mean_iou == pytest.approx(100 * (6 / 8 + 3 / 6 + 4 / 7) / 3)
    assert s.kappa == pytest.approx(122 / 190)          # (13/17 - 99/289) / (1 - 99/289)
    assert list(s.precision) == pytest.approx([100 * 6 / 7, 100 * 3 / 5, 100 * 4 / 5])
    assert list(s.recall) == pytest.approx([100 * 6 / 7, 100 * 3 / 4, 100 * 4 / 6])
    assert s.f1[1] == pytest.approx(100 * 2 * 3 / (4 + 5))
    assert result.names == ["class 1", "class 2", "class 3"]   # nothing declares names


def test_model_classes_name_the_rows_and_absent_classes_do_not_count(pair):
    classes = {"values": [1, 2, 3, 4], "names": ["building", "land", "road", "water"],
               "colors": ["#3c1098", "#8429F6", "#6EC1E4", "#E2A929"], "nodata": 3}
    result = evaluate_rasters(*pair, classes=classes)
    assert result.names == ["building", "land", "road", "water"]
    assert result.colors[0] == "#3C1098"
    # truth value 3 is the model's label nodata here: those pixels leave the matrix
    np.testing.assert_array_equal(result.matrix[:2, :3], EXPECTED[:2])
    assert result.matrix[2:].sum() == 0
    assert not result.scores.present[3] and np.isnan(result.scores.iou[3])
    present = result.scores.iou[result.scores.present]
    assert result.scores.mean_iou == pytest.approx(present.mean())


def test_names_and_colours_come_from_the_truth_raster(data_dir):
    label = str(data_dir / "labels" / "scene1_part1.tif")
    result = evaluate_rasters(label, label)
    assert result.values == [1, 2, 3, 4, 5]
    assert result.names == ["building", "land", "road", "vegetation", "water"]
    assert result.colors == ["#3C1098", "#8429F6", "#6EC1E4", "#FEDD3A", "#E2A929"]
    assert result.scores.overall_accuracy == 100.0 and result.scores.kappa == pytest.approx(1.0)
    with rasterio.open(label) as ds:
        assert result.pixels == int((ds.read(1) != 0).sum())   # 0 = unlabeled, excluded


def test_mismatched_grids_are_refused(tmp_path, pair):
    shifted = write(tmp_path / "shifted.tif", PRED, 255,
                    transform=from_origin(300010, 2780000, 0.5, 0.5))
    with pytest.raises(RasterError, match=r"shifted\.tif.*truth\.tif"):
        evaluate_rasters(shifted, pair[1])
    small = write(tmp_path / "small.tif", PRED[:3], 255)
    with pytest.raises(RasterError, match="small.tif"):
        evaluate_rasters(small, pair[1])


def test_values_outside_a_small_range_and_fractions(tmp_path):
    truth = np.array([[1000, 70000], [70000, -5]], np.int32)
    pred = np.array([[1000, 1000], [70000, -5]], np.int32)
    result = evaluate_rasters(write(tmp_path / "p.tif", pred), write(tmp_path / "t.tif", truth))
    assert result.values == [-5, 1000, 70000]
    np.testing.assert_array_equal(result.matrix, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    probs = write(tmp_path / "probs.tif", np.array([[0.2, 0.9], [1.0, 0.5]]), dtype="float32")
    with pytest.raises(RasterError, match="fractional"):
        evaluate_rasters(probs, str(tmp_path / "t.tif"))


def test_reports(tmp_path, pair):
    result = evaluate_rasters(*pair, classes={"values": [1, 2, 3], "names": ["a&b", "land", "r"],
                                              "colors": ["#FF0000", "#00FF00", "#0000FF"]})
    html_path, csv_path = str(tmp_path / "report.html"), str(tmp_path / "report.csv")
    write_evaluation_html(result, html_path)
    write_evaluation_csv(result, csv_path)
    page = open(html_path, encoding="utf-8").read()
    assert "76.47 %" in page and "a&amp;b" in page and "background:#FF0000" in page
    assert "<script" not in page and "http" not in page          # self-contained
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))   # one table, one header
    assert all(float(r["overall_accuracy_percent"]) == pytest.approx(100 * 13 / 17) for r in rows)
    assert [rows[0][k] for k in ("value", "name", "truth_pixels", "predicted_pixels")] == [
        "1", "a&b", "7", "7"]
    assert [[int(r[f"predicted_{v}"]) for v in (1, 2, 3)] for r in rows] == EXPECTED.tolist()
    assert evaluation_csv(result) == open(csv_path, encoding="utf-8").read()
    assert sorted(os.listdir(tmp_path)) == ["pred.tif", "report.csv", "report.html", "truth.tif"]


def test_prediction_and_truth_without_a_common_class_are_called_out(tmp_path):
    from berunda.engine.progress import Reporter

    class Log(Reporter):
        warnings = []

        def warning(self, message):
            self.warnings.append(message)

    recoded = write(tmp_path / "truth10.tif", TRUTH * 10, 0)   # labels recoded 1..3 -> 10..30
    pred = write(tmp_path / "pred.tif", PRED, 255)
    log = Log()
    result = evaluate_rasters(pred, recoded, reporter=log)
    assert result.scores.overall_accuracy == 0
    assert len(log.warnings) == 1 and log.warnings == result.warnings
    assert "share no class value" in log.warnings[0] and "10, 20, 30" in log.warnings[0]
    assert "recoded" in log.warnings[0]
    write_evaluation_html(result, str(tmp_path / "r.html"))
    assert "share no class value" in open(tmp_path / "r.html", encoding="utf-8").read()
    assert evaluate_rasters(*[pred, write(tmp_path / "t.tif", TRUTH, 0)]).warnings == []


def test_the_report_names_the_model_recorded_in_the_prediction(tmp_path, pair):
    with rasterio.open(pair[0], "r+") as ds:
        ds.update_tags(BERUNDA_MODEL="/models/dubai.pt")
    result = evaluate_rasters(*pair)
    assert result.model == "/models/dubai.pt"
    write_evaluation_html(result, str(tmp_path / "r.html"))
    assert "Model: <code>/models/dubai.pt</code>" in open(tmp_path / "r.html").read()


def test_confusion_matrix_and_scores_directly():
    m = confusion_matrix(np.array([0, 0, 1, 2, -100]), np.array([0, 1, 1, 2, 0]), 4)
    np.testing.assert_array_equal(m, [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    s = compute_scores(m)
    assert s.overall_accuracy == pytest.approx(75.0)
    assert np.isnan(s.iou[3]) and not s.present[3]
    assert s.mean_iou == pytest.approx(100 * (1 / 2 + 1 / 2 + 1) / 3)
    assert s.to_dict()["iou"][3] is None
    one_class = compute_scores(np.array([[5, 0], [0, 0]]))
    assert one_class.overall_accuracy == 100.0 and np.isnan(one_class.kappa)
    counter = PairCounter()
    counter.update(np.array([3, 3, 7]), np.array([3, 7, 7]))
    counter.update(np.array([7]), np.array([3]))
    np.testing.assert_array_equal(counter.matrix([3, 7]), [[1, 1], [1, 1]])
