"""Berunda model files: weights plus a self-describing JSON header.

Layout (one ``torch.save`` archive, loadable with ``weights_only=True`` so that
opening a model can never run code):

    {"berunda": <JSON string: metadata>, "state_dict": {name: tensor},
     "checkpoint": {"optimizer": ..., "scaler": ..., "epoch": int}   # checkpoints only}

The metadata carries everything inference needs (see ``REQUIRED_KEYS``) and
the training record (config, seed, loss history, validation, versions).
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch

from .atomic import atomic_output, write_failure_message
from .errors import ModelFileError, OutputError

FORMAT_NAME = "berunda-model"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("architecture", "bands", "normalization", "classes", "tile_size", "task")


@dataclass
class ModelPackage:
    metadata: Dict[str, Any]
    state_dict: Dict[str, torch.Tensor]
    checkpoint: Optional[Dict[str, Any]] = None   # optimizer/scaler state and epoch
    path: Optional[str] = None                    # the file it was loaded from
    _networks: Dict[str, Any] = field(default_factory=dict, init=False, repr=False,
                                      compare=False)

    def network(self, device: str = "cpu"):
        """The network in eval mode, built once per device (classifying many rasters
        with one package, e.g. validation scoring, pays for it once)."""
        if device not in self._networks:
            self._networks[device] = self.build_network(device)
        return self._networks[device]

    def build_network(self, device: str = "cpu"):
        from ..models.network import build_network

        net = build_network(self.metadata["architecture"])
        try:
            net.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise ModelFileError(
                f"The model's weights do not match its declared architecture ({exc}). "
                "The file is damaged or was edited; retrain or use another copy."
            ) from None
        return net.to(device).eval()


def save_model(path: str, package: ModelPackage) -> None:
    """Write atomically: a crash or cancel never leaves a half-written model."""
    metadata = dict(package.metadata)
    metadata["format"] = FORMAT_NAME
    metadata["format_version"] = FORMAT_VERSION
    payload = {
        "berunda": json.dumps(metadata),
        "state_dict": {k: v.detach().cpu() for k, v in package.state_dict.items()},
    }
    if package.checkpoint is not None:
        payload["checkpoint"] = package.checkpoint
    existed = os.path.exists(path)
    try:
        with atomic_output(path) as tmp:
            torch.save(payload, tmp)
    except (OSError, RuntimeError) as exc:   # torch reports a full disk as a RuntimeError
        kept = f"the existing {path} is unchanged" if existed else "nothing was written"
        what = "checkpoint" if package.checkpoint is not None else "model"
        raise OutputError(write_failure_message(what, [path], _payload_bytes(payload), exc,
                                                kept)) from None


def _payload_bytes(value) -> int:
    """Bytes of the tensors in a (nested) payload: about the size of the file."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_payload_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_payload_bytes(v) for v in value)
    return len(value) if isinstance(value, str) else 0


def load_model(path: str) -> ModelPackage:
    """Load and validate a model or checkpoint; raise ModelFileError with the reason."""
    if not os.path.isfile(path):
        raise ModelFileError(f"Model file {path} does not exist.")
    if not zipfile.is_zipfile(path):   # torch.save writes zip archives; garbage, truncated
        raise ModelFileError(            # downloads and other formats stop here
            f"{path} is not a readable Berunda model (truncated or another format). "
            "Use the file written by berunda:train.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(
            f"Refused to load {path}: it is not a plain Berunda model and contains objects "
            f"that could run code when opened ({str(exc).splitlines()[0]}). "
            "Only load models you trained with Berunda."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError,
            KeyError, TypeError) as exc:   # what a damaged archive's pickle can raise
        raise ModelFileError(
            f"{path} is not a readable Berunda model (truncated or another format: {exc}). "
            "Use the file written by berunda:train."
        ) from None
    if not isinstance(payload, dict) or "berunda" not in payload or "state_dict" not in payload:
        raise ModelFileError(
            f"{path} is a PyTorch file but not a Berunda model (no Berunda header). "
            "Use a model written by berunda:train."
        )
    try:
        metadata = json.loads(payload["berunda"])
    except (TypeError, ValueError):
        raise ModelFileError(f"{path}: the Berunda header is damaged; retrain the model.") from None
    if metadata.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path} is not a Berunda model (format {metadata.get('format')!r}).")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written by a newer Berunda (model format {version}; this version "
            f"reads format {FORMAT_VERSION} and older). Update the Berunda plugin."
        )
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise ModelFileError(f"{path}: the model header lacks {', '.join(missing)}; retrain it.")
    return ModelPackage(metadata, payload["state_dict"], payload.get("checkpoint"), path)
