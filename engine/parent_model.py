"""INIT_MODEL: fine-tuning a Berunda model (its "parent").

What is carried over:
- the trunk (encoder + decoder) always; the parent must have the same encoder and bands;
- the supervised head when the labels' class values are the parent's (or a subset of
  them: the model keeps all the parent's classes, names and colours); with other classes
  it starts anew (its seeded random initialisation);
- the auxiliary head (and jigsaw classifier) when the task is the parent's and its
  tensors have the same shapes; else it starts anew.
The parent's per-band normalisation statistics are reused by default (the trunk learned
with them; INIT_NORMALIZATION=recompute computes new ones).  The new model records its
parent: file name, sha256, task and classes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict

import torch

from .config import TrainingConfig
from .errors import InvalidParameterError, ModelFileError, RasterError
from .labels import ClassInfo
from .model_file import ModelPackage, load_model

TRUNK = ("unet.encoder.", "unet.decoder.")
SUPERVISED_HEAD = ("unet.segmentation_head.",)
AUXILIARY_HEAD = ("aux_head.", "unet.classification_head.")


@dataclass
class Parent:
    path: str
    sha256: str
    package: ModelPackage

    @property
    def metadata(self) -> dict:
        return self.package.metadata

    @property
    def classes(self) -> ClassInfo:
        return ClassInfo.from_metadata(self.metadata["classes"])

    def record(self) -> dict:
        """What the new model says about its parent."""
        meta, classes = self.metadata, self.metadata["classes"]
        task = meta["task"]
        return {"file": os.path.basename(self.path), "sha256": self.sha256,
                "task": {"id": task.get("id"), "lambda": task.get("lambda")},
                "classes": {"values": classes["values"], "names": classes["names"]},
                "encoder": meta["architecture"]["encoder"], "created": meta.get("created")}


# Above this, fine-tuning measured clearly worse (bench/README.md, bench/finetune.py).
FINE_TUNING_LR = 1e-4


def load_parent(config: TrainingConfig, reporter) -> Parent:
    from .encoder_weights import sha256_of

    path = config.init_model
    try:
        package = load_model(path)
    except ModelFileError as exc:
        raise ModelFileError(f"INIT_MODEL: {exc}") from None
    encoder = package.metadata["architecture"].get("encoder")
    if encoder != config.encoder:
        raise InvalidParameterError(
            f"INIT_MODEL {os.path.basename(path)} was trained with the encoder {encoder}, and "
            f"ENCODER is {config.encoder}: its weights only fit its own encoder. Set ENCODER to "
            f"{encoder} to fine-tune it.")
    parent = Parent(path, sha256_of(path), package)
    task = parent.metadata["task"].get("id")
    reporter.info(f"Fine-tuning {os.path.basename(path)} ({encoder}, task {task}, classes "
                  f"{', '.join(map(str, parent.classes.values))}).")
    if config.learning_rate > FINE_TUNING_LR:
        reporter.warning(
            f"LEARNING_RATE {config.learning_rate:g} with INIT_MODEL: large steps make the model "
            f"forget much of what {os.path.basename(path)} learned (on the Dubai benchmark, "
            f"fine-tuning at 1e-3 gained +3.5 mIoU over training from scratch, at 1e-4 +6.6). "
            f"Keep LEARNING_RATE at {FINE_TUNING_LR:g} (the default) or lower to fine-tune.")
    return parent


def check_bands(parent: Parent, bands: dict) -> None:
    """The images must have the parent's band count and data type family."""
    own = parent.metadata["bands"]
    if int(own["count"]) != int(bands["count"]):
        raise RasterError(
            f"INIT_MODEL {os.path.basename(parent.path)} was trained on {own['count']}-band images "
            f"and these images have {bands['count']}: fine-tuning needs the same bands in the "
            "same order. (ENCODER_WEIGHTS can start a model for other bands from a 3-band "
            "encoder instead.)")
    if own.get("dtype_family") and own.get("dtype_family") != bands.get("dtype_family"):
        raise RasterError(
            f"INIT_MODEL {os.path.basename(parent.path)} was trained on {own.get('dtype')} images "
            f"and these are {bands.get('dtype')}: fine-tune on images of the same data type "
            "family (integer or float).")


def classes_for(parent: Parent, scanned: ClassInfo, reporter) -> ClassInfo:
    """The parent's classes when the labels hold no other value (all weights carried over),
    else the labels' own classes (the supervised head starts anew)."""
    own = parent.classes
    if not set(scanned.values) <= set(own.values):
        reporter.info(
            f"INIT_MODEL knows the classes {own.values}, the labels hold {scanned.values}: the "
            "encoder and decoder are carried over, the supervised head is re-initialised for the "
            "new classes.")
        return scanned
    if scanned.values != own.values:
        reporter.info(f"The labels hold the classes {scanned.values}, a subset of INIT_MODEL's "
                      f"{own.values}: the model keeps all of the parent's classes.")
    counts = dict(zip(scanned.values, scanned.pixel_counts))
    return ClassInfo(list(own.values), list(own.names), list(own.colors), scanned.nodata,
                     [counts.get(v, 0) for v in own.values], scanned.raster_pixels)


def statistics_for(parent: Parent, config: TrainingConfig, reporter):
    """The parent's normalisation statistics, or None to recompute them."""
    if config.init_normalization == "recompute":
        reporter.info("INIT_NORMALIZATION=recompute: new per-band statistics from these images "
                      "(the parent's weights learned with its own).")
        return None
    return parent.metadata["normalization"]


def carry_weights(net: torch.nn.Module, parent: Parent, classes: ClassInfo, task_id: str,
                  reporter) -> dict:
    """Copy the parent's weights into ``net``; returns what was carried over and what not."""
    src, own = parent.package.state_dict, net.state_dict()

    def group(prefixes):
        return {k: v for k, v in src.items() if k.startswith(prefixes)}

    def fits(part: Dict[str, torch.Tensor], prefixes) -> bool:
        mine = {k for k in own if k.startswith(prefixes)}
        return set(part) == mine and all(part[k].shape == own[k].shape for k in part)

    trunk = group(TRUNK)
    if not fits(trunk, TRUNK):
        raise ModelFileError(f"INIT_MODEL {os.path.basename(parent.path)}: its encoder/decoder "
                             "weights do not match its declared architecture; the file is "
                             "damaged or was edited. Use another copy.")
    new, carried, fresh = dict(own), ["encoder", "decoder"], []
    new.update(trunk)
    same_classes = list(classes.values) == list(parent.classes.values)
    head = group(SUPERVISED_HEAD)
    if same_classes and fits(head, SUPERVISED_HEAD):
        new.update(head)
        carried.append("supervised head")
    else:
        fresh.append("supervised head")
    aux = group(AUXILIARY_HEAD)
    mine_aux = [k for k in own if k.startswith(AUXILIARY_HEAD)]
    parent_task = parent.metadata["task"].get("id")
    if mine_aux and parent_task == task_id and fits(aux, AUXILIARY_HEAD):
        new.update(aux)
        carried.append("auxiliary head")
    elif mine_aux:
        fresh.append("auxiliary head")
        why = (f"the parent was trained with task {parent_task}" if parent_task != task_id
               else "its shape differs (other task settings or bands)")
        reporter.info(f"The auxiliary head of {task_id} starts anew: {why}.")
    net.load_state_dict(new)
    reporter.info(f"From INIT_MODEL: {', '.join(carried)} carried over"
                  + (f"; {', '.join(fresh)} re-initialised." if fresh else "."))
    return {"parent": parent.record(), "carried_over": carried, "reinitialised": fresh}

