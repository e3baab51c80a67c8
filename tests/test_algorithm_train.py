"""berunda:train inside a real QgsApplication (as the Toolbox and the modeler run it)."""
import pytest

from helpers import TINY, image, label


def run_train(params, feedback=None):
    import processing
    from qgis.core import QgsProcessingContext

    return processing.run("berunda:train", params, context=QgsProcessingContext(), feedback=feedback)


def test_train_with_default_lambda_and_layers(qgis_app, tmp_path):
    from qgis.core import QgsRasterLayer

    from berunda.engine.model_file import load_model

    layer = QgsRasterLayer(image("scene1_part1"), "scene1 image")
    assert layer.isValid()
    result = run_train(dict(TINY, LABELED_IMAGES=[layer], LABELS=[label("scene1_part1")],
                            UNLABELED_IMAGES=[image("scene2_part1")], AUX_TASK="mumford_shah",
                            OUTPUT_MODEL=str(tmp_path / "ms.pt")))
    meta = load_model(result["OUTPUT_MODEL"]).metadata
    assert meta["task"] == {"id": "mumford_shah", "params": meta["task"]["params"],
                            "lambda": "auto", "lambda_method": "frozen",
                            "mode": "semi-supervised"}   # LAMBDA empty = auto
    assert all(r["lambda"] > 0 for r in meta["history"])
    assert meta["task"]["params"]["clusters"] == TINY["CLUSTERS"]
    assert meta["training"]["config"]["labeled_images"] == [image("scene1_part1")]
    assert result["CHECKPOINT"].endswith("ms.checkpoint.pt")


def _polygon_layer(path, crs_epsg, features):
    from osgeo import ogr, osr

    driver = ogr.GetDriverByName("GPKG")
    ds = driver.CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(crs_epsg)
    layer = ds.CreateLayer("labels", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("cls", ogr.OFTInteger))
    for value, wkt in features:
        feat = ogr.Feature(layer.GetLayerDefn())
        feat.SetField("cls", value)
        feat.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feat)
    ds = None
    return str(path)


def test_train_from_label_polygons(qgis_app, tmp_path):
    from berunda.engine.model_file import load_model
    from berunda.engine.rasters import describe

    info = describe(image("scene1_part1"))   # EPSG:32640, origin (306200, 2780000), 0.5 m
    x0, y0 = info.transform[2], info.transform[5]
    left = f"POLYGON(({x0} {y0},{x0 + 150} {y0},{x0 + 150} {y0 - 150},{x0} {y0 - 150},{x0} {y0}))"
    right = (f"POLYGON(({x0 + 200} {y0},{x0 + 390} {y0},{x0 + 390} {y0 - 150},{x0 + 200} {y0 - 150},"
             f"{x0 + 200} {y0}))")
    gpkg = _polygon_layer(tmp_path / "labels.gpkg", 32640, [(7, left), (30, right)])
    result = run_train(dict(TINY, LABELED_IMAGES=[image("scene1_part1")], LABEL_POLYGONS=gpkg,
                            CLASS_FIELD="cls", AUX_TASK="none", OUTPUT_MODEL=str(tmp_path / "p.pt")))
    meta = load_model(result["OUTPUT_MODEL"]).metadata
    assert meta["classes"]["values"] == [7, 30]
    assert meta["classes"]["pixel_counts"] == [300 * 300, 300 * 380]


def test_label_raster_and_polygons_together_are_refused(qgis_app, tmp_path):
    from qgis.core import QgsProcessingException

    gpkg = _polygon_layer(tmp_path / "l.gpkg", 32640, [(1, "POLYGON((0 0,1 0,1 1,0 0))")])
    with pytest.raises(QgsProcessingException, match="either LABELS"):
        run_train(dict(TINY, LABELED_IMAGES=[image("scene1_part1")], LABELS=[label("scene1_part1")],
                       LABEL_POLYGONS=gpkg, CLASS_FIELD="cls", OUTPUT_MODEL=str(tmp_path / "m.pt")))
    assert not (tmp_path / "m.pt").exists()


def test_cancel_from_feedback_keeps_last_checkpoint_and_resumes(qgis_app, tmp_path):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    from berunda.engine.model_file import load_model

    feedback = QgsProcessingFeedback()
    # cancel once the second of three epochs is under way
    feedback.progressChanged.connect(lambda p: feedback.cancel() if p > 40 else None)
    model = tmp_path / "c.pt"
    params = dict(TINY, LABELED_IMAGES=[image("scene1_part1")], LABELS=[label("scene1_part1")],
                  AUX_TASK="l1", EPOCHS=3, OUTPUT_MODEL=str(model))
    with pytest.raises(QgsProcessingException, match="RESUME"):
        run_train(params, feedback)
    checkpoint = tmp_path / "c.checkpoint.pt"
    assert not model.exists()
    # the engine (its own process) sees the cancel at the start of its next step: the
    # checkpoint is that of epoch 1, or of epoch 2 when the cancel arrived as epoch 2 ended
    assert load_model(str(checkpoint)).checkpoint["epoch"] in (1, 2)
    result = run_train(dict(params, RESUME=str(checkpoint)))
    history = load_model(result["OUTPUT_MODEL"]).metadata["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_validation_pairs_are_scored_and_stored_in_the_model(qgis_app, tmp_path):
    from berunda.engine.model_file import load_model

    result = run_train(dict(TINY, LABELED_IMAGES=[image("scene1_part1")],
                            LABELS=[label("scene1_part1")], AUX_TASK="none",
                            VALIDATION_IMAGES=[image("scene2_part1")],
                            VALIDATION_LABELS=[label("scene2_part1")],
                            OUTPUT_MODEL=str(tmp_path / "v.pt")))
    validation = load_model(result["OUTPUT_MODEL"]).metadata["validation"]
    assert 0 <= result["VALIDATION_OVERALL_ACCURACY"] <= 100
    assert result["VALIDATION_OVERALL_ACCURACY"] == validation["overall_accuracy"]
    assert result["VALIDATION_MEAN_IOU"] == validation["mean_iou"]
    assert validation["images"] == ["scene2_part1.tif"]
    # every labelled pixel of the validation raster was scored (label 0 = nodata)
    import rasterio

    with rasterio.open(label("scene2_part1")) as ds:
        assert validation["pixels"] == int((ds.read(1) != 0).sum())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.checkpoint.pt", "v.pt"]
