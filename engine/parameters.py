"""One description of every parameter of Berunda's commands, without QGIS or torch.

The Processing algorithms (algorithms/) build their QGIS parameters and help panels from
it; the command line (cli/) builds its options, its ``--help`` and the keys of a training
job from it.  So the two front doors never disagree about a name, a default or a meaning.

Naming: the Processing id is upper case (``TILE_SIZE``); the command-line option is the
lower-case id with dashes (``--tile-size``); a training job stores a training parameter
under its ``TrainingConfig`` field (``field``, by default the lower-case id).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .lr_schedule import SCHEDULES as LR_SCHEDULES   # plain names, no torch

# Task ids and the paper's λ, listed here without importing torch (a test keeps them equal
# to the task registry in models/tasks).
TASK_IDS = ["none", "l1", "l2", "kmeans", "mumford_shah", "inpainting", "jigsaw", "consistency"]
PAPER_LAMBDA = {"none": 0.0, "l1": 0.5, "l2": 5.0, "kmeans": 1.0, "mumford_shah": 1.0,
                "inpainting": 5.0, "jigsaw": 0.5, "consistency": 1.0}
DEVICES = ["auto", "cuda", "cpu"]
ENCODER_WEIGHT_KEYWORDS = ("none", "imagenet", "auto")   # ENCODER_WEIGHTS values that are not files
INIT_NORMALIZATIONS = ("parent", "recompute")
PROBABILITY_TYPES = ["float32", "uint8"]
# Encoders offered in the dialog (any smp encoder name is accepted; engine/encoders.py checks).
COMMON_ENCODERS = ["tu-tf_efficientnet_lite0", "resnet34", "resnet18", "resnet50",
                   "resnext50_32x4d", "efficientnet-b0", "efficientnet-b2", "efficientnet-b4",
                   "mobilenet_v2", "densenet121", "tu-convnext_tiny"]
# Supervised losses (ids of models/losses.py FACTORIES; a test keeps them equal).
SUPERVISED_LOSSES = ["ce", "weighted_ce", "ce_dice"]

#: kinds of parameter; each maps onto one QGIS parameter class and one argparse type
KINDS = ("rasters", "raster", "polygons", "field", "enum", "int", "float", "bool", "string",
         "file", "file_out", "raster_out", "folder_out")


@dataclass(frozen=True)
class Param:
    id: str                       # Processing id, upper case
    kind: str                     # one of KINDS
    label: str                    # short label (dialog)
    help: str                     # what it does, for help panels and --help
    default: Any = None
    optional: bool = False
    advanced: bool = False
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Tuple[str, ...] = ()
    hints: Tuple[str, ...] = ()   # string: values the dialog offers (any value is accepted)
    multiple: bool = False        # enum: several choices
    extension: str = ""           # file: expected extension; file_out: file filter
    parent: str = ""              # field: the polygon parameter it belongs to
    field: Optional[str] = None   # TrainingConfig field / engine keyword; None = id.lower()
    create_by_default: bool = True  # optional outputs: made when not given?

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.id}: unknown kind {self.kind!r}")

    @property
    def key(self) -> str:
        """The TrainingConfig field / engine keyword / job key."""
        return self.field or self.id.lower()

    @property
    def option(self) -> str:
        """The command-line option."""
        return "--" + self.id.lower().replace("_", "-")

    def default_text(self) -> str:
        """The default in words, for help texts ('' when there is none to show)."""
        if self.kind == "bool":
            return "yes" if self.default else "no"
        if self.default is None or self.default == "" or self.default == []:
            return ""
        if isinstance(self.default, (list, tuple)):
            return ", ".join(str(v) for v in self.default)
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


def help_line(param: Param, html: bool = True) -> str:
    """'<b>ID</b>: help (default: X)' — every parameter says its default."""
    default = param.default_text()
    tail = f" (default: {default})" if default else (" (optional)" if param.optional else "")
    name = f"<b>{param.id}</b>" if html else param.id
    return f"{name}: {param.help}{tail}"


def help_text(params: Sequence[Param], html: bool = True) -> str:
    sep = "<br>" if html else "\n"
    return sep.join(help_line(p, html) for p in params)


# --- training (berunda:train, berunda:compare, the training job) ---------------------------

_LABELED = Param("LABELED_IMAGES", "rasters", "Annotated images",
                 "annotated image rasters (all with the same bands).", field="labeled_images")
_LABELS = Param("LABELS", "rasters", "Label rasters (same order as the images)",
                "one label raster per image, same order, same grid (integer class values; its "
                "nodata = unlabelled).", optional=True, field="labels")
_POLYGONS = Param("LABEL_POLYGONS", "polygons", "Label polygons (instead of label rasters)",
                  "polygons with an integer class field, rasterised onto each image's grid "
                  "(instead of LABELS).", optional=True)
_CLASS_FIELD = Param("CLASS_FIELD", "field", "Class field of the label polygons",
                     "the integer field of LABEL_POLYGONS holding each polygon's class value.",
                     optional=True, parent="LABEL_POLYGONS")
_UNLABELED = Param("UNLABELED_IMAGES", "rasters", "Unannotated images",
                   "unannotated rasters used by the auxiliary task.", optional=True)
_BANDS = Param("BANDS", "string", "Bands to use (e.g. 1,2,3; empty = all but alpha)",
               "1-based band numbers of the images to train on, comma-separated (e.g. 1,2,3 "
               "for the RGB of an RGBN image); empty = every band except an alpha band. An "
               "alpha band or a GDAL mask band marks the valid pixels, never data. Stored in the "
               "model: classify reads the same bands.", default="", optional=True,
               advanced=True)
AUX_TASK = Param("AUX_TASK", "enum", "Auxiliary task",
                 "none (supervised baseline), l1 / l2 (reconstruction), kmeans (relaxed k-means "
                 "segmentation), mumford_shah (Mumford–Shah segmentation), inpainting (context "
                 "encoder), jigsaw (3×3 jigsaw puzzle), consistency (pseudo-labels from the "
                 "network's own confident predictions, learned on strongly perturbed and "
                 "CutMix-ed tiles; not in the paper).", default="kmeans",
                 choices=tuple(TASK_IDS))
LAMBDA = Param("LAMBDA", "string", "λ (a number, or empty / auto = balanced automatically)",
               "weight λ of the auxiliary loss: a number ≥ 0, or empty / auto = balanced "
               "automatically during training (over the first epoch λ makes the weighted auxiliary "
               "loss the size of the supervised loss, then it stays; consistency keeps λ = 1), "
               "so no per-task tuning is needed. "
               "The paper's values: l1 0.5, l2 5, kmeans 1, mumford_shah 1, inpainting 5, jigsaw "
               "0.5. 0 = supervised. The λ used in each epoch is logged and stored in the model.",
               default="auto", optional=True, field="lam")


def lambda_number(text: str, name: str, fix: str) -> float:
    """A λ typed as text: a finite number >= 0, else ValueError naming ``name``, then ``fix``."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number; {fix}") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"{name} {text} is {'negative' if value < 0 else 'not finite'}; {fix}")
    return value


def parse_lambda(text):
    """LAMBDA as typed: '' / 'auto' -> 'auto'; a number >= 0 -> float; else ValueError."""
    text = "" if text is None else str(text).strip()
    if text.lower() in ("", "auto"):
        return "auto"
    return lambda_number(text, "LAMBDA", "give a number >= 0 (0 = supervised), such as 0.5, or "
                                         "leave it empty for auto.")

TASK_PARAMS: List[Param] = [
    Param("ALPHA", "float", "α (kmeans, mumford_shah)",
          "regulariser weight α of kmeans and mumford_shah.", default=1.0, advanced=True,
          minimum=0.0),
    Param("CLUSTERS", "int", "Clusters K (kmeans, mumford_shah)",
          "number of clusters K of kmeans and mumford_shah.", default=10, advanced=True,
          minimum=2),
    Param("MASK_SIZE", "int", "Inpainting mask size c (pixels)",
          "side c of the square inpainted (paper: 80 on 320-px tiles); one not smaller than "
          "TILE_SIZE is clipped to a quarter of the tile, with a warning.", default=80,
          advanced=True, minimum=1),
    Param("PERMUTATIONS", "int", "Jigsaw permutations P",
          "jigsaw permutation classes P (paper: 100).", default=100, advanced=True, minimum=1,
          maximum=1000),
    Param("CONFIDENCE", "float", "Pseudo-label confidence τ (consistency)",
          "consistency: a pixel becomes a pseudo-label only where the network's top class "
          "probability is at least this; the share of such pixels is logged per epoch.",
          default=0.95, advanced=True, minimum=0.0, maximum=1.0),
    Param("EMA_DECAY", "float", "EMA teacher decay (consistency; 0 = off)",
          "consistency: 0 = pseudo-labels from the network itself; e.g. 0.99 = from an "
          "exponential moving average of its weights (a steadier teacher).", default=0.0,
          advanced=True, minimum=0.0, maximum=0.9999),
    Param("CLASS_BALANCE", "float", "Class-balanced pseudo-label share (consistency; 0 = off)",
          "consistency: every class the network predicts on the unlabeled tiles of a step also "
          "keeps its most confident pixels up to this share as pseudo-labels, even below "
          "CONFIDENCE (class-balanced self-training), so that a class rare in the labels still "
          "gets pseudo-labels; 0 = CONFIDENCE alone.", default=0.2, advanced=True,
          minimum=0.0, maximum=1.0),
]

NETWORK_PARAMS: List[Param] = [
    Param("ENCODER", "string", "Encoder",
          "a segmentation-models-pytorch encoder; its initial weights: ENCODER_WEIGHTS. The "
          "dialog offers the common ones (" + ", ".join(COMMON_ENCODERS) +
          "); headless (qgis_process, the command line, a training job) any smp encoder name "
          "is accepted, timm models as tu-<name>. A misspelt name is refused with the closest "
          "names. Default: tu-tf_efficientnet_lite0 (timm's EfficientNet-Lite0), whose ImageNet "
          "weights are installed with Berunda's dependencies, so it starts pretrained offline "
          "(the paper used resnet34 from random weights).", default="tu-tf_efficientnet_lite0",
          advanced=True, hints=tuple(COMMON_ENCODERS)),
    Param("TILE_SIZE", "int", "Tile size (pixels, multiple of 32)",
          "training tile side in pixels, multiple of 32 (paper: 320).", default=320,
          advanced=True, minimum=32),
    Param("BATCH_SIZE", "int", "Batch size",
          "labeled tiles per step (as many unlabeled tiles are added).", default=8,
          advanced=True, minimum=1),
    Param("EPOCHS", "int", "Epochs",
          "pseudo-epochs of SAMPLES_PER_EPOCH random labeled (+ as many unlabeled) tiles "
          "(paper: 50).", default=50, minimum=1),
    Param("SAMPLES_PER_EPOCH", "int", "Labeled tiles per epoch",
          "labeled tiles drawn per pseudo-epoch (paper: 5000).", default=5000, advanced=True,
          minimum=1),
    Param("SUPERVISED_LOSS", "enum", "Supervised loss",
          "weighted_ce (default) = cross-entropy with median-frequency class weights from the "
          "label pixel counts: rare classes such as roads or vegetation weigh more, at most 10× "
          "(+10.6 mIoU over ce on the Dubai benchmark on a GPU, where vegetation is far rarer "
          "in the labels than on the ground; consistency weighs its pseudo-labels alike); "
          "ce = plain cross-entropy (the paper's; a higher overall accuracy on short CPU runs); "
          "ce_dice = cross-entropy + Dice loss.", default="weighted_ce",
          advanced=True, choices=tuple(SUPERVISED_LOSSES)),
    Param("LEARNING_RATE", "float", "Learning rate", "Adam learning rate (paper: 1e-4).",
          default=1e-4, advanced=True, minimum=0.0),
    Param("LR_SCHEDULE", "enum", "Learning-rate schedule",
          "constant = LEARNING_RATE at every step (the paper); poly = LEARNING_RATE decayed as "
          "(1 - progress)^0.9 to almost 0 at the last step (DeepLab, UniMatch): the final "
          "weights settle instead of stopping on a noisy step (measured on the Dubai "
          "benchmark: +1.0 mIoU for the supervised baseline, higher on each of 3 seeds). EPOCHS "
          "raised on RESUME stretches the curve from there.", default="constant", advanced=True,
          choices=LR_SCHEDULES),
    Param("DEVICE", "enum", "Device",
          "auto (GPU when available), cuda or cpu; mixed precision on GPU.", default="auto",
          advanced=True, choices=tuple(DEVICES)),
    Param("SEED", "int", "Random seed", "random seed; same seed + CPU gives the same model.",
          default=0, advanced=True, minimum=0),
    Param("AUGMENT", "bool", "Flip/rotate augmentation", "random flips and 90° rotations.",
          default=True, advanced=True),
]

# Where the weights start: pretrained encoder weights, or a Berunda model to fine-tune.
START_PARAMS: List[Param] = [
    Param("INIT_MODEL", "file", "Start from a Berunda model (fine-tune)",
          "a Berunda model (.pt) to fine-tune: same ENCODER and bands. With the same class "
          "values (or a subset) every weight is carried over; with other classes the encoder "
          "and decoder are, and the supervised head starts anew. The auxiliary head is carried "
          "over when AUX_TASK and its shape are the same. The new model records its parent. Keep "
          "LEARNING_RATE at 1e-4 or lower: larger steps forget much of the parent.",
          optional=True, extension="pt"),
    Param("INIT_NORMALIZATION", "enum", "Normalisation when fine-tuning",
          "with INIT_MODEL: parent (reuse the parent's per-band statistics, which its weights "
          "learned with) or recompute (from these images, e.g. for another sensor or data "
          "type).", default="parent", advanced=True, choices=INIT_NORMALIZATIONS),
    Param("ENCODER_WEIGHTS", "string", "Encoder weights (auto, none, imagenet or a file)",
          "initial encoder weights: auto (the default: ENCODER's ImageNet weights when they can "
          "be had -- installed with Berunda for tu-tf_efficientnet_lite0, else smp's download "
          "or cache -- and random weights with one log line when not), imagenet (the same, but "
          "a training stops with the reason when they cannot be had), none (random, the "
          "paper's protocol), or the path of a weights file (.pth/.pt/.safetensors state dict "
          "of the encoder, from torchvision, timm or smp). Weights for 3 bands are adapted to "
          "other band counts as smp does. With INIT_MODEL only auto or none.", default="auto",
          advanced=True),
]

VALIDATION_IMAGES = Param("VALIDATION_IMAGES", "rasters", "Validation images (optional)",
                          "held-out images; the final model is classified on them and its OA / "
                          "mIoU are stored in the model file.", optional=True)
VALIDATION_LABELS = Param("VALIDATION_LABELS", "rasters", "Validation label rasters (same order)",
                          "one label raster per validation image, same order.", optional=True)


def training_params(single_task: bool = True) -> List[Param]:
    """The parameters berunda:train and berunda:compare share, in dialog order."""
    task = [AUX_TASK, LAMBDA] if single_task else []
    return [_LABELED, _LABELS, _POLYGONS, _CLASS_FIELD, _UNLABELED, _BANDS, *task, *TASK_PARAMS,
            *NETWORK_PARAMS, *START_PARAMS]


TRAIN_EXTRA: List[Param] = [
    VALIDATION_IMAGES, VALIDATION_LABELS,
    Param("RESUME", "file", "Resume from checkpoint",
          "a '.checkpoint.pt' file to continue from (same data; its settings are reused, "
          "EPOCHS may be raised).", optional=True, advanced=True, extension="pt"),
    Param("EXPORT_JOB", "file_out", "Training job file (JSON, to train elsewhere)",
          "also write the complete training job (every parameter, resolved paths, classes and "
          "normalisation statistics) as JSON, to train it later with "
          "'python -m berunda train JOB.json' on a GPU server or cluster.", optional=True,
          extension="JSON files (*.json)", create_by_default=False),
    Param("JOB_ONLY", "bool", "Only write the job (do not train)",
          "with EXPORT_JOB: write the job and stop, without training.", default=False,
          advanced=True),
    Param("OUTPUT_MODEL", "file_out", "Output model", "the model file (.pt).",
          extension="Berunda model (*.pt)"),
]

COMPARE_EXTRA: List[Param] = [
    Param("VALIDATION_IMAGES", "rasters", "Validation images",
          "held-out images every trained model is classified on."),
    Param("VALIDATION_LABELS", "rasters", "Validation label rasters (same order)",
          "one label raster per validation image, same order."),
    Param("AUX_TASKS", "enum", "Auxiliary tasks",
          "auxiliary tasks to compare (the supervised baseline is always included): l1 / l2 "
          "(reconstruction), kmeans (relaxed k-means segmentation), mumford_shah (Mumford–Shah "
          "segmentation), inpainting (context encoder), jigsaw (3×3 jigsaw puzzle).",
          default=["kmeans", "mumford_shah"], choices=tuple(t for t in TASK_IDS if t != "none"),
          multiple=True),
    Param("LAMBDAS", "string", "λ values (comma-separated; empty = paper's)",
          "comma-separated λ values tried for every task (e.g. 0.5, 1, 5); empty = each "
          "task's paper value: l1 0.5, l2 5, kmeans 1, mumford_shah 1, inpainting 5, "
          "jigsaw 0.5.",
          default="", optional=True),
    Param("RUNS", "int", "Runs (seeds) per configuration",
          "seeds per configuration (paper: 4); seeds are SEED, SEED+1, …", default=4, minimum=1),
    Param("OUTPUT_TABLE", "file_out", "Comparison table (CSV)", "the comparison table (CSV).",
          extension="CSV files (*.csv)"),
    Param("OUTPUT_REPORT", "file_out", "Comparison report (HTML)",
          "the HTML report (table, and the λ plot when several λ are given).",
          extension="HTML files (*.html)"),
    Param("OUTPUT_FOLDER", "folder_out", "Folder to keep the trained models",
          "keep every trained model there.", optional=True, create_by_default=False),
]

# --- classify ---------------------------------------------------------------------------------

CLASSIFY: List[Param] = [
    Param("INPUT", "raster", "Input raster",
          "raster with the same bands (order, data type family) as the training images."),
    Param("MODEL", "file", "Berunda model", "a Berunda model file (.pt).", extension="pt"),
    Param("BANDS", "string", "Bands of the input (empty = the model's)",
          "1-based band numbers of INPUT to feed the model, comma-separated, as many as the "
          "model was trained on; empty = the bands the model was trained on (its BANDS). An "
          "alpha band or GDAL mask band marks the valid pixels.", default="", optional=True,
          advanced=True),
    Param("TILE_SIZE", "int", "Tile size (empty = chosen for the device)",
          "tile side in pixels, multiple of 32; empty or 0 = chosen for speed: 512 px on a "
          "CPU, 1024 px on a GPU, at least twice the model's training tile, smaller when the "
          "device's free memory asks for it (the network is fully convolutional: a model "
          "trained on small tiles classifies large ones as well). The log says which tile was "
          "used.", optional=True, advanced=True, minimum=0),
    Param("OVERLAP", "float", "Overlap (pixels, or fraction of the tile if < 1)",
          "overlap between tiles, in pixels (≥ 1) or as a fraction of the tile (< 1); empty = "
          "a quarter of the model's training tile, which hides seams; 0 = none (fastest).",
          optional=True, advanced=True, minimum=0.0),
    Param("BATCH_SIZE", "int", "Batch size", "tiles per forward pass.", default=4,
          advanced=True, minimum=1),
    Param("DEVICE", "enum", "Device", "auto, cuda or cpu.", default="auto", advanced=True,
          choices=tuple(DEVICES)),
    Param("PROBABILITY_TYPE", "enum", "Probability data type",
          "data type of OUTPUT_PROBABILITIES: float32 (0–1) or uint8 (0–255).",
          default="float32", advanced=True, choices=tuple(PROBABILITY_TYPES)),
    Param("OUTPUT", "raster_out", "Classified raster",
          "the classified GeoTIFF; its metadata names the model (berunda:evaluate reports "
          "it). Missing folders are created."),
    Param("OUTPUT_PROBABILITIES", "raster_out", "Class probabilities",
          "one band of probability per class, described by the class name.", optional=True,
          create_by_default=False),
    Param("OUTPUT_CONFIDENCE", "raster_out", "Confidence",
          "the winning class's probability.", optional=True,
          create_by_default=False),
]

# --- evaluate ---------------------------------------------------------------------------------

EVALUATE: List[Param] = [
    Param("PREDICTION", "raster", "Classified raster", "the classified raster."),
    Param("GROUND_TRUTH", "raster", "Ground truth raster",
          "label raster on the same grid as the prediction.", optional=True),
    Param("GROUND_TRUTH_POLYGONS", "polygons", "Ground truth polygons (instead of a raster)",
          "polygons with an integer class field, rasterised onto the prediction's grid "
          "(instead of GROUND_TRUTH).", optional=True),
    Param("CLASS_FIELD", "field", "Class field of the polygons",
          "the integer class field of GROUND_TRUTH_POLYGONS.", optional=True,
          parent="GROUND_TRUTH_POLYGONS"),
    Param("OUTPUT_REPORT", "file_out", "Evaluation report",
          "the HTML report; it names the model when the classified raster was made by "
          "berunda:classify, and warns when the two rasters share no class value (labels "
          "recoded after training?). Missing folders are created.",
          extension="HTML files (*.html)"),
    Param("OUTPUT_TABLE", "file_out", "Confusion matrix and scores (CSV)",
          "one table, one row per class: value, name, per-class scores, its row of the "
          "confusion matrix (columns predicted_1, predicted_2, … per class value) and the "
          "overall scores; spreadsheets and pandas read it directly.", optional=True,
          extension="CSV files (*.csv)", create_by_default=False),
]


# --- export to ONNX ---------------------------------------------------------------------------

DEFAULT_OPSET = 17
EXPORT_ONNX: List[Param] = [
    Param("MODEL", "file", "Berunda model",
          "a Berunda model file (.pt) written by 'Train segmentation model' (not its "
          ".checkpoint.pt).", extension="pt"),
    Param("OUTPUT", "file_out", "ONNX model", "the .onnx file to write.",
          extension="ONNX models (*.onnx)"),
    Param("TILE_SIZE", "int", "Tile size (empty = model's)",
          "tile side in pixels of the exported graph, a multiple of 32 (others are rounded "
          "up); empty or 0 = the model's training tile size. Larger tiles classify faster in "
          "Deepness.", optional=True, advanced=True, minimum=0),
    Param("OPSET", "int", "ONNX opset",
          f"ONNX operator set version ({DEFAULT_OPSET} suits Deepness and onnxruntime 1.13 or "
          "newer).", default=DEFAULT_OPSET, advanced=True, minimum=11, maximum=20),
]


def parse_band_list(text, name: str = "BANDS") -> List[int]:
    """'1, 2,3' -> [1, 2, 3]; '' / None -> [] (the default bands).  A list passes through."""
    from .errors import InvalidParameterError

    if text is None:
        return []
    parts = text if isinstance(text, (list, tuple)) else \
        [p for p in str(text).replace(";", ",").replace(" ", ",").split(",") if p]
    try:
        bands = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"{name} {text!r} is not a list of band numbers; give 1-based band numbers "
            "separated by commas, e.g. 1,2,3.") from None
    check_band_list(bands, name)
    return bands


def check_band_list(bands, name: str = "BANDS") -> None:
    from .errors import InvalidParameterError

    if not isinstance(bands, (list, tuple)) or not all(
            isinstance(b, int) and not isinstance(b, bool) for b in bands):
        raise InvalidParameterError(f"{name} must be a list of band numbers (got {bands!r}).")
    if any(b < 1 for b in bands):
        raise InvalidParameterError(f"{name} {', '.join(map(str, bands))}: bands are numbered "
                                    "from 1.")
    if len(set(bands)) != len(bands):
        raise InvalidParameterError(f"{name} {', '.join(map(str, bands))} lists a band twice.")


def by_id(params: Sequence[Param]) -> Dict[str, Param]:
    return {p.id: p for p in params}


def command_line(params: Sequence[Param], values: Dict[str, Any]) -> List[str]:
    """The command-line options that give ``values`` ({Processing id: value}); the inverse
    of what cli/options.py parses.  Unset values (None, '', []) are left out."""
    args: List[str] = []
    for p in params:
        value = values.get(p.id)
        if value is None or value == "" or value == []:
            continue
        if p.kind == "bool":
            args.append(p.option if value else "--no-" + p.option[2:])
        elif isinstance(value, (list, tuple)):
            args += [p.option, *[str(v) for v in value]]
        else:
            args += [p.option, f"{value:.17g}" if isinstance(value, float) else str(value)]
    return args
