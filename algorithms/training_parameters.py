"""Training parameters shared by berunda:train and berunda:compare (same ids,
same meaning, same defaults).  Task ids and paper λ are listed here without
importing torch; a test keeps them equal to the task registry."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingParameterBoolean,
                       QgsProcessingParameterEnum, QgsProcessingParameterField,
                       QgsProcessingParameterMultipleLayers, QgsProcessingParameterNumber,
                       QgsProcessingParameterString, QgsProcessingParameterVectorLayer,
                       QgsProcessingUtils)

TASK_IDS = ["none", "l1", "l2", "kmeans", "mumford_shah", "inpainting", "jigsaw"]
PAPER_LAMBDA = {"none": 0.0, "l1": 0.5, "l2": 5.0, "kmeans": 1.0, "mumford_shah": 1.0,
                "inpainting": 5.0, "jigsaw": 0.5}
DEVICES = ["auto", "cuda", "cpu"]

TRAINING_HELP = (
    "<b>LABELED_IMAGES</b>: annotated image rasters (all with the same bands).<br>"
    "<b>LABELS</b>: one label raster per image, same order, same grid (integer class values; "
    "its nodata = unlabelled). Or <b>LABEL_POLYGONS</b> + <b>CLASS_FIELD</b>: polygons with an "
    "integer class field, rasterised onto each image's grid.<br>"
    "<b>UNLABELED_IMAGES</b>: unannotated rasters used by the auxiliary task.<br>"
    "<b>ALPHA</b>, <b>CLUSTERS</b>: regulariser weight α and number of clusters K of kmeans and "
    "mumford_shah (paper: α=1, K=10).<br>"
    "<b>MASK_SIZE</b>: side c of the square inpainted (paper: 80 on 320-px tiles); one not "
    "smaller than TILE_SIZE is clipped to a quarter of the tile, with a warning.<br>"
    "<b>PERMUTATIONS</b>: jigsaw permutation classes P (paper: 100).<br>"
    "<b>ENCODER</b>: any segmentation-models-pytorch encoder (resnet34, resnet18, efficientnet-b0…); "
    "random initial weights (nothing is downloaded).<br>"
    "<b>TILE_SIZE</b>: training tile side in pixels, multiple of 32 (paper: 320).<br>"
    "<b>BATCH_SIZE</b>: labeled tiles per step (as many unlabeled tiles are added).<br>"
    "<b>EPOCHS</b>, <b>SAMPLES_PER_EPOCH</b>: pseudo-epochs of N random labeled (+ N unlabeled) "
    "tiles (paper: 50 × 5000).<br>"
    "<b>LEARNING_RATE</b>: Adam learning rate (paper: 1e-4).<br>"
    "<b>DEVICE</b>: auto (GPU when available), cuda or cpu; mixed precision on GPU.<br>"
    "<b>SEED</b>: random seed; same seed + CPU gives the same model.<br>"
    "<b>AUGMENT</b>: random flips and 90° rotations.<br>")


TASK_DESCRIPTIONS = (
    "l1 / l2 (reconstruction), kmeans (relaxed k-means segmentation), mumford_shah "
    "(Mumford–Shah segmentation), inpainting (context encoder), jigsaw (3×3 jigsaw puzzle)")
PAPER_LAMBDA_TEXT = "l1 0.5, l2 5, kmeans 1, mumford_shah 1, inpainting 5, jigsaw 0.5"
SINGLE_TASK_HELP = (
    f"<b>AUX_TASK</b>: none (supervised baseline), {TASK_DESCRIPTIONS}.<br>"
    "<b>LAMBDA</b>: weight λ of the auxiliary loss; empty = the paper's best value: "
    f"{PAPER_LAMBDA_TEXT}. 0 = supervised.<br>")


def add_training_parameters(alg, single_task: bool = True) -> None:
    add = alg.addParameter
    adv = alg.advanced
    add(QgsProcessingParameterMultipleLayers("LABELED_IMAGES", "Annotated images",
                                             QgsProcessing.TypeRaster))
    add(QgsProcessingParameterMultipleLayers("LABELS", "Label rasters (same order as the images)",
                                             QgsProcessing.TypeRaster, optional=True))
    add(QgsProcessingParameterVectorLayer("LABEL_POLYGONS", "Label polygons (instead of label rasters)",
                                          [QgsProcessing.TypeVectorPolygon], optional=True))
    add(QgsProcessingParameterField("CLASS_FIELD", "Class field of the label polygons",
                                    parentLayerParameterName="LABEL_POLYGONS",
                                    type=QgsProcessingParameterField.Numeric, optional=True))
    add(QgsProcessingParameterMultipleLayers("UNLABELED_IMAGES", "Unannotated images",
                                             QgsProcessing.TypeRaster, optional=True))
    if single_task:
        add(QgsProcessingParameterEnum("AUX_TASK", "Auxiliary task", TASK_IDS,
                                       defaultValue="kmeans", usesStaticStrings=True))
        add(QgsProcessingParameterNumber("LAMBDA", "λ (empty = paper's value for the task)",
                                         QgsProcessingParameterNumber.Double, optional=True,
                                         minValue=0.0))
    add(adv(QgsProcessingParameterNumber("ALPHA", "α (kmeans, mumford_shah)",
                                         QgsProcessingParameterNumber.Double, 1.0, minValue=0.0)))
    add(adv(QgsProcessingParameterNumber("CLUSTERS", "Clusters K (kmeans, mumford_shah)",
                                         QgsProcessingParameterNumber.Integer, 10, minValue=2)))
    add(adv(QgsProcessingParameterNumber("MASK_SIZE", "Inpainting mask size c (pixels)",
                                         QgsProcessingParameterNumber.Integer, 80, minValue=1)))
    add(adv(QgsProcessingParameterNumber("PERMUTATIONS", "Jigsaw permutations P",
                                         QgsProcessingParameterNumber.Integer, 100, minValue=1,
                                         maxValue=1000)))
    add(adv(QgsProcessingParameterString("ENCODER", "Encoder", "resnet34")))
    add(adv(QgsProcessingParameterNumber("TILE_SIZE", "Tile size (pixels, multiple of 32)",
                                         QgsProcessingParameterNumber.Integer, 320, minValue=32)))
    add(adv(QgsProcessingParameterNumber("BATCH_SIZE", "Batch size",
                                         QgsProcessingParameterNumber.Integer, 8, minValue=1)))
    add(QgsProcessingParameterNumber("EPOCHS", "Epochs", QgsProcessingParameterNumber.Integer, 50,
                                     minValue=1))
    add(adv(QgsProcessingParameterNumber("SAMPLES_PER_EPOCH", "Labeled tiles per epoch",
                                         QgsProcessingParameterNumber.Integer, 5000, minValue=1)))
    add(adv(QgsProcessingParameterNumber("LEARNING_RATE", "Learning rate",
                                         QgsProcessingParameterNumber.Double, 1e-4, minValue=0.0)))
    add(adv(QgsProcessingParameterEnum("DEVICE", "Device", DEVICES, defaultValue="auto",
                                       usesStaticStrings=True)))
    add(adv(QgsProcessingParameterNumber("SEED", "Random seed", QgsProcessingParameterNumber.Integer,
                                         0, minValue=0)))
    add(adv(QgsProcessingParameterBoolean("AUGMENT", "Flip/rotate augmentation", True)))


def _optional_number(parameters, name):
    value = parameters.get(name)
    return None if value is None or value == "" else value


def training_config(alg, parameters, context, feedback, task: str = None, lam=None):
    """A TrainingConfig from the shared parameters (polygon labels rasterised here)."""
    from ..engine.config import TrainingConfig

    images = alg.raster_paths(parameters, "LABELED_IMAGES", context)
    labels = alg.raster_paths(parameters, "LABELS", context)
    polygons = alg.parameterAsVectorLayer(parameters, "LABEL_POLYGONS", context)
    if labels and polygons is not None:
        raise QgsProcessingException("Give either LABELS (rasters) or LABEL_POLYGONS, not both.")
    if polygons is not None:
        labels = _rasterise_polygons(alg, parameters, context, feedback, images)
    elif not labels:
        raise QgsProcessingException("No labels: give LABELS (one label raster per image) or "
                                     "LABEL_POLYGONS with CLASS_FIELD.")
    if task is None:
        task = alg.parameterAsEnumString(parameters, "AUX_TASK", context)
        lam = _optional_number(parameters, "LAMBDA")
        lam = None if lam is None else alg.parameterAsDouble(parameters, "LAMBDA", context)
    return TrainingConfig(
        labeled_images=images,
        labels=labels,
        unlabeled_images=alg.raster_paths(parameters, "UNLABELED_IMAGES", context),
        aux_task=task,
        lam=lam,
        alpha=alg.parameterAsDouble(parameters, "ALPHA", context),
        clusters=alg.parameterAsInt(parameters, "CLUSTERS", context),
        mask_size=alg.parameterAsInt(parameters, "MASK_SIZE", context),
        permutations=alg.parameterAsInt(parameters, "PERMUTATIONS", context),
        encoder=alg.parameterAsString(parameters, "ENCODER", context).strip() or "resnet34",
        tile_size=alg.parameterAsInt(parameters, "TILE_SIZE", context),
        batch_size=alg.parameterAsInt(parameters, "BATCH_SIZE", context),
        epochs=alg.parameterAsInt(parameters, "EPOCHS", context),
        samples_per_epoch=alg.parameterAsInt(parameters, "SAMPLES_PER_EPOCH", context),
        learning_rate=alg.parameterAsDouble(parameters, "LEARNING_RATE", context),
        device=alg.parameterAsEnumString(parameters, "DEVICE", context),
        seed=alg.parameterAsInt(parameters, "SEED", context),
        augment=alg.parameterAsBool(parameters, "AUGMENT", context),
        validation_images=alg.raster_paths(parameters, "VALIDATION_IMAGES", context),
        validation_labels=alg.raster_paths(parameters, "VALIDATION_LABELS", context),
    )


def _rasterise_polygons(alg, parameters, context, feedback, images):
    import os

    from ..engine.labels import rasterize_polygons

    field = alg.parameterAsString(parameters, "CLASS_FIELD", context)
    if not field:
        raise QgsProcessingException("LABEL_POLYGONS needs CLASS_FIELD: the integer field holding "
                                     "each polygon's class value.")
    path, layer_name = alg.parameterAsCompatibleSourceLayerPathAndLayerName(
        parameters, "LABEL_POLYGONS", context, ["gpkg", "shp"], "gpkg", feedback)
    folder = QgsProcessingUtils.tempFolder()
    labels = []
    for i, image in enumerate(images):
        out = os.path.join(folder, f"berunda_labels_{i}_{os.path.basename(image)}")
        feedback.pushInfo(f"Rasterising label polygons onto {image}")
        labels.append(rasterize_polygons(path, field, image, out, layer_name or None))
    return labels
