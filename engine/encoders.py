"""ENCODER: any segmentation-models-pytorch encoder, checked before any work so that a
typo gets the closest names instead of a traceback deep inside smp."""
from __future__ import annotations

import difflib
from typing import List

from .errors import InvalidParameterError
from .parameters import COMMON_ENCODERS


def encoder_names() -> List[str]:
    """smp's own encoders and ``tu-<name>`` for every timm model (smp's universal encoder)."""
    from segmentation_models_pytorch.encoders import get_encoder_names

    names = list(get_encoder_names())
    try:
        import timm

        names += ["tu-" + m for m in timm.list_models()]
    except ImportError:   # timm is an smp dependency; without it only smp's own names
        pass
    return names


def check_encoder(name: str) -> None:
    names = encoder_names()
    if name in names:
        return
    by_lower = {n.lower(): n for n in names}
    close = [by_lower[n] for n in difflib.get_close_matches(str(name).lower(), list(by_lower),
                                                             n=5, cutoff=0.6)]
    hint = (f"Did you mean {', '.join(close)}? " if close else "")
    raise InvalidParameterError(
        f"ENCODER {name!r} is not a segmentation-models-pytorch encoder. {hint}Common "
        f"encoders: {', '.join(COMMON_ENCODERS)}; any smp encoder name works (timm models as "
        "tu-<name>).")
