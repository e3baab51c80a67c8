"""Export a Berunda model to ONNX, for Deepness (the QGIS inference plugin) and any
ONNX runtime: only the inference path (encoder, decoder, supervised head, soft-max),
never the auxiliary heads, with Berunda's preprocessing inside the graph.

What the graph expects — the way Deepness feeds every model:
    input "input": float32 (batch, bands, tile, tile), each band's raster value ÷ 255,
    bands in the order of the training images (UInt8: 0–1; UInt16: 0–257; Float32: the
    reflectance ÷ 255).
Inside, the graph multiplies by 255 (and rounds, for integer models: exact for any value a
16-bit band holds), marks a pixel invalid where a band is NaN/inf or where every band equals
the training images' nodata (GDAL's all-bands rule, as ``rasters.valid_mask``; an alpha or
mask band is not part of the input), clips each band to the stored 0.5–99.5 percentiles,
standardises with the stored mean and std and sets invalid pixels to 0 (as
``normalization.normalize``).
Output "probabilities": float32 (batch, classes, tile, tile), the soft-max; channel i is
the model's i-th class (``class_names`` in the metadata).
Shapes: the batch is dynamic; height and width are fixed to the tile size, because Deepness
takes its tile size from the input shape and needs it square and fixed.
"""
from __future__ import annotations

import inspect
import io
import os
import warnings
from typing import Optional

import numpy as np
import torch
from torch import nn

from .atomic import atomic_output
from .errors import Cancelled, ExportError, InvalidParameterError, MissingDependencyError, \
    ModelFileError, OutputError
from .inference import NETWORK_STRIDE, check_outputs
from .model_file import load_model
from .normalization import normalize
from .onnx_check import Comparison, compare, rounding_tolerance
from .onnx_metadata import deepness_metadata, training_resolution
from .progress import Reporter
from .rasters import dtype_family, valid_mask

DEFAULT_OPSET = 17      # onnxruntime >= 1.13 (Deepness installs a recent one)
MIN_OPSET = 11          # Round (integer models) needs 11
MAX_TILE = 4096
INPUT_SCALE = 255.0     # Deepness divides every band by 255
ONNX_PIP = "onnx==1.23.1 onnxruntime==1.30.0"   # requirements/onnx.txt
PROTOBUF_LIMIT = 2_000_000_000   # one ONNX file without external data


class DeepnessGraph(nn.Module):
    """value ÷ 255 -> Berunda's normalisation -> encoder, decoder, supervised head -> soft-max."""

    def __init__(self, unet: nn.Module, stats: dict, family: str, nodata: Optional[float]):
        super().__init__()
        self.encoder, self.decoder, self.head = unet.encoder, unet.decoder, unet.segmentation_head
        self.integer = family in ("uint", "int")
        self.nodata = None if nodata is None else float(nodata)
        for key in ("low", "high", "mean", "std"):
            self.register_buffer(key, torch.tensor(stats[key], dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = x * INPUT_SCALE
        if self.integer:
            raw = torch.round(raw)   # exact raster values: nodata compares exactly
        valid = torch.isfinite(raw).all(dim=1, keepdim=True)
        if self.nodata is not None:
            if self.integer:
                hit = raw == self.nodata
            else:   # ÷255 then ×255 in float32 moves a value by a few ulps
                hit = torch.abs(raw - self.nodata) <= 1e-5 * max(1.0, abs(self.nodata))
            valid = valid & ~hit.all(dim=1, keepdim=True)   # nodata only in EVERY band
        norm = (torch.minimum(torch.maximum(raw, self.low), self.high) - self.mean) / self.std
        norm = torch.where(valid, norm, torch.zeros_like(norm))
        logits = self.head(self.decoder(self.encoder(norm)))
        return torch.softmax(logits, dim=1)


def export_onnx(model_path: str, output_path: str, tile_size: Optional[int] = None,
                opset: Optional[int] = None, reporter: Optional[Reporter] = None) -> dict:
    """Write ``output_path`` (.onnx) from the Berunda model ``model_path``; returns plain values
    (paths, numbers, strings) describing the export.  Nothing is written unless the whole
    export (and its onnxruntime check, when onnxruntime is installed) succeeds."""
    reporter = reporter or Reporter()
    onnx = _import_onnx()
    _check_output(model_path, output_path)
    package = load_model(model_path)
    if package.checkpoint is not None:
        raise ModelFileError(
            f"{model_path} is a training checkpoint (it holds optimizer state for RESUME), not a "
            "final model. Export the model file berunda:train wrote as OUTPUT_MODEL.")
    meta = package.metadata
    tile = _tile(tile_size if tile_size else meta["tile_size"], reporter)
    opset = _opset(opset)
    bands = meta["bands"]
    family = bands.get("dtype_family") or dtype_family(bands["dtype"])
    net = package.build_network("cpu")
    graph = DeepnessGraph(net.unet, meta["normalization"], family, bands.get("nodata")).eval()
    weight_bytes = sum(p.numel() * 4 for p in graph.parameters())
    if weight_bytes > PROTOBUF_LIMIT:
        raise ExportError(f"The network's weights ({weight_bytes / 1e9:.1f} GB) exceed what one "
                          "ONNX file can hold (2 GB); export a model with a smaller ENCODER.")
    _step(reporter, 0.1)

    data = _export_bytes(graph, int(bands["count"]), tile, opset)
    _step(reporter, 0.5)
    proto = onnx.load_from_string(data)
    _fix_output_shape(proto, len(meta["classes"]["values"]), tile)
    resolution, source = training_resolution(meta)
    described = input_description(bands, family)
    for key, value in deepness_metadata(meta, tile, resolution, described).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.doc_string = "berunda", described["summary"]
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"The exported graph failed ONNX's check ({exc}); nothing was "
                          "written.") from None
    data = proto.SerializeToString()
    _step(reporter, 0.6)

    check = _check_with_onnxruntime(data, meta, net, tile, family, reporter)
    _step(reporter, 0.9)
    try:
        with atomic_output(output_path) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(data)
    except OSError as exc:
        raise OutputError(f"Cannot write {output_path}: {exc.strerror or exc}.") from None
    reporter.progress(1.0)

    _report(reporter, output_path, tile, opset, meta, family, resolution, source, check)
    return {
        "output": output_path, "bytes": len(data), "tile_size": tile, "opset": opset,
        "bands": int(bands["count"]), "band_dtype": bands["dtype"],
        "classes": list(meta["classes"].get("names") or []),
        "class_values": [int(v) for v in meta["classes"]["values"]],
        "dynamic_batch": True, "dynamic_height_width": False,
        "input": described["summary"], "deepness_faithful": bands["dtype"] == "uint8",
        "resolution_cm": resolution, "resolution_source": source,
        "checked": check is not None,
        "max_difference": check.max_difference if check else None,
        "tolerance": check.tolerance if check else None,
        "class_agreement": check.agreement if check else None,
    }


def input_description(bands: dict, family: str) -> dict:
    count = int(bands["count"])
    summary = (f"input: float32 (batch, {count}, tile, tile), each band's raster value / 255 "
               f"({bands['dtype']} bands in the training order, as Deepness feeds them); "
               "output 'probabilities': float32 (batch, classes, tile, tile) soft-max")
    return {"layout": "NCHW", "dtype": "float32", "scale": "raster value / 255",
            "bands": count, "band_dtype": bands["dtype"], "dtype_family": family,
            "nodata": bands.get("nodata"), "summary": summary}


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError(
            "Exporting to ONNX needs the Python package onnx (and onnxruntime to check the "
            f"result). Install them: python -m pip install {ONNX_PIP} (with the Python that runs "
            "Berunda; in QGIS: berunda:install_dependencies with WITH_ONNX).") from None
    return onnx


def _check_output(model_path: str, output_path: str) -> None:
    if not output_path:
        raise OutputError("OUTPUT: give the .onnx file to write.")
    if os.path.isdir(output_path):
        raise OutputError(f"The ONNX output {output_path} is a folder; give a .onnx file name.")
    if not output_path.lower().endswith(".onnx"):
        raise OutputError(f"The ONNX output {output_path} must end in .onnx (Deepness and ONNX "
                          "runtimes look for that extension).")
    check_outputs(model_path, None, {"ONNX output": output_path})


def _tile(requested, reporter: Reporter) -> int:
    try:
        value = int(requested)
    except (TypeError, ValueError):
        value = 0
    if value != requested or not NETWORK_STRIDE <= value <= MAX_TILE:
        raise InvalidParameterError(f"TILE_SIZE must be a whole number of pixels from "
                                    f"{NETWORK_STRIDE} to {MAX_TILE} (got {requested!r}).")
    rounded = -(-value // NETWORK_STRIDE) * NETWORK_STRIDE
    if rounded != value:
        reporter.info(f"Tile size {value} is not a multiple of {NETWORK_STRIDE} (the network's "
                      f"stride); exporting {rounded}.")
    return rounded


def _opset(opset) -> int:
    from torch.onnx import _constants

    highest = int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", DEFAULT_OPSET))
    value = DEFAULT_OPSET if opset in (None, 0) else opset
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not MIN_OPSET <= value <= highest:
        raise InvalidParameterError(f"OPSET must be a whole number from {MIN_OPSET} to {highest} "
                                    f"(got {opset!r}); {DEFAULT_OPSET} suits Deepness.")
    return int(value)


def _step(reporter: Reporter, fraction: float) -> None:
    if reporter.cancelled():
        raise Cancelled("Export cancelled; nothing was written.")
    reporter.progress(fraction)


def _export_bytes(graph: nn.Module, bands: int, tile: int, opset: int) -> bytes:
    buffer = io.BytesIO()
    kwargs = dict(input_names=["input"], output_names=["probabilities"], opset_version=opset,
                  dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}},
                  do_constant_folding=True)
    # The TorchScript exporter needs only torch (the newer one needs onnxscript too).
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")   # the exporter's deprecation and tracer notes
        torch.onnx.export(graph, (torch.zeros(1, bands, tile, tile),), buffer, **kwargs)
    return buffer.getvalue()


def _fix_output_shape(proto, classes: int, tile: int) -> None:
    """Declare (batch, classes, tile, tile): Deepness reads the output shape and needs it square
    (the exporter's own shape guess for the soft-max is symbolic)."""
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    for dim, value in zip(list(dims)[1:], (classes, tile, tile)):
        dim.ClearField("dim_param")
        dim.dim_value = value


def deepness_feed(raw: np.ndarray) -> np.ndarray:
    """What Deepness hands the model for raster values ``raw`` (its own ÷ 255, in float32)."""
    return np.float32(raw * (1.0 / INPUT_SCALE))


def _check_with_onnxruntime(data: bytes, meta: dict, net: nn.Module, tile: int, family: str,
                            reporter: Reporter) -> Optional[Comparison]:
    """Run a synthetic tile (values around and beyond the training range, some nodata) through
    onnxruntime fed the Deepness way and through Berunda's own path; refuse a graph whose
    soft-max differs by more than float32 rounding explains (onnx_check)."""
    try:
        import onnxruntime as ort
    except ImportError:
        reporter.warning("onnxruntime is not installed: the exported file was not checked against "
                         f"Berunda's torch path (python -m pip install {ONNX_PIP}).")
        return None
    raw = _probe_tile(meta, tile, family)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        onnx_probs = session.run(None, {"input": deepness_feed(raw[None])})[0][0]
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime could not run the exported graph ({exc}); nothing was "
                          "written. Try another OPSET.") from None
    nodata = meta["bands"].get("nodata")
    valid = valid_mask(raw, nodata)
    x = normalize(raw, valid, meta["normalization"])
    with torch.inference_mode():
        logits = net(torch.from_numpy(x[None])).seg.float()
        torch_probs = torch.softmax(logits, dim=1)[0].numpy()
    # net.unet (encoder, decoder, supervised head) is what the exported graph runs
    tolerance = rounding_tolerance(net.unet, float(logits.abs().max()))
    result = compare(onnx_probs, torch_probs, valid, tolerance)
    if not result.passed:
        raise ExportError(
            f"The exported graph does not compute what Berunda computes: {result.words()}. "
            "Nothing was written. Report this with the model's versions (berunda:diagnostics).")
    return result


def _probe_tile(meta: dict, tile: int, family: str) -> np.ndarray:
    """(bands, tile, tile) raster values of the model's dtype spanning the clipping range."""
    stats, bands = meta["normalization"], meta["bands"]
    rng = np.random.default_rng(0)
    low, high = np.asarray(stats["low"]), np.asarray(stats["high"])
    span = np.maximum(high - low, 1.0)
    raw = rng.uniform(low - 0.2 * span, high + 0.2 * span,
                      size=(tile, tile, len(low))).transpose(2, 0, 1)
    dtype = np.dtype(bands["dtype"])
    if family in ("uint", "int"):
        info = np.iinfo(dtype)
        raw = np.clip(np.round(raw), info.min, info.max)
    raw = raw.astype(dtype)
    if bands.get("nodata") is not None:
        raw[:, :2, :] = np.asarray(bands["nodata"]).astype(dtype)   # two rows of nodata
        raw[0, 2, :] = np.asarray(bands["nodata"]).astype(dtype)    # one band only: data
    return raw


def _report(reporter, output_path, tile, opset, meta, family, resolution, source,
            check: Optional[Comparison]) -> None:
    bands = meta["bands"]
    reporter.info(f"Wrote {output_path}: opset {opset}, input (batch, {bands['count']}, {tile}, "
                  f"{tile}) = each band's value / 255 (batch dynamic, {tile} × {tile} fixed: "
                  "Deepness takes its tile size from the model).")
    if check is not None:
        reporter.info(f"Checked with onnxruntime on a test tile: {check.words()}.")
    if resolution is not None:
        reporter.info(f"Resolution {resolution:g} cm/px, from {source}.")
    else:
        reporter.warning(f"No resolution stored in the ONNX metadata: {source}. Deepness will use "
                         "the resolution set in its panel; set it to the training rasters' pixel "
                         "size.")
    indexes = bands.get("indexes")
    if indexes and list(indexes) != list(range(1, int(bands["count"]) + 1)):
        reporter.warning(f"The model reads bands {', '.join(map(str, indexes))} of its training "
                         "images (BANDS), in this order; the ONNX graph takes those bands only. "
                         "Give Deepness a raster holding exactly them, in that order.")
    if bands.get("nodata") is not None:
        reporter.info(f"Pixels where every band equals the nodata value {bands['nodata']:g} are "
                      "computed as the band means (as in Berunda), but Deepness still gives them "
                      "a class; berunda:classify leaves them nodata.")
    if bands["dtype"] != "uint8":
        dtype = np.dtype(bands["dtype"])
        other = f"÷ {np.iinfo(dtype).max}" if family != "float" else "to 0–1 from the data range"
        reporter.warning(
            f"This model was trained on {dtype.name} bands. The graph expects each band's own "
            "value divided by 255 — what Deepness's code feeds for any band type — and undoes "
            "that exactly, but Deepness documents 8-bit input only: a layer it reads as 8-bit "
            f"colours (a rendered or composite layer), or a consumer that scales otherwise ({other}), "
            "would silently misclassify. Classify such rasters with berunda:classify, or compare "
            "the ONNX result with berunda:classify on a sample first.")
