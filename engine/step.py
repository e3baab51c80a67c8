"""One optimiser step of L = Ls + λ·Lu, cut into micro-batches if CUDA memory runs out.

The task's hooks (models/tasks/base.py) run in a fixed order; this module never
looks at which task it is:

    prepare (CPU, the whole step) -> before_step (once, no gradient)
    -> per micro-batch: forward, Ls, Lu, balance.backward -> optimiser step -> after_step

Ls of a micro-batch is its loss sum divided by the labelled pixels of the
*whole step*, so that micro-batches add up to the step's Ls however the labeled and
unlabeled tiles fall into them.  Without a split, L is exactly Ls + λ·Lu.
"""
from __future__ import annotations

import math

import torch

from ..models import IGNORE_INDEX
from ..models.losses import supervised_loss
from ..models.tasks import PreparedBatch


def train_step(net, optimizer, scaler, task, balance, semi, batch, gen, device, use_amp,
               micro, reporter, ranks=None, criterion=supervised_loss) -> dict:
    """``micro``: a one-element list holding the tiles per forward pass (None = the whole
    step), halved here on a CUDA out-of-memory error and kept for the next steps.
    ``ranks`` (engine/distributed.py): under torchrun, gradients and loss values are averaged
    over the ranks once the step's backward passes are done.  ``criterion``: the supervised
    loss (models/losses.py, SUPERVISED_LOSS)."""
    images, labels, valid = batch
    n = images.shape[0]
    # Prepared once (on the whole batch, on the CPU): an out-of-memory retry reuses the same
    # masks/shuffles/views, so the random stream does not depend on the split.
    prepared = (task.prepare(images, labels, valid, gen) if semi
                else PreparedBatch(images, images, labels, valid))
    labelled = (prepared.labels != IGNORE_INDEX).sum().to(device)
    before_done = False
    while True:
        size = micro[0] or n
        try:
            if semi and not before_done:
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    task.before_step(net, prepared, device, micro[0])
                before_done = True
            optimizer.zero_grad(set_to_none=True)
            parts = {"supervised": 0.0, "auxiliary": 0.0, "correct": 0, "labelled": 0,
                     "lambda": 0.0}
            for start in range(0, n, size):
                sl = slice(start, min(n, start + size))
                share = (sl.stop - sl.start) / n
                chunk = prepared.rows(sl, device)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    if semi:
                        out = task.forward(net, chunk)
                        ls = criterion(out.seg, chunk.labels, labelled)
                        lu = task.loss(out, chunk).float()
                    else:
                        out = net(chunk.inputs)
                        ls = criterion(out.seg, chunk.labels, labelled)
                        lu = torch.zeros((), device=device)
                ls_value, lu_value = float(ls.detach()), float(lu.detach())
                lam = balance.weight(ls_value, lu_value) if semi else 0.0
                balance.backward(scaler, ls, lu, lam, share)
                parts["supervised"] += ls_value
                parts["auxiliary"] += lu_value * share
                parts["lambda"] += lam * share
                known = chunk.labels != IGNORE_INDEX
                parts["correct"] += int(((out.seg.argmax(1) == chunk.labels) & known).sum())
                parts["labelled"] += int(known.sum())
            if ranks is not None and ranks.active:
                ranks.average_gradients(net.parameters())
                parts["supervised"], parts["auxiliary"], parts["lambda"] = ranks.average(
                    [parts["supervised"], parts["auxiliary"], parts["lambda"]])
                parts["correct"], parts["labelled"] = ranks.total([parts["correct"],
                                                                   parts["labelled"]])
            parts["loss"] = parts["supervised"] + parts["lambda"] * parts["auxiliary"]
            if math.isfinite(parts["loss"]):
                scaler.step(optimizer)
                scaler.update()
                if semi:
                    task.after_step(net)
                balance.update(parts["supervised"], parts["auxiliary"], parts["lambda"])
            return parts
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            micro[0] = max(1, size // 2)
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            reporter.info(f"CUDA ran out of memory: continuing with passes of {micro[0]} of the "
                          f"step's {n} tiles (gradients accumulated to the same effective batch).")
