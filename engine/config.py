"""The training configuration: plain values, shared by the Processing algorithm,
the command line, the compare grid and the model file (stored verbatim)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional, Union


@dataclass
class TrainingConfig:
    labeled_images: List[str]
    labels: List[str]
    unlabeled_images: List[str] = field(default_factory=list)
    bands: List[int] = field(default_factory=list)   # 1-based bands used; empty = all but alpha
    aux_task: str = "kmeans"
    lam: Optional[Union[float, str]] = None   # a number, or None / "auto": balanced (loss_balance)
    alpha: float = 1.0                   # kmeans / mumford_shah regulariser weight
    clusters: int = 10                   # K for kmeans / mumford_shah
    mask_size: int = 80                  # inpainting square side c (pixels)
    permutations: int = 100              # jigsaw P
    confidence: float = 0.95             # consistency: pseudo-label threshold τ
    ema_decay: float = 0.0               # consistency: EMA teacher decay (0 = no teacher)
    class_balance: float = 0.2           # consistency: share of each class's pixels kept below τ
    encoder: str = "tu-tf_efficientnet_lite0"   # its ImageNet weights install with Berunda
    tile_size: int = 320
    batch_size: int = 8                  # labeled tiles per step (+ as many unlabeled)
    epochs: int = 50
    samples_per_epoch: int = 5000        # N labeled (+ N unlabeled) tiles per pseudo-epoch
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"        # engine/lr_schedule.py: constant or poly
    supervised_loss: str = "weighted_ce" # models/losses.py: weighted_ce, ce, ce_dice
    device: str = "auto"
    seed: int = 0
    augment: bool = True                 # random flips and 90° rotations
    amp: bool = True                     # mixed precision on CUDA (ignored on CPU)
    max_invalid_fraction: float = 0.5    # windows with more nodata than this are redrawn
    validation_images: List[str] = field(default_factory=list)   # scored after training
    validation_labels: List[str] = field(default_factory=list)
    # Polygon labels instead of label rasters: burnt onto each image's grid when training starts.
    label_polygons: Optional[str] = None
    label_layer: Optional[str] = None
    class_field: Optional[str] = None
    # Where the weights start (engine/initial_weights.py).
    encoder_weights: str = "auto"        # auto, none, imagenet or a weights file (encoder_weights.py)
    init_model: Optional[str] = None     # a Berunda model to fine-tune (parent_model.py)
    init_normalization: str = "parent"   # with init_model: the parent's statistics, or recompute
    freeze_encoder_epochs: int = 0       # the encoder's weights stay fixed for these first epochs

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainingConfig":
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)
