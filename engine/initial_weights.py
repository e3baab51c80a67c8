"""Where a training's weights start — random, pretrained encoder weights (ENCODER_WEIGHTS,
engine/encoder_weights.py) or a Berunda model to fine-tune (INIT_MODEL,
engine/parent_model.py) — and freezing the encoder for the first epochs.

The weights are loaded before any raster is read, so that a wrong file or an impossible
download stops the training at once; they are copied into the network once it is built
(after the seeded random initialisation, which they replace)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from .config import TrainingConfig
from .encoder_weights import encoder_start, weights_kind
from .errors import InvalidParameterError
from .parameters import INIT_NORMALIZATIONS
from .parent_model import Parent, carry_weights, load_parent
from .rasters import describe


@dataclass
class StartingPoint:
    encoder: Optional[Tuple[Dict[str, torch.Tensor], dict]] = None   # (state, record)
    parent: Optional[Parent] = None


def check_start_parameters(config: TrainingConfig) -> None:
    kind = weights_kind(config.encoder_weights)
    if config.init_model and kind not in ("none", "auto"):   # auto gives way to INIT_MODEL
        raise InvalidParameterError(
            "Give either INIT_MODEL (fine-tune a Berunda model) or ENCODER_WEIGHTS (pretrained "
            "encoder weights), not both: INIT_MODEL already holds trained encoder weights.")
    if config.init_model and not os.path.isfile(config.init_model):
        raise InvalidParameterError(f"INIT_MODEL {config.init_model} does not exist; give a "
                                    "Berunda model file (.pt) written by berunda:train.")
    if kind == "file" and not os.path.isfile(config.encoder_weights.strip()):
        raise InvalidParameterError(
            f"ENCODER_WEIGHTS {config.encoder_weights!r} is neither none, imagenet, auto nor an "
            "existing file; give the path of an encoder weights file (.pth, .pt, .safetensors).")
    if config.init_normalization not in INIT_NORMALIZATIONS:
        raise InvalidParameterError(f"INIT_NORMALIZATION must be one of "
                                    f"{', '.join(INIT_NORMALIZATIONS)} (got "
                                    f"{config.init_normalization!r}).")
    if config.freeze_encoder_epochs < 0:
        raise InvalidParameterError(f"FREEZE_ENCODER_EPOCHS must be >= 0 (got "
                                    f"{config.freeze_encoder_epochs}).")


def starting_point(config: TrainingConfig, reporter) -> StartingPoint:
    if config.init_model:
        return StartingPoint(parent=load_parent(config, reporter))
    if weights_kind(config.encoder_weights) == "none":
        return StartingPoint()
    if not config.labeled_images:
        raise InvalidParameterError("LABELED_IMAGES is empty: give at least one annotated image.")
    bands = describe(config.labeled_images[0]).count
    return StartingPoint(encoder=encoder_start(config.encoder, config.encoder_weights, bands,
                                               reporter))


def initialise_network(net, start: StartingPoint, classes, task_id: str, reporter) -> dict:
    """Copy the starting weights into ``net``; the record the model file keeps."""
    if start.parent is not None:
        return carry_weights(net, start.parent, classes, task_id, reporter)
    if start.encoder is not None:
        state, record = start.encoder
        # torch's own strict loader (some smp encoders override load_state_dict)
        torch.nn.Module.load_state_dict(net.unet.encoder, state)
        return dict(record)
    return {"encoder_weights": "none"}


def set_encoder_frozen(net, frozen: bool) -> bool:
    """Freeze (or release) the encoder's weights; True when that changed anything."""
    params = list(net.unet.encoder.parameters())
    changed = any(p.requires_grad == frozen for p in params)
    for p in params:
        p.requires_grad_(not frozen)
    return changed
