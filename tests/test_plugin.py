"""The plugin as QGIS loads it: metadata, start-up without heavy imports,
the provider and its four algorithms, the missing-dependency message."""
import configparser
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / ".build" / "plugins"


def test_metadata_declares_a_processing_plugin():
    meta = configparser.ConfigParser()
    meta.read(REPO / "metadata.txt")
    general = meta["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author",
                "email", "tags", "experimental"):
        assert general.get(key), key
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"


def test_loading_the_plugin_does_not_import_torch():
    """Fresh interpreter: QgsApplication + classFactory(None).initProcessing()."""
    script = f"""
import sys, json
sys.path.insert(0, {str(PLUGINS)!r})
from qgis.core import QgsApplication
app = QgsApplication([], False); app.initQgis()
import berunda
plugin = berunda.classFactory(None)
plugin.initProcessing()
provider = QgsApplication.processingRegistry().providerById('berunda')
print(json.dumps({{
    'algorithms': sorted(a.id() for a in provider.algorithms()),
    'heavy': sorted(m for m in ('torch', 'segmentation_models_pytorch', 'rasterio', 'timm')
                    if m in sys.modules)}}))
plugin.unload()
assert QgsApplication.processingRegistry().providerById('berunda') is None
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"}, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["algorithms"] == ["berunda:classify", "berunda:compare", "berunda:diagnostics",
                                    "berunda:evaluate", "berunda:export_onnx",
                                    "berunda:install_dependencies",
                                    "berunda:train", "berunda:train_classify_evaluate"]
    assert result["heavy"] == []


EXPECTED_PARAMETERS = {
    "train": ["LABELED_IMAGES", "LABELS", "LABEL_POLYGONS", "CLASS_FIELD", "UNLABELED_IMAGES",
              "AUX_TASK", "LAMBDA", "ALPHA", "CLUSTERS", "MASK_SIZE", "PERMUTATIONS", "CONFIDENCE",
              "EMA_DECAY", "CLASS_BALANCE", "ENCODER",
              "TILE_SIZE", "BATCH_SIZE", "EPOCHS", "SAMPLES_PER_EPOCH", "LEARNING_RATE", "DEVICE",
              "SEED", "VALIDATION_IMAGES", "VALIDATION_LABELS", "RESUME", "EXPORT_JOB",
              "JOB_ONLY", "OUTPUT_MODEL"],
    "classify": ["INPUT", "MODEL", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "DEVICE", "OUTPUT",
                 "OUTPUT_PROBABILITIES", "OUTPUT_CONFIDENCE"],
    "evaluate": ["PREDICTION", "GROUND_TRUTH", "GROUND_TRUTH_POLYGONS", "CLASS_FIELD",
                 "OUTPUT_REPORT", "OUTPUT_TABLE"],
    "compare": ["LABELED_IMAGES", "LABELS", "UNLABELED_IMAGES", "VALIDATION_IMAGES",
                "VALIDATION_LABELS", "AUX_TASKS", "LAMBDAS", "RUNS", "EPOCHS", "SAMPLES_PER_EPOCH",
                "OUTPUT_TABLE", "OUTPUT_REPORT", "OUTPUT_FOLDER"],
    "export_onnx": ["MODEL", "OUTPUT", "TILE_SIZE", "OPSET"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMETERS))
def test_algorithms_declare_their_parameters(qgis_app, name):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById(f"berunda:{name}")
    assert alg is not None
    ids = [p.name() for p in alg.parameterDefinitions()]
    missing = [p for p in EXPECTED_PARAMETERS[name] if p not in ids]
    assert not missing
    assert alg.shortHelpString()
    for param in EXPECTED_PARAMETERS[name]:
        # every parameter is explained in the help
        assert param in alg.shortHelpString(), param


def test_task_enum_uses_static_strings(qgis_app):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("berunda:train")
    enum = alg.parameterDefinition("AUX_TASK")
    assert enum.usesStaticStrings()
    assert enum.options() == ["none", "l1", "l2", "kmeans", "mumford_shah", "inpainting", "jigsaw",
                              "consistency"]
    assert enum.defaultValue() == "kmeans"
    assert alg.parameterDefinition("DEVICE").options() == ["auto", "cuda", "cpu"]


def test_missing_dependency_gives_install_instructions(qgis_app, monkeypatch, tmp_path, data_dir):
    import processing
    from qgis.core import QgsProcessingException

    from berunda.berunda_plugin import dependencies

    # QGIS's own Python with Berunda's package folder (not an explicit engine interpreter):
    # what is missing is judged from package metadata before any process starts.
    monkeypatch.delenv(dependencies.PYTHON_ENV)
    monkeypatch.setenv(dependencies.PACKAGES_ENV, str(tmp_path / "packages"))
    monkeypatch.setattr(dependencies, "REQUIRED",
                        dependencies.REQUIRED + (("berunda_not_installed_pkg", "berunda-missing"),))
    with pytest.raises(QgsProcessingException) as err:
        processing.run("berunda:train", {
            "LABELED_IMAGES": [str(data_dir / "images/scene1_part1.tif")],
            "LABELS": [str(data_dir / "labels/scene1_part1.tif")],
            "OUTPUT_MODEL": str(tmp_path / "m.pt")})
    message = str(err.value)
    assert "berunda-missing" in message and "pip install" in message
    assert not (tmp_path / "m.pt").exists()


def test_every_help_lists_every_parameter_with_its_default(qgis_app):
    """A help line per parameter, and the default stated wherever there is one."""
    import re

    from qgis.core import QgsApplication, QgsProcessingDestinationParameter

    for alg in QgsApplication.processingRegistry().providerById("berunda").algorithms():
        if alg.id() == "berunda:train_classify_evaluate":
            continue   # the modeler example documents its inputs in the model
        text = alg.shortHelpString()
        lines = re.split(r"<br>", text)
        for param in alg.parameterDefinitions():
            line = next((l for l in lines if f"<b>{param.name()}</b>" in l), None)
            assert line is not None, (alg.id(), param.name())
            default = param.defaultValue()
            if (default not in (None, "", []) and not isinstance(param, QgsProcessingDestinationParameter)):
                assert "default" in line, (alg.id(), param.name(), line)
