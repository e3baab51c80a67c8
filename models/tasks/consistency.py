"""Consistency regularisation (FixMatch, Sohn et al. 2020; UniMatch, Yang et al. CVPR 2023):
pseudo-labels from a weak view, learned on a strong view and on perturbed features.

For the unlabeled tiles of a step (tiles without a single labelled pixel):

- **weak view** = the tile as sampled (flips/rot90 already applied).  Once per step,
  before any micro-batch split, the supervised head predicts it without gradient
  (``before_step``); a pixel whose top soft-max probability is ≥ τ (``confidence``)
  and whose image data is valid becomes a pseudo-label, every other pixel is ignored.
  Batch norm uses the batch's own statistics there without touching the running
  averages: after a few hundred steps those averages still lag the weights and
  eval-mode predictions are poor (see engine/batchnorm.py).
  Class-balanced selection (``class_balance`` ρ, default 0.2; CBST, Zou et al. ECCV 2018):
  every class predicted in the step also keeps its most confident share ρ of the pixels
  predicted as it, even below τ.  Without it a class rare in the labels (vegetation in the
  Dubai split: 1.6 % of the labelled pixels, 11 % of the ground) almost never reaches τ,
  gets no pseudo-labels and is trained away by the frequent classes' (bench/README.md).
- **strong view** (its random numbers drawn in ``prepare`` from the step's generator on the
  CPU, the view made in ``before_step`` on the training device) = photometric
  perturbations that make sense for any band count once the bands are z-scored —
  per-band gain/offset jitter, a band-mixing jitter (identity + small random matrix;
  with p = 0.2 all bands replaced by their mean), Gaussian blur, Gaussian noise —
  then **CutMix** with another unlabeled tile of the step: a random box (p = 0.5,
  2–40 % of the tile) is pasted from the partner.  The pseudo-labels, their
  confidence masks and the validity masks are mixed with the same box and partner.
- **feature perturbation** (UniMatch): a second decoder pass on the weak view's
  encoder features with channel dropout (Dropout2d, p = 0.5) on every skip level,
  trained against the un-mixed pseudo-labels.  Only while the network trains.

    Lu = ½ (CE(strong) + CE(perturbed features))

each a cross-entropy summed over the confident pixels and divided by the number
of valid unlabeled pixels of the whole step (unconfident pixels count in the
denominator, as in FixMatch, so Lu grows as the network becomes confident).  The
step-wide denominator keeps Lu the same when CUDA memory forces micro-batches.
With the supervised loss's class weights (SUPERVISED_LOSS=weighted_ce, given through
``use_class_weights``), a confident pixel's CE is weighed by its pseudo-label's class and a
valid pixel counts in the denominator with its predicted class's weight: unweighted
pseudo-labels, mostly of the frequent classes, undo the weighting (bench/README.md: −8.7 mIoU
against supervised weighted_ce on a GPU; weighted, +1.6 on the CPU medium budget).

Optional EMA teacher (``ema_decay`` > 0, mean teacher, Tarvainen & Valpola 2017):
the pseudo-labels come from an exponential moving average of the weights
(decay min(ema_decay, 1 − 1/(t+1)) at step t), saved in every checkpoint.

Per epoch, ``confident_share`` = pseudo-labelled (≥ τ or kept by the class balance) / valid
unlabeled pixels is logged and stored in the history: it says whether pseudo-labels are
used at all.

Bench knob ``paste_p`` (off by default; bench/README.md: +1.4 mIoU over the class balance
alone on 3 seeds, too few to make it the default): rare-class copy-paste of labelled pixels
into the strong view (paste_draws).
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from . import register
from .. import IGNORE_INDEX
from ..network import NetOutput
from ._common import number
from ._teacher_gate import TeacherGate
from .base import AuxiliaryTask, PreparedBatch, unlabeled_rows

FP_DROPOUT = 0.5          # UniMatch's channel dropout on the features


def _uniform(gen, lo, hi, *shape):
    return lo + (hi - lo) * torch.rand(*shape, generator=gen)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of one (C,H,W) tile, reflected borders."""
    radius = min(int(math.ceil(3 * sigma)), (min(x.shape[-2:]) - 1))
    if radius < 1:
        return x
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.device)
    c = x.shape[0]
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y[0]


def photometric_draws(gen: Optional[torch.Generator], shape, strength: float = 1.0) -> dict:
    """The random numbers of the strong photometric perturbation (``apply_photometric``) of
    tiles of ``shape`` (k, C, H, W), drawn on the CPU from ``gen``.  Every number is drawn
    whether or not its perturbation is applied, so the stream does not depend on earlier
    coin flips."""
    k, c, s = shape[0], shape[1], strength
    d = {"jitter": (torch.rand(k, generator=gen) < 0.8).view(k, 1, 1, 1)}
    d["gain"] = _uniform(gen, 1 - 0.4 * s, 1 + 0.4 * s, k, 1, 1, 1) \
        * _uniform(gen, 1 - 0.15 * s, 1 + 0.15 * s, k, c, 1, 1)
    d["offset"] = _uniform(gen, -0.4 * s, 0.4 * s, k, 1, 1, 1) \
        + _uniform(gen, -0.15 * s, 0.15 * s, k, c, 1, 1)
    d["mixing"] = torch.eye(c) + _uniform(gen, -0.15 * s, 0.15 * s, k, c, c)
    d["gray"] = (torch.rand(k, generator=gen) < 0.2).view(k, 1, 1, 1)
    d["blur"] = torch.rand(k, generator=gen) < 0.5
    d["sigma"] = _uniform(gen, 0.1, 2.0, k)
    d["noisy"] = (torch.rand(k, generator=gen) < 0.5).view(k, 1, 1, 1)
    d["noise"] = torch.randn(tuple(shape), generator=gen) * _uniform(gen, 0.0, 0.1 * s, k, 1, 1, 1)
    return d


def apply_photometric(x: torch.Tensor, valid: torch.Tensor, d: dict) -> torch.Tensor:
    """The strong photometric perturbation ``d`` (photometric_draws) of z-scored tiles
    (k, C, H, W), on x's device; invalid pixels stay 0."""
    dev = x.device
    y = torch.einsum("kij,kjhw->kihw", d["mixing"].to(x), x) * d["gain"].to(x) + d["offset"].to(x)
    y = torch.where(d["gray"].to(dev), y.mean(dim=1, keepdim=True).expand_as(y), y)
    y = torch.where(d["jitter"].to(dev), y, x)
    y = torch.stack([gaussian_blur(t, float(sg)) if b else t
                     for t, b, sg in zip(y, d["blur"], d["sigma"])])
    noise = d["noise"].to(x)
    y = y + torch.where(d["noisy"].to(dev), noise, torch.zeros_like(noise))
    return y * valid


def cutmix_boxes(k: int, h: int, w: int, gen: Optional[torch.Generator], p: float = 0.5,
                 area=(0.02, 0.4), ratio=(0.3, 1 / 0.3)) -> torch.Tensor:
    """(k,1,h,w) float: for each tile, with probability p, one box of ones covering a
    random share ``area`` of the tile with aspect ratio in ``ratio``; else zeros."""
    use = torch.rand(k, generator=gen) < p
    share = _uniform(gen, area[0], area[1], k)
    log_r = _uniform(gen, math.log(ratio[0]), math.log(ratio[1]), k)
    fy, fx = torch.rand(k, generator=gen), torch.rand(k, generator=gen)
    boxes = torch.zeros(k, 1, h, w)
    for i in range(k):
        if not use[i]:
            continue
        r = math.exp(float(log_r[i]))
        bh = max(1, min(h, int(round(math.sqrt(float(share[i]) * h * w / r)))))
        bw = max(1, min(w, int(round(math.sqrt(float(share[i]) * h * w * r)))))
        top, left = int(fy[i] * (h - bh + 1)), int(fx[i] * (w - bw + 1))
        boxes[i, :, top:top + bh, left:left + bw] = 1.0
    return boxes


def mix(t: torch.Tensor, partner: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Row i of the result is row partner[i] of ``t`` inside box[i] and row i outside.
    ``box`` (n,1,H,W) is broadcast to t's shape ((n,C,H,W) or (n,H,W))."""
    inside = box > 0
    if t.dim() == 3:
        inside = inside[:, 0]
    return torch.where(inside.to(t.device), t[partner.to(t.device)], t)


QUANTILE_LIMIT = 2 ** 24   # torch.quantile refuses larger inputs


def top_share_threshold(values: torch.Tensor, share: float) -> torch.Tensor:
    """The value at or above which lie the top ``share`` of ``values`` (1-D): their
    (1 − share) quantile, or beyond torch.quantile's limit the smallest of the top
    ⌈share·n⌉ values (the same to within one value)."""
    if values.numel() <= QUANTILE_LIMIT:
        return torch.quantile(values, 1.0 - share)
    top = max(1, math.ceil(share * values.numel()))
    return values.kthvalue(values.numel() - top + 1).values


def pseudo_labels(logits: torch.Tensor, valid: torch.Tensor, confidence: float,
                  class_balance: float = 0.0):
    """(labels, keep): argmax class where the top soft-max probability is ≥ ``confidence``
    on a valid pixel, IGNORE_INDEX elsewhere.  logits (n,C,H,W), valid (n,1,H,W).

    ``class_balance`` > 0 (class-balanced selection, CBST, Zou et al. ECCV 2018): a class's
    threshold is lowered to the confidence that keeps at least that share of the valid
    pixels predicted as the class, so that a class the network is never sure of (a rare
    one) still gets pseudo-labels."""
    prob, cls = torch.softmax(logits.float(), dim=1).max(dim=1)
    ok = valid[:, 0] > 0
    threshold = torch.full_like(prob, confidence)
    if class_balance > 0:
        for c in cls[ok].unique().tolist():
            mine = cls == c
            q = top_share_threshold(prob[mine & ok], class_balance).clamp(max=confidence)
            threshold = torch.where(mine, q, threshold)
    keep = (prob >= threshold) & ok
    return torch.where(keep, cls, torch.full_like(cls, IGNORE_INDEX)), keep


def paste_draws(labels: torch.Tensor, u: torch.Tensor, gen: Optional[torch.Generator],
                p: float, class_weights: Optional[torch.Tensor]) -> dict:
    """Rare-class copy-paste (AEL, Hu et al. NeurIPS 2021): for each of the k unlabeled rows
    ``u`` of the step, with probability p, one class among those labelled in the step's
    labeled tiles, drawn in proportion to its class weight (rarer = likelier), and a labeled
    donor tile holding it; its pixels of that class are pasted into the strong view with
    their hand labels.  Returns donor (k,) batch row or -1, paste (k,H,W) bool, paste_class
    (k,) class index; every number is drawn whether or not it is used."""
    idx_u, idx_l = u.nonzero()[:, 0], (~u).nonzero()[:, 0]
    k, (h, w) = len(idx_u), labels.shape[-2:]
    use = torch.rand(k, generator=gen) < p
    pick_class, pick_donor = torch.rand(k, generator=gen), torch.rand(k, generator=gen)
    donor = torch.full((k,), -1, dtype=torch.long)
    paste = torch.zeros(k, h, w, dtype=torch.bool)
    chosen = torch.full((k,), IGNORE_INDEX, dtype=torch.long)
    known = labels[idx_l]
    present = sorted({int(c) for c in known[known != IGNORE_INDEX].unique()})
    if not present:
        return {"donor": donor, "paste": paste, "paste_class": chosen}
    weight = torch.tensor([1.0 if class_weights is None else float(class_weights[c])
                           for c in present], dtype=torch.float64)
    if not float(weight.sum()) > 0:
        weight = torch.ones_like(weight)
    cumulative = (weight / weight.sum()).cumsum(0)
    holders = {c: [int(j) for j in idx_l if bool((labels[j] == c).any())] for c in present}
    for i in range(k):
        if not use[i]:
            continue
        c = present[min(int(torch.searchsorted(cumulative, float(pick_class[i]))), len(present) - 1)]
        j = holders[c][min(int(float(pick_donor[i]) * len(holders[c])), len(holders[c]) - 1)]
        donor[i], chosen[i], paste[i] = j, c, labels[j] == c
    return {"donor": donor, "paste": paste, "paste_class": chosen}


@contextlib.contextmanager
def batch_statistics(net):
    """Batch norm normalises with the batch's own statistics and leaves the running
    averages (and the batch counter) untouched."""
    norms = [m for m in net.modules() if isinstance(m, _BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    for m in norms:
        m.training, m.track_running_stats = True, False
    try:
        yield
    finally:
        for m, (training, track) in zip(norms, saved):
            m.training, m.track_running_stats = training, track


@register
class ConsistencyTask(AuxiliaryTask):
    task_id = "consistency"
    default_lambda = 1.0
    auto_lambda = 1.0    # Lu is a cross-entropy like Ls: both in the same units already
    description = "consistency (pseudo-labels from a weak view, learned on a strong one)"
    # Tuning knobs for the benchmarks (bench/paper.py --variant); not user parameters.
    strength = 1.0       # scales every photometric perturbation
    cutmix_p = 0.5
    paste_p = 0.0        # > 0: rare-class copy-paste into the strong view (paste_draws)
    gate = 0.0           # > 0: no pseudo-labels until the labelled pixels' mean recall reaches it
    ramp_steps = 0       # then Lu's weight rises over these steps (_teacher_gate.py)
    agreement = 0        # 1: pseudo-labels only where the teacher agrees with its flipped view

    def __init__(self, confidence: float = 0.95, ema_decay: float = 0.0,
                 class_balance: float = 0.2):
        self.confidence = number("confidence", confidence, 0.0, 1.0)
        self.class_balance = number("class_balance", class_balance, 0.0, 1.0)
        self.ema_decay = number("ema_decay", ema_decay, 0.0, 1.0, high_open=True)
        self.teacher = None
        self._pending_teacher = None
        self.steps = 0           # EMA updates so far
        self._confident = 0.0
        self._seen = 0.0
        self._weights = None     # the supervised loss's class weights (None: all 1)
        self._draws = None       # this step's strong-view draws, from prepare to before_step
        self._gate = TeacherGate(self.gate, self.ramp_steps)
        self._lu_weight = 1.0    # the gate's factor for this step's Lu

    def use_class_weights(self, weights):
        self._weights = None if weights is None else weights.float().cpu()

    def hparams(self):
        return {"confidence": self.confidence, "ema_decay": self.ema_decay,
                "class_balance": self.class_balance}

    # -- per step, on the CPU: the random draws of the strong views and the CutMix boxes --------
    def prepare(self, images, labels, valid, generator=None):
        n, c, h, w = images.shape
        u = unlabeled_rows(labels)
        extra = {"unlabeled": u}
        idx = u.nonzero()[:, 0]
        k = len(idx)
        self._draws = None
        if k:
            # Only drawn here: the views are made in before_step, on the training device.
            self._draws = photometric_draws(generator, (k, c, h, w), self.strength)
            order = torch.randperm(k, generator=generator)
            partner = torch.empty(k, dtype=torch.long)
            partner[order] = order.roll(-1)      # a different tile when there are several
            box = cutmix_boxes(k, h, w, generator, self.cutmix_p)
            self._draws.update(partner=partner, box=box)   # among the unlabeled tiles
            if self.paste_p > 0:
                self._draws.update(paste_draws(labels, u, generator, self.paste_p, self._weights))
            full_box = torch.zeros(n, 1, h, w)
            full_box[idx] = box
            full_partner = torch.arange(n)
            full_partner[idx] = idx[partner]
            extra.update(box=full_box, partner=full_partner)
        return PreparedBatch(images, images, labels, valid, extra)

    # -- once per step, no gradient, on the device: strong views and pseudo-labels --------------
    def before_step(self, net, batch, device, chunk=None):
        """Computed on the device for the step's k unlabeled tiles; the results go back to
        the CPU with the rest of the step, so that the out-of-memory fallback's micro-batches
        still bound what the GPU holds."""
        u = batch.extra.get("unlabeled")
        if u is None or not bool(u.any()):
            return
        extra, d = batch.extra, self._draws
        idx = u.nonzero()[:, 0]
        self._lu_weight = self._gate.weight()
        if self._lu_weight <= 0:   # the teacher is not good enough yet: labels only
            self._seen += float(batch.valid[idx].sum())
            return
        on = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        partner, box = on(d["partner"]), on(d["box"])
        inputs_u, valid_u = on(batch.inputs[idx]), on(batch.valid[idx])
        teacher = self._teacher(net)
        views = torch.cat([inputs_u, inputs_u.flip(-1)]) if self.agreement else inputs_u
        with torch.no_grad(), batch_statistics(teacher):
            logits = torch.cat([teacher(part).seg.float()
                                for part in views.split(chunk or len(views))])
        candidates = valid_u
        if self.agreement:   # the mean of both views; a pixel on which they disagree is dropped
            plain, flipped = logits[:len(idx)], logits[len(idx):].flip(-1)
            agree = plain.argmax(dim=1) == flipped.argmax(dim=1)
            logits = (0.5 * (plain.softmax(dim=1) + flipped.softmax(dim=1))).clamp_min(1e-12).log()
            candidates = valid_u * agree[:, None]
        labels_u, keep = pseudo_labels(logits, candidates, self.confidence, self.class_balance)
        # Each valid pixel counts in the denominator with the weight of its predicted class
        # (1 without class weights: FixMatch's count of valid pixels).
        weights = None if self._weights is None else on(self._weights)
        weight = (torch.ones_like(valid_u[:, 0]) if weights is None
                  else weights[logits.argmax(dim=1)])
        valid_fp = float((weight * valid_u[:, 0]).sum())
        base, base_valid, targets, strong_weight = inputs_u, valid_u, labels_u, weight
        if "donor" in d:   # labelled pixels pasted before the strong view is made
            pasted = on(d["paste"])
            cls = on(d["paste_class"])[:, None, None].expand_as(pasted)
            base = torch.where(pasted[:, None], on(batch.inputs[d["donor"].clamp(min=0)]), base)
            base_valid = torch.where(pasted[:, None], torch.ones_like(base_valid), base_valid)
            targets = torch.where(pasted, cls, labels_u)
            strong_weight = torch.where(pasted, torch.ones_like(weight) if weights is None
                                        else weights[cls.clamp(min=0)], weight)
        with torch.autocast(device.type, enabled=False):   # float32 views, as on the CPU
            strong = mix(apply_photometric(base.float(), base_valid, d), partner, box)
        strong_valid = mix(base_valid, partner, box)
        valid_strong = float((mix(strong_weight, partner, box) * strong_valid[:, 0]).sum())
        self._confident += float(keep.sum())
        self._seen += float(valid_u.sum())
        n = batch.inputs.shape[0]

        def rows(t, fill):   # the k unlabeled rows into the step's n rows, on the CPU
            return torch.full((n,) + t.shape[1:], fill, dtype=t.dtype).index_copy(0, idx, t.cpu())

        # Lu of a micro-batch of r tiles = sum * norm / r  ->  over the step: sum / (valid pixels)
        norm = torch.tensor([n / max(valid_strong, 1e-6), n / max(valid_fp, 1e-6)])
        extra.update(strong=rows(strong, 0.0), strong_valid=rows(strong_valid, 0.0),
                     pseudo=rows(labels_u, IGNORE_INDEX),
                     pseudo_mix=rows(mix(targets, partner, box), IGNORE_INDEX),
                     norm=norm.expand(n, 2).clone())

    # -- per micro-batch: weak + strong in one pass, then the perturbed-feature decoder pass --
    def forward(self, net, batch):
        u = batch.extra.get("unlabeled")
        if u is None or "pseudo" not in batch.extra or not net.training or not bool(u.any()):
            return net(batch.inputs)
        m = batch.inputs.shape[0]
        features = net.encode(torch.cat([batch.inputs, batch.extra["strong"][u]]))
        out = net.heads(features, net.decode(features))
        weak = [f[:m][u] for f in features]
        perturbed = [weak[0]] + [F.dropout2d(f, FP_DROPOUT, training=True) for f in weak[1:]]
        fp = net.heads(perturbed, net.decode(perturbed)).seg
        return NetOutput(out.seg[:m], None if out.aux is None else out.aux[:m],
                         None if out.cls is None else out.cls[:m],
                         {"strong": out.seg[m:], "fp": fp})

    def loss(self, out, batch):
        if self.gate > 0:
            self._gate.observe(out.seg, batch.labels)
        extra = out.extra or {}
        if "strong" not in extra:
            return out.seg.new_zeros((), dtype=torch.float32)
        u = batch.extra["unlabeled"]
        norm = batch.extra["norm"][u][0]
        rows = batch.inputs.shape[0]
        w = None if self._weights is None else self._weights.to(out.seg.device)
        ce = lambda logits, target: F.cross_entropy(  # noqa: E731
            logits.float(), target, weight=w, ignore_index=IGNORE_INDEX, reduction="sum")
        strong = ce(extra["strong"], batch.extra["pseudo_mix"][u]) * norm[0] / rows
        perturbed = ce(extra["fp"], batch.extra["pseudo"][u]) * norm[1] / rows
        return self._lu_weight * 0.5 * (strong + perturbed)

    # -- EMA teacher, metrics, checkpoint state --------------------------------------------
    def _teacher(self, net):
        if self.ema_decay <= 0:
            return net
        if self.teacher is None:
            self.teacher = copy.deepcopy(net).requires_grad_(False)
            if self._pending_teacher is not None:
                self.teacher.load_state_dict(self._pending_teacher)
                self._pending_teacher = None
        return self.teacher

    def after_step(self, net):
        self._gate.step()
        if self.teacher is None:
            return
        self.steps += 1
        d = min(self.ema_decay, 1.0 - 1.0 / (self.steps + 1))
        with torch.no_grad():
            for t, s in zip(self.teacher.parameters(), net.parameters()):
                t.mul_(d).add_(s.detach(), alpha=1.0 - d)
            for t, s in zip(self.teacher.buffers(), net.buffers()):
                t.copy_(s)

    def epoch_metrics(self):
        seen, confident = self._seen, self._confident
        self._seen = self._confident = 0.0
        metrics = {"confident_share": confident / seen} if seen else {}
        if self.gate > 0:
            metrics["teacher_recall"] = self._gate.recall()
        return metrics

    def state_dict(self):
        gate = {"gate": self._gate.state_dict()} if self.gate > 0 or self.ramp_steps > 0 else {}
        if self.teacher is None and self._pending_teacher is None:
            return gate
        weights = self.teacher.state_dict() if self.teacher is not None else self._pending_teacher
        return {"teacher": {k: v.detach().cpu().clone() for k, v in weights.items()},
                "steps": self.steps, **gate}

    def load_state_dict(self, state):
        if state.get("gate") is not None:
            self._gate.load_state_dict(state["gate"])
        if state.get("teacher") is not None:
            self._pending_teacher = state["teacher"]
            self.teacher = None
        self.steps = int(state.get("steps", 0))
