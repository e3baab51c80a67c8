"""Classify a raster of any size with a Berunda model: sliding window on a global
tile grid, overlapping tiles blended, streamed block by block.

Pipeline: a reader thread reads a block (plus the tiles' margins), pads it by
reflection outside the raster and cuts normalised tiles into batches; the
calling thread runs the network and accumulates weighted soft-max
probabilities into the block; a writer thread writes finished blocks.  Queues
are bounded and a block's size depends on the tile and class count only, so
memory does not grow with the raster.  Tiles shared with the next block of the
same block row are kept instead of recomputed; tiles shared with the next block
row are recomputed (about one tile row per block row, see ``BlockPlan``).

Tile size and overlap: see ``inference_tile`` (by default a tile larger than the
training tile, sized for the device, and an overlap of a quarter of the training
tile, in pixels).
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

import numpy as np
import torch

from .atomic import atomic_raster_output, ensure_folder, write_failure_message
from .background import ReadAhead, WriteBehind
from .categories import class_encoding, write_category_names
from .class_writer import ClassWriter
from .devices import resolve_device
from .errors import Cancelled, InvalidParameterError, ModelFileError, OutputError, RasterError
from .inference_tile import NETWORK_STRIDE, choose_tile, overlap_pixels
from .model_file import ModelPackage, load_model
from .normalization import normalize
from .progress import Reporter
from .rasters import RasterInfo, describe, dtype_family, open_raster, read_checked, valid_mask
from .tiling import BlockPlan

PROBABILITY_DTYPES = ("float32", "uint8")
READ_AHEAD_BATCHES = 3
WRITE_BEHIND_BLOCKS = 1
BLOCK_BUDGET_BYTES = 64 << 20   # a block's probability accumulator (classes + 1 planes)


@dataclass
class ClassifyResult:
    output: str
    probabilities: Optional[str]
    confidence: Optional[str]
    pixels: int                  # raster width x height
    seconds: float
    classes: List[int]           # class values, in the order of the probability bands
    class_pixels: Dict[int, int] = field(default_factory=dict)   # classified pixels per value
    nodata: Optional[int] = None  # the output's nodata value
    tiles: int = 0               # network forward passes (tiles)


def classify_raster(input_path: str, model: Union[str, ModelPackage], output_path: str, *,
                    tile_size: Optional[int] = None, overlap: Union[int, float, None] = None,
                    batch_size: int = 4, device: str = "auto",
                    probabilities_path: Optional[str] = None,
                    probabilities_dtype: str = "float32",
                    confidence_path: Optional[str] = None,
                    reporter: Optional[Reporter] = None) -> ClassifyResult:
    reporter = reporter or Reporter()
    start = time.perf_counter()
    package = model if isinstance(model, ModelPackage) else load_model(model)
    meta = package.metadata
    info = describe(input_path)
    check_compatible(info, meta)
    check_outputs(input_path, package.path,
                  {"output": output_path, "probabilities output": probabilities_path,
                   "confidence output": confidence_path})
    probabilities_dtype = str(probabilities_dtype).lower()
    if probabilities_dtype not in PROBABILITY_DTYPES:
        raise InvalidParameterError(f"Probability data type {probabilities_dtype!r} is unknown; "
                                    f"use {' or '.join(PROBABILITY_DTYPES)}.")
    if int(batch_size) < 1:
        raise InvalidParameterError(f"BATCH_SIZE must be at least 1 (got {batch_size}).")
    classes = meta["classes"]
    values = [int(v) for v in classes["values"]]
    if len(values) != int(meta["architecture"]["num_classes"]):
        raise ModelFileError(f"The model lists {len(values)} classes but its network outputs "
                             f"{meta['architecture']['num_classes']}; the file is damaged.")
    names = list(classes.get("names") or [f"class {v}" for v in values])
    torch_device = resolve_device(device)
    tile, how = choose_tile(tile_size, meta["tile_size"], torch_device, int(batch_size), reporter)
    plan = BlockPlan(info.height, info.width, tile, overlap_pixels(overlap, tile, meta["tile_size"]),
                     NETWORK_STRIDE, len(values), BLOCK_BUDGET_BYTES)
    reporter.info(f"Tiles of up to {tile} px ({how}), overlap {plan.overlap} px.")
    net = package.network(str(torch_device))
    out_dtype, out_nodata = class_encoding(values, classes.get("nodata"))

    outputs = [p for p in (output_path, probabilities_path, confidence_path) if p]
    needed = info.width * info.height * (np.dtype(out_dtype).itemsize + (4 if confidence_path else 0)
                                         + (len(values) * np.dtype(probabilities_dtype).itemsize
                                            if probabilities_path else 0))
    tags = {"BERUNDA_MODEL": package.path or "", "BERUNDA_MODEL_CREATED":
            meta.get("created", ""), "BERUNDA_TASK": meta["task"].get("id", "")}
    try:
        with contextlib.ExitStack() as stack:
            tmp = {key: stack.enter_context(_raster_output(path)) if path else None
                   for key, path in (("output", output_path), ("probabilities", probabilities_path),
                                     ("confidence", confidence_path))}
            with open_raster(input_path) as src:
                georef = {"crs": src.crs, "transform": src.transform}
            writer = ClassWriter(plan, georef, values, names, classes.get("colors") or [],
                                 tmp["output"], out_dtype, out_nodata, tmp["probabilities"],
                                 probabilities_dtype, tmp["confidence"], tags)
            stack.callback(writer.close)   # closed before the renames (ExitStack: reverse order)
            tiles = _classify(plan, input_path, meta["normalization"], net, torch_device,
                              int(batch_size), writer, reporter)
            writer.close()
            if not write_category_names(tmp["output"], values, names, out_nodata):
                reporter.info("Class names were not stored as GDAL category names (GDAL's Python "
                              "bindings are unavailable, or class values exceed 0..65535).")
    except OSError as exc:   # writing failed (read errors are RasterErrors by now)
        raise OutputError(write_failure_message(
            "classification output" + ("s" if len(outputs) > 1 else ""), outputs, needed, exc,
            "no output was written")) from None
    seconds = time.perf_counter() - start
    mpx = info.width * info.height / 1e6
    reporter.info(
        f"Classified {info.name} ({info.width}x{info.height} px, {mpx:.2f} Mpx) in "
        f"{seconds:.1f} s: {mpx / max(seconds, 1e-9):.2f} Mpx/s on {torch_device}; {tiles} tiles "
        f"of {plan.rows.tile}x{plan.cols.tile} px, overlap {plan.overlap} px.")
    return ClassifyResult(output_path, probabilities_path, confidence_path,
                          info.width * info.height, seconds, values,
                          {v: int(n) for v, n in zip(values, writer.counts)}, out_nodata, tiles)


def check_compatible(info: RasterInfo, meta: dict) -> None:
    """Refuse a raster whose bands differ from the training images' (count, dtype family)."""
    bands = meta["bands"]
    count = int(bands["count"])
    family = bands.get("dtype_family") or dtype_family(bands["dtype"])
    if info.count != count or info.dtype_family != family:
        raise RasterError(
            f"The model expects {count} band{'s' if count != 1 else ''} of {family} type; "
            f"{info.name} has {info.count} band{'s' if info.count != 1 else ''} of "
            f"{info.dtype_family} ({info.dtype}). Use a raster with the same bands, in the same "
            "order, as the training images.")


def check_outputs(input_path: str, model_path: Optional[str],
                  outputs: Dict[str, Optional[str]]) -> None:
    """Each output is a new, writable file: not an input, not another output; missing
    folders are created."""
    seen: Dict[str, str] = {}
    for label, path in outputs.items():
        if not path:
            continue
        for what, other in (("input raster", input_path), ("model file", model_path)):
            if other and _same_file(path, other):
                raise OutputError(f"The {label} {path} is the {what}; Berunda never overwrites "
                                  "its inputs. Choose another file name.")
        for other_label, other in seen.items():
            if _same_file(path, other):
                raise OutputError(f"The {label} and the {other_label} are the same file {path}; "
                                  "give each output its own name.")
        seen[label] = path
    for label, path in seen.items():
        ensure_folder(path, label)


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)   # hard links, case-insensitive file systems
    except OSError:
        return False


@contextlib.contextmanager
def _raster_output(path: str):
    try:
        cm = atomic_raster_output(path)
        tmp = cm.__enter__()
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc.strerror or exc}.") from None
    with contextlib.ExitStack() as stack:
        stack.push(cm.__exit__)
        yield tmp


# --- reader thread ------------------------------------------------------------

@dataclass
class _BlockStart:
    block: object
    valid: np.ndarray     # (h, w) input pixels holding data
    skipped: int          # tiles of the block that hold no data at all


@dataclass
class _Batch:
    keys: list            # (tile row, tile col) of each tile
    x: np.ndarray         # (n, bands, tile_h, tile_w) normalised, float32


class _BlockEnd:
    pass


def _read_blocks(plan: BlockPlan, path: str, stats: dict, batch_size: int):
    from rasterio.windows import Window

    th, tw = plan.tile_shape
    with open_raster(path) as ds:
        for block in plan.blocks():
            # Extent of every tile touching the block; outside the raster it is reflected.
            e_r0, e_c0 = plan.rows.start(block.tile_rows[0]), plan.cols.start(block.tile_cols[0])
            e_r1 = plan.rows.start(block.tile_rows[-1]) + th
            e_c1 = plan.cols.start(block.tile_cols[-1]) + tw
            r0, r1 = max(e_r0, 0), min(e_r1, ds.height)
            c0, c1 = max(e_c0, 0), min(e_c1, ds.width)
            data = read_checked(ds, Window(c0, r0, c1 - c0, r1 - r0))
            valid = valid_mask(data, ds.nodata)
            keys = []
            for ti in block.tile_rows:
                tr = plan.rows.start(ti)
                rows = slice(max(tr, r0) - r0, min(tr + th, r1) - r0)
                for tj in block.new_cols:
                    tc = plan.cols.start(tj)
                    if valid[rows, max(tc, c0) - c0:min(tc + tw, c1) - c0].any():
                        keys.append((ti, tj))   # all-nodata tiles never reach the network
            block_valid = valid[block.r0 - r0:block.r1 - r0, block.c0 - c0:block.c1 - c0].copy()
            yield _BlockStart(block, block_valid,
                              len(block.tile_rows) * len(block.new_cols) - len(keys))
            if keys:
                # Reflect the raw block (raster dtype), normalise tile by tile: the only
                # float arrays are the batches, whatever the block size.
                pad = ((r0 - e_r0, e_r1 - r1), (c0 - e_c0, e_c1 - c1))
                data = np.pad(data, ((0, 0),) + pad, mode="reflect")
                valid = np.pad(valid, pad, mode="reflect")
                for i in range(0, len(keys), batch_size):
                    chunk = keys[i:i + batch_size]
                    tiles = []
                    for ti, tj in chunk:
                        rows = slice(plan.rows.start(ti) - e_r0, plan.rows.start(ti) - e_r0 + th)
                        cols = slice(plan.cols.start(tj) - e_c0, plan.cols.start(tj) - e_c0 + tw)
                        tiles.append(normalize(data[:, rows, cols], valid[rows, cols], stats))
                    yield _Batch(chunk, np.stack(tiles))
            del data, valid   # before reading the next block
            yield _BlockEnd()


# --- compute (calling thread) -----------------------------------------------------

class _Accumulator:
    """Weighted sum of tile probabilities over one block, on the device."""

    def __init__(self, plan: BlockPlan, block, classes: int, weights: torch.Tensor):
        self.plan, self.block, self.weights = plan, block, weights
        shape = (block.r1 - block.r0, block.c1 - block.c0)
        self.sum = torch.zeros((classes,) + shape, device=weights.device)
        self.weight = torch.zeros(shape, device=weights.device)

    def add(self, key, probs: torch.Tensor) -> None:
        b, (th, tw) = self.block, self.plan.tile_shape
        r, c = self.plan.rows.start(key[0]), self.plan.cols.start(key[1])
        r0, r1, c0, c1 = max(r, b.r0), min(r + th, b.r1), max(c, b.c0), min(c + tw, b.c1)
        if r1 <= r0 or c1 <= c0:
            return
        w = self.weights[r0 - r:r1 - r, c0 - c:c1 - c]
        self.sum[:, r0 - b.r0:r1 - b.r0, c0 - b.c0:c1 - b.c0].addcmul_(
            probs[:, r0 - r:r1 - r, c0 - c:c1 - c], w)
        self.weight[r0 - b.r0:r1 - b.r0, c0 - b.c0:c1 - b.c0] += w

    def finish(self, valid: np.ndarray, probabilities: bool, confidence: bool):
        covered = self.weight > 0
        self.sum /= self.weight.clamp_min(1e-12)
        conf, index = self.sum.max(dim=0)
        index = index.to(torch.uint8 if self.sum.shape[0] <= 256 else torch.int32)
        return (self.block, index.cpu().numpy(), valid & covered.cpu().numpy(),
                self.sum.cpu().numpy() if probabilities else None,
                conf.cpu().numpy() if confidence else None)


def _predict(net, x: np.ndarray, device: torch.device) -> torch.Tensor:
    batch = torch.from_numpy(x).to(device, non_blocking=True)
    amp = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" \
        else contextlib.nullcontext()
    try:
        with amp:
            logits = net(batch).seg
    except torch.cuda.OutOfMemoryError:
        raise InvalidParameterError(
            "The GPU ran out of memory; lower BATCH_SIZE or TILE_SIZE.") from None
    return torch.softmax(logits.float(), dim=1)


def _classify(plan: BlockPlan, path: str, stats: dict, net, device: torch.device,
              batch_size: int, writer: ClassWriter, reporter: Reporter) -> int:
    """Run every block through the network; returns the number of tiles computed."""
    weights = torch.from_numpy(plan.weights()).to(device)
    classes = int(writer.classes)
    total = max(plan.total_tiles(), 1)
    done = computed = 0
    cache: Dict[tuple, torch.Tensor] = {}   # tiles the next block of the row shares
    acc = valid = None
    reader = ReadAhead(lambda: _read_blocks(plan, path, stats, batch_size), READ_AHEAD_BATCHES)
    write = WriteBehind(writer.write, WRITE_BEHIND_BLOCKS)
    try:
        with torch.inference_mode():
            for msg in reader:
                if reporter.cancelled():
                    raise Cancelled("Classification cancelled; no output was written.")
                if isinstance(msg, _BlockStart):
                    acc, valid = _Accumulator(plan, msg.block, classes, weights), msg.valid
                    for key, probs in cache.items():
                        acc.add(key, probs)
                    cache = {k: p for k, p in cache.items() if k[1] in msg.block.keep_cols}
                    done += msg.skipped
                elif isinstance(msg, _Batch):
                    probs = _predict(net, msg.x, device)
                    for key, p in zip(msg.keys, probs):
                        acc.add(key, p)
                        if key[1] in acc.block.keep_cols:
                            cache[key] = p.clone()
                    done += len(msg.keys)
                    computed += len(msg.keys)
                    reporter.progress(min(done / total, 1.0))
                else:
                    write.submit(acc.finish(valid, writer.probabilities, writer.confidence))
                    acc = valid = None
                    reporter.progress(min(done / total, 1.0))
        write.finish()
    finally:
        reader.close()
        write.close()
    return computed
