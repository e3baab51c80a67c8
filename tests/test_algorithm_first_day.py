"""What a new user hits on the first day (issue 13), through processing.run in a real
QgsApplication: missing output folders are created for every output of every
algorithm, a MASK_SIZE larger than a small tile is clipped with a warning, and the
help says what the defaults cost and documents each algorithm's own parameters."""
import re

import pytest
from rasterio.windows import Window

from helpers import TINY, crop, image, label, recording_feedback

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(alg, params, feedback=None):
    import processing
    from qgis.core import QgsProcessingContext

    return processing.run(f"berunda:{alg}", params, context=QgsProcessingContext(),
                          feedback=feedback)


def algorithm(name):
    from qgis.core import QgsApplication

    return QgsApplication.processingRegistry().algorithmById(f"berunda:{name}")


def test_every_output_of_every_algorithm_may_go_to_a_missing_folder(qgis_app, tmp_path):
    window = Window(576, 448, 96, 96)
    img = crop(image("scene7_part1"), tmp_path / "s7.tif", window)
    truth = crop(label("scene7_part1"), tmp_path / "s7_label.tif", window)
    new = tmp_path / "new"
    base = dict(TINY, LABELED_IMAGES=[image("scene1_part1")], LABELS=[label("scene1_part1")])
    model = run("train", dict(base, AUX_TASK="none",
                              OUTPUT_MODEL=str(new / "train" / "m.pt")))["OUTPUT_MODEL"]
    outputs = run("classify", {"INPUT": img, "MODEL": model,
                               "OUTPUT": str(new / "classify" / "c.tif"),
                               "OUTPUT_PROBABILITIES": str(new / "probabilities" / "p.tif"),
                               "OUTPUT_CONFIDENCE": str(new / "confidence" / "k.tif")})
    run("evaluate", {"PREDICTION": outputs["OUTPUT"], "GROUND_TRUTH": truth,
                     "OUTPUT_REPORT": str(new / "report" / "r.html"),
                     "OUTPUT_TABLE": str(new / "table" / "t.csv")})
    run("compare", dict(base, AUX_TASKS=["l1"], RUNS=1, VALIDATION_IMAGES=[img],
                        VALIDATION_LABELS=[truth], OUTPUT_TABLE=str(new / "ctable" / "t.csv"),
                        OUTPUT_REPORT=str(new / "creport" / "r.html"),
                        OUTPUT_FOLDER=str(new / "models" / "kept")))
    run("diagnostics", {"OUTPUT_REPORT": str(new / "diagnostics" / "d.html")})
    run("export_onnx", {"MODEL": model, "OUTPUT": str(new / "onnx" / "m.onnx")})
    for path in ("train/m.pt", "classify/c.tif", "probabilities/p.tif", "confidence/k.tif",
                 "report/r.html", "table/t.csv", "ctable/t.csv", "creport/r.html",
                 "models/kept/l1_lambda0.5_seed0.pt", "diagnostics/d.html", "onnx/m.onnx"):
        assert (new / path).is_file(), path


def test_a_mask_larger_than_a_small_tile_is_clipped_with_a_warning(qgis_app, tmp_path):
    feedback = recording_feedback()
    params = dict(TINY, LABELED_IMAGES=[image("scene1_part1")], LABELS=[label("scene1_part1")],
                  UNLABELED_IMAGES=[image("scene2_part1")], AUX_TASK="inpainting",
                  MASK_SIZE=80, OUTPUT_MODEL=str(tmp_path / "m.pt"))
    run("train", params, feedback)
    assert feedback.warnings == ["MASK_SIZE 80 is not smaller than TILE_SIZE 64; using 16 (a "
                                 "quarter of the tile, as the paper's 80 px on 320-px tiles)."]


def test_compare_help_documents_its_own_parameters(qgis_app):
    text = algorithm("compare").shortHelpString()
    ids = set(re.findall(r"<b>([A-Z_]+)</b>", text))
    declared = {p.name() for p in algorithm("compare").parameterDefinitions()}
    assert {"AUX_TASKS", "LAMBDAS", "RUNS"} <= ids
    assert not {"AUX_TASK", "LAMBDA"} & ids
    assert ids <= declared                 # nothing documented that compare does not take
    assert "mumford_shah" in text and "kmeans 1" in text


@pytest.mark.parametrize("name", ["train", "compare"])
def test_help_says_what_the_defaults_cost(qgis_app, name):
    text = algorithm(name).shortHelpString().lower()
    assert "on a cpu" in text and "on a gpu" in text
    assert "measured 1.13 tiles/s on two cpu cores" in text      # bench/README.md (issue 28)
    assert "h100" in text and "259 tiles/s" in text              # bench/README.md gpu_check
