"""berunda:evaluate through processing.run in a real QgsApplication: scores against a
confusion matrix counted by hand, nodata exclusion, class names and colours in the
HTML report, the CSV, polygon ground truth, and a real classified Dubai crop."""
import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from helpers import TINY, crop, image, label, patch_engine

H, W = 30, 40
X0, Y0, RES = 300000.0, 2780000.0, 0.5
TRANSFORM = from_origin(X0, Y0, RES, RES)
NAMES = {1: "roofs", 2: "bare soil", 5: "lagoon"}
COLOURS = {1: (200, 30, 30, 255), 2: (30, 200, 30, 255), 5: (30, 30, 200, 255)}
HEX = {1: "#C81E1E", 2: "#1EC81E", 5: "#1E1EC8"}


def truth_array():
    """Columns 0-15 class 1, 16-31 class 2, 32-39 class 5; rows 0-4 x cols 0-9 nodata (0)."""
    t = np.zeros((H, W), np.uint8)
    t[:, 0:16], t[:, 16:32], t[:, 32:40] = 1, 2, 5
    t[0:5, 0:10] = 0                       # 50 px of truth nodata (all in the class-1 stripe)
    return t


def prediction_array():
    p = truth_array()
    p[0:5, 0:10] = 2                       # under truth nodata: must not count
    p[10:20, 0:6] = 2                      # 60 px: truth 1 -> predicted 2
    p[20:25, 16:20] = 5                    # 20 px: truth 2 -> predicted 5
    p[25:30, 20:24] = 1                    # 20 px: truth 2 -> predicted 1
    p[0:10, 32:35] = 1                     # 30 px: truth 5 -> predicted 1
    p[25:30, 36:40] = 255                  # 20 px of prediction nodata (truth 5): excluded
    p[0:2, 0:4] = 255                      # nodata in both: excluded once
    return p


# Counted by hand from the rectangles above (rows: truth 1, 2, 5; columns: predicted 1, 2, 5).
#   truth 1: 16*30 - 50 nodata = 430 valid, 60 of them predicted 2
#   truth 2: 16*30 = 480, 20 predicted 5 and 20 predicted 1
#   truth 5: 8*30 - 20 prediction nodata = 220, 30 predicted 1
MATRIX = [[370, 60, 0],
          [20, 440, 20],
          [30, 0, 190]]


def hand_scores(m):
    """OA %, mIoU %, kappa and per-class IoU/precision/recall/F1 % from a matrix, by the book."""
    n = len(m)
    total = sum(sum(row) for row in m)
    diag = [m[i][i] for i in range(n)]
    rows = [sum(m[i]) for i in range(n)]
    cols = [sum(m[i][j] for i in range(n)) for j in range(n)]
    oa = sum(diag) / total
    iou = [diag[i] / (rows[i] + cols[i] - diag[i]) for i in range(n)]
    pe = sum(rows[i] * cols[i] for i in range(n)) / total ** 2
    return {"oa": 100 * oa, "miou": 100 * sum(iou) / n, "kappa": (oa - pe) / (1 - pe),
            "iou": [100 * v for v in iou],
            "precision": [100 * diag[i] / cols[i] for i in range(n)],
            "recall": [100 * diag[i] / rows[i] for i in range(n)],
            "f1": [100 * 2 * diag[i] / (rows[i] + cols[i]) for i in range(n)], "pixels": total}


EXPECTED = hand_scores(MATRIX)


def write_raster(path, array, nodata, colours=None, names=None):
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0],
                       count=1, dtype=array.dtype, crs="EPSG:32640", nodata=nodata,
                       transform=TRANSFORM) as dst:
        dst.write(array, 1)
        if colours:
            dst.write_colormap(1, colours)
    if names:
        from osgeo import gdal

        ds = gdal.Open(str(path), gdal.GA_ReadOnly)
        categories = [""] * (max(names) + 1)
        for value, name in names.items():
            categories[value] = name
        ds.GetRasterBand(1).SetCategoryNames(categories)
        ds = None   # writes the .aux.xml
    return str(path)


@pytest.fixture()
def rasters(tmp_path):
    pred = write_raster(tmp_path / "prediction.tif", prediction_array(), 255)
    truth = write_raster(tmp_path / "truth.tif", truth_array(), 0, COLOURS, NAMES)
    return pred, truth


def run_evaluate(params, feedback=None):
    import processing
    from qgis.core import QgsProcessingContext

    return processing.run("berunda:evaluate", params, context=QgsProcessingContext(),
                          feedback=feedback)


def test_hand_counted_matrix_is_independent_of_the_engine():
    """The literal MATRIX agrees with a plain count over the arrays (nodata excluded)."""
    t, p = truth_array(), prediction_array()
    ok = (t != 0) & (p != 255)
    counted = [[int(((t == a) & (p == b) & ok).sum()) for b in (1, 2, 5)] for a in (1, 2, 5)]
    assert counted == MATRIX
    assert EXPECTED["pixels"] == 1130 == int(ok.sum())


def check_scores(result):
    assert result["OVERALL_ACCURACY"] == pytest.approx(EXPECTED["oa"])        # 1000/1130
    assert result["MEAN_IOU"] == pytest.approx(EXPECTED["miou"])
    assert result["KAPPA"] == pytest.approx(EXPECTED["kappa"])
    assert result["OVERALL_ACCURACY"] == pytest.approx(100 * 1000 / 1130)
    assert result["MEAN_IOU"] == pytest.approx(100 * (370 / 480 + 440 / 540 + 190 / 240) / 3)


def read_table(path):
    """The CSV is one rectangular table under one header row (what spreadsheets and
    pandas.read_csv expect): one dict per class."""
    text = Path(path).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows and all(len(r) == len(rows[0]) for r in rows), text
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def matrix_of(rows):
    return [[int(r[f"predicted_{c['value']}"]) for c in rows] for r in rows]


def test_scores_report_and_table_match_the_hand_computed_matrix(qgis_app, rasters, tmp_path):
    pred, truth = rasters
    report, table = tmp_path / "report.html", tmp_path / "scores.csv"
    result = run_evaluate({"PREDICTION": pred, "GROUND_TRUTH": truth,
                           "OUTPUT_REPORT": str(report), "OUTPUT_TABLE": str(table)})
    check_scores(result)
    assert result["OUTPUT_REPORT"] == str(report) and result["OUTPUT_TABLE"] == str(table)

    page = report.read_text(encoding="utf-8")
    for value in (1, 2, 5):
        assert NAMES[value] in page and HEX[value] in page
    assert "Confusion matrix" in page
    for count in (370, 60, 20, 440, 30, 190, 430, 480, 220, 420, 500, 210):
        assert f">{count:,}<" in page
    assert f">{1130:,}<" in page            # pixels compared (nodata of either left out)
    assert f"{EXPECTED['oa']:.2f} %" in page and f"{EXPECTED['miou']:.2f} %" in page
    assert f"{EXPECTED['kappa']:.4f}" in page

    rows = read_table(table)
    for summary in rows:   # the overall scores, on every row
        assert float(summary["overall_accuracy_percent"]) == pytest.approx(EXPECTED["oa"],
                                                                           abs=1e-4)
        assert float(summary["mean_iou_percent"]) == pytest.approx(EXPECTED["miou"], abs=1e-4)
        assert float(summary["kappa"]) == pytest.approx(EXPECTED["kappa"], abs=1e-6)
        assert int(summary["pixels_compared"]) == 1130
    assert [(int(r["value"]), r["name"]) for r in rows] == [(v, NAMES[v]) for v in (1, 2, 5)]
    for key in ("iou", "precision", "recall", "f1"):
        assert [float(r[f"{key}_percent"]) for r in rows] == pytest.approx(EXPECTED[key],
                                                                          abs=1e-4)
    assert matrix_of(rows) == MATRIX


def test_window_by_window_gives_the_same_scores(qgis_app, rasters, tmp_path, monkeypatch):
    """Small windows (several per raster, ragged edges) must add up to the same matrix."""
    patch_engine(monkeypatch, tmp_path / "patch",
                 "import berunda.engine.evaluation as e\ne.WINDOW = 16\n")
    result = run_evaluate({"PREDICTION": rasters[0], "GROUND_TRUTH": rasters[1],
                           "OUTPUT_REPORT": str(tmp_path / "r.html")})
    check_scores(result)


def polygon_truth(path):
    """The truth raster as polygons with an integer field (class 1 is an L around the hole)."""
    from osgeo import ogr, osr

    def xy(col, row):
        return f"{X0 + RES * col} {Y0 - RES * row}"

    def polygon(*corners):
        ring = ",".join(xy(c, r) for c, r in corners + (corners[0],))
        return f"POLYGON(({ring}))"

    features = [(1, polygon((10, 0), (16, 0), (16, 30), (0, 30), (0, 5), (10, 5))),
                (2, polygon((16, 0), (32, 0), (32, 30), (16, 30))),
                (5, polygon((32, 0), (40, 0), (40, 30), (32, 30)))]
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32640)
    layer = ds.CreateLayer("truth", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("cls", ogr.OFTInteger))
    layer.CreateField(ogr.FieldDefn("note", ogr.OFTString))
    for value, wkt in features:
        feat = ogr.Feature(layer.GetLayerDefn())
        feat.SetField("cls", value)
        feat.SetField("note", f"class {value}")
        feat.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feat)
    ds = None
    return str(path)


def test_polygon_ground_truth_gives_the_same_scores(qgis_app, rasters, tmp_path):
    gpkg = polygon_truth(tmp_path / "truth.gpkg")
    table = tmp_path / "poly.csv"
    result = run_evaluate({"PREDICTION": rasters[0], "GROUND_TRUTH_POLYGONS": gpkg,
                           "CLASS_FIELD": "cls", "OUTPUT_REPORT": str(tmp_path / "poly.html"),
                           "OUTPUT_TABLE": str(table)})
    check_scores(result)
    assert matrix_of(read_table(table)) == MATRIX


def test_polygon_layer_object_is_accepted(qgis_app, rasters, tmp_path):
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(polygon_truth(tmp_path / "truth.gpkg"), "truth polygons", "ogr")
    assert layer.isValid()
    result = run_evaluate({"PREDICTION": rasters[0], "GROUND_TRUTH_POLYGONS": layer,
                           "CLASS_FIELD": "cls", "OUTPUT_REPORT": str(tmp_path / "r.html")})
    check_scores(result)


@pytest.mark.parametrize("which", ["both", "neither"])
def test_exactly_one_ground_truth_is_required(qgis_app, rasters, tmp_path, which):
    from qgis.core import QgsProcessingException

    params = {"PREDICTION": rasters[0], "OUTPUT_REPORT": str(tmp_path / "r.html")}
    if which == "both":
        params.update(GROUND_TRUTH=rasters[1],
                      GROUND_TRUTH_POLYGONS=polygon_truth(tmp_path / "t.gpkg"), CLASS_FIELD="cls")
    with pytest.raises(QgsProcessingException, match="exactly one of GROUND_TRUTH"):
        run_evaluate(params)
    assert not (tmp_path / "r.html").exists()


def test_polygons_without_class_field_are_refused(qgis_app, rasters, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="CLASS_FIELD"):
        run_evaluate({"PREDICTION": rasters[0],
                      "GROUND_TRUTH_POLYGONS": polygon_truth(tmp_path / "t.gpkg"),
                      "OUTPUT_REPORT": str(tmp_path / "r.html")})
    assert not (tmp_path / "r.html").exists()


def test_report_may_not_overwrite_an_input(qgis_app, rasters, tmp_path):
    from qgis.core import QgsProcessingException

    pred, truth = rasters
    before = Path(truth).read_bytes()
    with pytest.raises(QgsProcessingException, match="overwrite an input"):
        run_evaluate({"PREDICTION": pred, "GROUND_TRUTH": truth,
                      "OUTPUT_REPORT": str(tmp_path / "r.html"), "OUTPUT_TABLE": truth})
    assert Path(truth).read_bytes() == before
    assert not (tmp_path / "r.html").exists()




def test_real_classified_dubai_crop(qgis_app, tmp_path):
    """train (TINY) -> classify a crop of an unseen scene -> evaluate against its label."""
    import processing
    from qgis.core import QgsProcessingContext

    window = Window(576, 448, 128, 128)   # holds all five classes
    img = crop(image("scene7_part1"), tmp_path / "s7.tif", window)
    truth = crop(label("scene7_part1"), tmp_path / "s7_label.tif", window)
    model = processing.run("berunda:train", dict(
        TINY, LABELED_IMAGES=[image("scene1_part1")], LABELS=[label("scene1_part1")],
        AUX_TASK="none", OUTPUT_MODEL=str(tmp_path / "m.pt")),
        context=QgsProcessingContext())["OUTPUT_MODEL"]
    classified = processing.run("berunda:classify", {
        "INPUT": img, "MODEL": model, "OUTPUT": str(tmp_path / "classified.tif")},
        context=QgsProcessingContext())["OUTPUT"]
    report, table = tmp_path / "eval.html", tmp_path / "eval.csv"
    result = run_evaluate({"PREDICTION": classified, "GROUND_TRUTH": truth,
                           "OUTPUT_REPORT": str(report), "OUTPUT_TABLE": str(table)})
    for key in ("OVERALL_ACCURACY", "MEAN_IOU"):
        assert 0 <= result[key] <= 100
    assert -1 <= result["KAPPA"] <= 1 or math.isnan(result["KAPPA"])
    page = report.read_text(encoding="utf-8")
    for name in ("building", "land", "road", "vegetation", "water"):
        assert name in page
    rows = read_table(table)
    with rasterio.open(truth) as ds:
        t = ds.read(1)
    assert int(rows[0]["pixels_compared"]) == int((t != 0).sum())   # label nodata 0 left out
    # the matrix's rows are the label's pixels per class
    values = [int(r["value"]) for r in rows]
    row_sums = {v: sum(m) for v, m in zip(values, matrix_of(rows))}
    assert row_sums == {v: int((t == v).sum()) for v in values}
    assert float(rows[0]["overall_accuracy_percent"]) == pytest.approx(
        result["OVERALL_ACCURACY"], abs=1e-4)
    assert f"Model: <code>{model}</code>" in page          # the prediction names its model
