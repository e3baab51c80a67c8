"""Choosing the torch device from the DEVICE parameter (auto / cuda / cpu)."""
from __future__ import annotations

import torch

from .errors import InvalidParameterError


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidParameterError(
                "DEVICE is cuda but no usable CUDA GPU was found (torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}). Use DEVICE=auto "
                "or cpu, or install a CUDA build of torch matching your driver.")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise InvalidParameterError(f"DEVICE {name!r} is unknown; use auto, cuda or cpu.")
