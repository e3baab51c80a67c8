#!/usr/bin/env python3
"""Build resources/models/berunda_train_classify_evaluate.model3, the graphical-modeler
example: berunda:train -> berunda:classify -> berunda:evaluate.

Run with the venv's Python (PyQGIS visible):  .venv/bin/python scripts/make_model.py
The model opens in Processing > Graphical Modeler and runs headless:

    scripts/qgis_process --json run resources/models/berunda_train_classify_evaluate.model3 -- \
        labeled_image=a.tif label_raster=a_labels.tif unlabeled_image=b.tif \
        image_to_classify=c.tif ground_truth=c_labels.tif epochs=5 \
        train:model=model.pt classify:classified=c_classes.tif evaluate:report=report.html
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "resources" / "models" / "berunda_train_classify_evaluate.model3"
PLUGINS = REPO / ".build" / "plugins"
_KEEP = []   # the registry does not own Python providers: keep ours alive

HELP = {
    "ALG_DESC": (
        "Trains a Berunda model on one labeled image (+ one unlabeled image for the auxiliary "
        "task), classifies another image with it and evaluates the result against that image's "
        "ground truth (OA, mIoU, kappa). An example to copy and extend in the Graphical Modeler: "
        "add more images to the training, or feed the classified raster to other algorithms."),
    "labeled_image": "Annotated image used for supervised training.",
    "label_raster": "Label raster of the annotated image (same grid; integer classes, nodata = "
                    "unlabelled).",
    "unlabeled_image": "Unannotated image for the auxiliary (semi-supervised) task; optional.",
    "aux_task": "Auxiliary task (berunda:train's AUX_TASK): none, one of the paper's six "
                "(l1, l2, kmeans, mumford_shah, inpainting, jigsaw) or consistency.",
    "image_to_classify": "Image the trained model classifies (same bands as the training image).",
    "ground_truth": "Label raster of the image to classify, for the evaluation.",
    "epochs": "Training epochs (the paper uses 50 of 5000 tiles).",
    "encoder": "segmentation-models-pytorch encoder (tu-tf_efficientnet_lite0, resnet34, …).",
    "tile_size": "Training and classification tile side in pixels (multiple of 32).",
    "batch_size": "Tiles per training step.",
    "samples_per_epoch": "Labeled tiles per epoch.",
    "train:model": "The trained model (.pt).",
    "classify:classified": "The classified raster (GeoTIFF, styled with the class colours).",
    "evaluate:report": "HTML report: OA, mIoU, kappa, per-class scores, confusion matrix.",
    "ALG_CREATOR": "Berunda",
}


def start_qgis():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["QT_HASH_SEED"] = "0"   # the same XML attribute order every time: stable diffs
    from qgis.core import QgsApplication

    app = QgsApplication.instance()
    if app is None:
        app = QgsApplication([], False)
        app.initQgis()
    if QgsApplication.processingRegistry().providerById("berunda") is None:
        PLUGINS.mkdir(parents=True, exist_ok=True)
        if not (PLUGINS / "berunda").exists():
            (PLUGINS / "berunda").symlink_to(REPO, target_is_directory=True)
        sys.path.insert(0, str(PLUGINS))
        from berunda.berunda_plugin.provider import BerundaProvider

        _KEEP.append(BerundaProvider())
        QgsApplication.processingRegistry().addProvider(_KEEP[-1])
    return app


def build_model():
    from qgis.core import (QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm,
                           QgsProcessingModelChildParameterSource as Source,
                           QgsProcessingModelOutput, QgsProcessingModelParameter,
                           QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                           QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer,
                           QgsProcessingParameterString)
    from qgis.PyQt.QtCore import QPointF

    from berunda.algorithms.training_parameters import TASK_IDS

    # (name, group, group id): the name is the algorithm id, berunda:train_classify_evaluate
    model = QgsProcessingModelAlgorithm("train_classify_evaluate", "Examples", "examples")
    model.setHelpContent(HELP)

    def add_input(param, x, y, advanced=False):
        if advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        component = QgsProcessingModelParameter(param.name())
        component.setPosition(QPointF(x, y))
        model.addModelParameter(param, component)

    integer = QgsProcessingParameterNumber.Type.Integer
    add_input(QgsProcessingParameterRasterLayer("labeled_image", "Labeled image"), 120, 60)
    add_input(QgsProcessingParameterRasterLayer("label_raster", "Label raster"), 120, 120)
    add_input(QgsProcessingParameterRasterLayer("unlabeled_image", "Unlabeled image",
                                                optional=True), 120, 180)
    add_input(QgsProcessingParameterEnum("aux_task", "Auxiliary task", TASK_IDS,
                                         defaultValue="kmeans", usesStaticStrings=True), 120, 240)
    add_input(QgsProcessingParameterNumber("epochs", "Epochs", integer, 50, minValue=1), 120, 300)
    add_input(QgsProcessingParameterRasterLayer("image_to_classify", "Image to classify"), 480, 60)
    add_input(QgsProcessingParameterRasterLayer("ground_truth", "Ground truth of the image to classify"),
              840, 60)
    add_input(QgsProcessingParameterString("encoder", "Encoder", "tu-tf_efficientnet_lite0"),
              120, 380, True)
    add_input(QgsProcessingParameterNumber("tile_size", "Tile size (pixels, multiple of 32)",
                                           integer, 320, minValue=32), 120, 440, True)
    add_input(QgsProcessingParameterNumber("batch_size", "Batch size", integer, 8, minValue=1),
              120, 500, True)
    add_input(QgsProcessingParameterNumber("samples_per_epoch", "Labeled tiles per epoch", integer,
                                           5000, minValue=1), 120, 560, True)

    def child(alg_id, child_id, description, x, y, sources, outputs):
        step = QgsProcessingModelChildAlgorithm(alg_id)
        if step.algorithm() is None:
            raise RuntimeError(f"{alg_id} is not registered: is the Berunda provider loaded?")
        step.setChildId(child_id)
        step.setDescription(description)
        step.setPosition(QPointF(x, y))
        for name, source in sources.items():
            step.addParameterSources(name, [source])
        # The modeler stores every other mandatory parameter as a static value: its default.
        for definition in step.algorithm().parameterDefinitions():
            if (definition.name() not in sources and not definition.isDestination()
                    and not definition.flags() & QgsProcessingParameterDefinition.Flag.FlagOptional):
                step.addParameterSources(definition.name(),
                                         [Source.fromStaticValue(definition.defaultValue())])
        model_outputs = {}
        for name, (child_output, description_) in outputs.items():
            output = QgsProcessingModelOutput(name, description_)
            output.setChildId(child_id)
            output.setChildOutputName(child_output)
            output.setMandatory(True)
            output.setPosition(QPointF(x + 160, y + 70))
            model_outputs[name] = output
        step.setModelOutputs(model_outputs)
        model.addChildAlgorithm(step)

    param = Source.fromModelParameter
    child("berunda:train", "train", "Train segmentation model", 480, 300, {
        "LABELED_IMAGES": param("labeled_image"),
        "LABELS": param("label_raster"),
        "UNLABELED_IMAGES": param("unlabeled_image"),
        "AUX_TASK": param("aux_task"),
        "EPOCHS": param("epochs"),
        "ENCODER": param("encoder"),
        "TILE_SIZE": param("tile_size"),
        "BATCH_SIZE": param("batch_size"),
        "SAMPLES_PER_EPOCH": param("samples_per_epoch"),
    }, {"model": ("OUTPUT_MODEL", "Trained model")})
    child("berunda:classify", "classify", "Classify raster", 700, 200, {
        "INPUT": param("image_to_classify"),
        "MODEL": Source.fromChildOutput("train", "OUTPUT_MODEL"),
        "TILE_SIZE": param("tile_size"),
        "BATCH_SIZE": param("batch_size"),
    }, {"classified": ("OUTPUT", "Classified raster")})
    child("berunda:evaluate", "evaluate", "Evaluate classification", 1000, 200, {
        "PREDICTION": Source.fromChildOutput("classify", "OUTPUT"),
        "GROUND_TRUTH": param("ground_truth"),
    }, {"report": ("OUTPUT_REPORT", "Evaluation report")})
    model.updateDestinationParameters()
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(OUTPUT))
    args = parser.parse_args(argv)
    app = start_qgis()
    assert app is not None   # and alive until the model is written
    model = build_model()
    ok, errors = model.validate()
    if not ok:
        print("The model is not valid:\n" + "\n".join(errors), file=sys.stderr)
        return 1
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if not model.toFile(args.out):
        print(f"Cannot write {args.out}", file=sys.stderr)
        return 1
    names = [p.name() for p in model.parameterDefinitions()]
    print(f"{args.out}: inputs and outputs {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
