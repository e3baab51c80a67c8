"""The consistency task (models/tasks/consistency.py) on hand-built tensors and a tiny
real network: thresholding, CutMix, the feature-perturbed pass, gradients, labeled-only
batches, the step-wide denominator and the EMA teacher (pure torch, no QGIS)."""
import math

import pytest
import torch
from torch import nn

from berunda.models import IGNORE_INDEX
from berunda.models.network import BerundaNetLate, NetOutput
from berunda.models.tasks import get_task
from berunda.models.tasks import consistency as cons

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


class ValueNet(nn.Module):
    """seg logits = 20 · one-hot(round(first band)): the pseudo-label of a pixel is the
    value of its first band, with probability ≈ 1.  Counts its calls."""

    def __init__(self, classes=8):
        super().__init__()
        self.classes, self.calls, self.training = classes, 0, True
        self.bn = nn.BatchNorm2d(1)   # batch_statistics() must leave it alone

    def forward(self, x):
        self.calls += 1
        cls = x[:, 0].round().long().clamp(0, self.classes - 1)
        seg = 20.0 * nn.functional.one_hot(cls, self.classes).permute(0, 3, 1, 2).float()
        return NetOutput(seg, None, None)


def batch_with(labeled, unlabeled, size=16, bands=3):
    """Tile i of the batch has the constant value i in every band; labeled tiles have labels."""
    n = labeled + unlabeled
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, bands, size, size)
    labels = torch.full((n, size, size), IGNORE_INDEX, dtype=torch.long)
    labels[:labeled] = 1
    valid = torch.ones(n, 1, size, size)
    return images.clone(), labels, valid


# ---- thresholding ----------------------------------------------------------------------------

def test_thresholding_keeps_exactly_the_pixels_at_or_above_tau():
    # two classes: p(class 0) = sigmoid(logit difference); equal logits give exactly 0.5
    diff = torch.tensor([[0.0, 1.0, 2.0, 3.0, -3.0, 10.0]])
    logits = torch.stack([diff, torch.zeros_like(diff)], dim=1)[..., None]  # (1,2,6,1)
    prob = torch.sigmoid(diff).flatten()
    valid = torch.ones(1, 1, 6, 1)
    valid[0, 0, 5, 0] = 0   # the most confident pixel is nodata: never a pseudo-label
    for tau in (0.5, float(prob[1]), 0.9, 0.95, 1.0):
        labels, keep = cons.pseudo_labels(logits, valid, tau)
        p = torch.softmax(logits, 1).max(1).values.flatten()
        expected = (p >= tau) & (valid.flatten() > 0)
        assert torch.equal(keep.flatten(), expected), tau
        want = torch.where(expected, torch.softmax(logits, 1).argmax(1).flatten(),
                           torch.tensor(IGNORE_INDEX))
        assert torch.equal(labels.flatten(), want)
    labels, keep = cons.pseudo_labels(logits, valid, 0.5)
    assert keep.flatten().tolist() == [True, True, True, True, True, False]   # 0.5 >= 0.5
    assert labels.flatten().tolist()[:5] == [0, 0, 0, 0, 1]
    _, keep = cons.pseudo_labels(logits, valid, 0.95)
    assert keep.flatten().tolist() == [False, False, False, True, True, False]   # σ(3) = 0.9526


# ---- CutMix ----------------------------------------------------------------------------------

def test_cutmix_mixes_images_pseudo_labels_and_masks_with_the_same_box(monkeypatch):
    monkeypatch.setattr(cons, "apply_photometric", lambda x, valid, draws: x * valid)
    task = get_task("consistency", confidence=0.9)
    task.cutmix_p = 1.0                              # every unlabeled tile gets a box
    images, labels, valid = batch_with(labeled=2, unlabeled=4)
    valid[3, :, :, :5] = 0                           # tile 3 has nodata on its left
    prepared = task.prepare(images, labels, valid, torch.Generator().manual_seed(0))
    extra = prepared.extra
    assert extra["unlabeled"].tolist() == [False, False, True, True, True, True]
    net = ValueNet()
    task.before_step(net, prepared, CPU)
    for i in range(2, 6):
        box, j = extra["box"][i, 0] > 0, int(extra["partner"][i])
        assert j != i and j >= 2                      # another unlabeled tile of the step
        rows, cols = box.any(1).nonzero()[:, 0], box.any(0).nonzero()[:, 0]
        assert box.sum() == len(rows) * len(cols) > 0  # one rectangle
        source = torch.where(box, torch.tensor(float(j)), torch.tensor(float(i)))
        src_valid = torch.where(box, valid[j, 0], valid[i, 0])
        # image, validity and pseudo-labels all come from the partner inside the same box
        assert torch.equal(extra["strong"][i, 0], source * src_valid)
        assert torch.equal(extra["strong_valid"][i, 0], src_valid)
        want = torch.where(src_valid > 0, source.long(), torch.tensor(IGNORE_INDEX))
        assert torch.equal(extra["pseudo_mix"][i], want)
        # the un-mixed pseudo-labels (feature-perturbation target) are the tile's own
        own = torch.where(valid[i, 0] > 0, torch.tensor(i), torch.tensor(IGNORE_INDEX))
        assert torch.equal(extra["pseudo"][i], own)
    assert (extra["pseudo"][:2] == IGNORE_INDEX).all() and (extra["box"][:2] == 0).all()
    assert net.calls == 1                             # one pass over the 4 unlabeled tiles


def test_strong_view_is_a_bounded_perturbation_for_any_band_count():
    g = torch.Generator().manual_seed(3)
    for bands in (1, 3, 7):
        x = torch.randn(6, bands, 32, 32, generator=g)
        valid = torch.ones(6, 1, 32, 32)
        valid[:, :, :4] = 0
        y = cons.apply_photometric(
            x * valid, valid, cons.photometric_draws(torch.Generator().manual_seed(1), x.shape))
        assert y.shape == x.shape and torch.isfinite(y).all()
        assert (y[:, :, :4] == 0).all()                  # nodata stays 0
        assert not torch.equal(y, x * valid)
        assert (y - x * valid).abs().mean() < 2.0         # perturbed, not destroyed
        again = cons.apply_photometric(
            x * valid, valid, cons.photometric_draws(torch.Generator().manual_seed(1), x.shape))
        assert torch.equal(y, again)                      # reproducible from the generator


# ---- passes, gradients, labeled-only batches -------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = BerundaNetLate(3, 4, "resnet18")
    g = torch.Generator().manual_seed(5)
    images = torch.randn(5, 3, 64, 64, generator=g)
    labels = torch.full((5, 64, 64), IGNORE_INDEX, dtype=torch.long)
    labels[:2] = torch.randint(0, 4, (2, 64, 64), generator=g)
    return net, images, labels, torch.ones(5, 1, 64, 64)


def prepared_step(task, net, images, labels, valid, seed=0):
    prepared = task.prepare(images, labels, valid, torch.Generator().manual_seed(seed))
    task.before_step(net, prepared, CPU)
    return prepared


def test_feature_perturbed_pass_only_while_training(tiny):
    net, images, labels, valid = tiny
    task = get_task("consistency", confidence=0.0)
    net.train()
    prepared = prepared_step(task, net, images, labels, valid)
    out = task.forward(net, prepared)
    assert out.seg.shape == (5, 4, 64, 64)
    assert out.extra["strong"].shape == out.extra["fp"].shape == (3, 4, 64, 64)
    # the plain forward pass has no dropout: the same batch gives the same output
    assert torch.equal(net(images).seg, net(images).seg)
    net.eval()
    with torch.no_grad():
        plain = task.forward(net, prepared)
        assert plain.extra is None
        assert torch.equal(plain.seg, net(images).seg)
        assert task.loss(plain, prepared).item() == 0.0
    net.train()


def test_gradients_of_lu_reach_encoder_and_decoder(tiny):
    net, images, labels, valid = tiny
    task = get_task("consistency", confidence=0.0)     # every valid pixel is a pseudo-label
    net.train()
    net.zero_grad()
    prepared = prepared_step(task, net, images, labels, valid)
    lu = task.loss(task.forward(net, prepared), prepared)
    assert lu.item() > 0
    lu.backward()
    for part in (net.unet.encoder, net.unet.decoder, net.unet.segmentation_head):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0, type(part).__name__
    net.zero_grad()


def test_mixed_precision_gives_a_float32_loss_with_gradients(tiny):
    """As under CUDA AMP (here CPU autocast, bfloat16): pseudo-labels, passes and Lu."""
    net, images, labels, valid = tiny
    task = get_task("consistency", confidence=0.0)
    net.train()
    net.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prepared = prepared_step(task, net, images, labels, valid)
        out = task.forward(net, prepared)
        lu = task.loss(out, prepared)
    assert out.extra["strong"].dtype == torch.bfloat16
    assert lu.dtype == torch.float32 and torch.isfinite(lu) and lu.item() > 0
    lu.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.unet.encoder.parameters())
    net.zero_grad()


def test_nothing_is_computed_for_labeled_only_batches():
    task = get_task("consistency")
    images, labels, valid = batch_with(labeled=3, unlabeled=0)
    prepared = task.prepare(images, labels, valid, torch.Generator().manual_seed(0))
    assert not prepared.extra["unlabeled"].any() and "strong" not in prepared.extra
    net = ValueNet()
    task.before_step(net, prepared, CPU)
    assert net.calls == 0 and "pseudo" not in prepared.extra
    out = task.forward(net, prepared)
    assert net.calls == 1 and out.extra is None          # the ordinary pass only
    assert task.loss(out, prepared).item() == 0.0
    assert task.epoch_metrics() == {}


def test_lu_is_averaged_over_valid_unlabeled_pixels_of_the_whole_step(tiny):
    """Unconfident pixels count in the denominator, and micro-batches add up to the step."""
    net, images, labels, valid = tiny
    valid = valid.clone()
    valid[3, :, :20] = 0
    task = get_task("consistency", confidence=0.5)
    net.train()
    prepared = prepared_step(task, net, images, labels, valid)
    torch.manual_seed(1)
    out = task.forward(net, prepared)
    u = prepared.extra["unlabeled"]
    ce = lambda logits, target: nn.functional.cross_entropy(  # noqa: E731
        logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    strong = ce(out.extra["strong"], prepared.extra["pseudo_mix"][u])
    strong = strong / prepared.extra["strong_valid"][u].sum()
    fp = ce(out.extra["fp"], prepared.extra["pseudo"][u]) / valid[u].sum()
    whole = task.loss(out, prepared)
    assert whole.item() == pytest.approx(0.5 * (strong + fp).item(), rel=1e-5)
    # split into micro-batches of 2 tiles, each weighted by its share of the step's tiles
    total = 0.0
    for start in range(0, 5, 2):
        sl = slice(start, min(5, start + 2))
        part = prepared.rows(sl, CPU)
        part_out = NetOutput(out.seg[sl], None, None, None)
        if part.extra["unlabeled"].any():
            first = int(u[:sl.start].sum())
            k = int(part.extra["unlabeled"].sum())
            part_out = NetOutput(out.seg[sl], None, None,
                                 {"strong": out.extra["strong"][first:first + k],
                                  "fp": out.extra["fp"][first:first + k]})
        total += task.loss(part_out, part).item() * (sl.stop - sl.start) / 5
    assert total == pytest.approx(whole.item(), rel=1e-5)
    metrics = task.epoch_metrics()
    assert 0 <= metrics["confident_share"] <= 1 and task.epoch_metrics() == {}


def test_pseudo_labels_are_weighed_like_the_labels(tiny):
    """With the supervised loss's class weights (weighted_ce), each confident pixel's CE is
    weighed by its pseudo-label's class and each valid pixel counts in the denominator with
    the weight of its predicted class; without weights, Lu is unchanged."""
    net, images, labels, valid = tiny
    net.train()
    plain = get_task("consistency", confidence=0.3)
    prepared = prepared_step(plain, net, images, labels, valid)
    torch.manual_seed(1)
    out = plain.forward(net, prepared)
    unweighted = plain.loss(out, prepared).item()
    w = torch.tensor([0.5, 4.0, 1.0, 2.0])
    weighted = get_task("consistency", confidence=0.3)
    weighted.use_class_weights(w)
    prepared_w = prepared_step(weighted, net, images, labels, valid)
    assert torch.equal(prepared_w.extra["pseudo"], prepared.extra["pseudo"])
    u = prepared.extra["unlabeled"]
    with torch.no_grad(), cons.batch_statistics(net):
        predicted = torch.zeros(labels.shape, dtype=torch.long)
        predicted[u] = net(images[u]).seg.argmax(1)
    mixed = cons.mix(predicted, prepared.extra["partner"], prepared.extra["box"])
    ce = lambda logits, target: nn.functional.cross_entropy(  # noqa: E731
        logits, target, weight=w, ignore_index=IGNORE_INDEX, reduction="sum")
    strong = ce(out.extra["strong"], prepared.extra["pseudo_mix"][u]) \
        / (w[mixed[u]] * prepared.extra["strong_valid"][u][:, 0]).sum()
    fp = ce(out.extra["fp"], prepared.extra["pseudo"][u]) / (w[predicted[u]] * valid[u][:, 0]).sum()
    expected = 0.5 * (strong + fp).item()
    assert weighted.loss(out, prepared_w).item() == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(unweighted, rel=1e-3)
    weighted.use_class_weights(None)       # back to FixMatch's count: Lu as without weights
    assert weighted.loss(out, prepared_step(weighted, net, images, labels, valid)).item() \
        == pytest.approx(unweighted, rel=1e-6)


# ---- EMA teacher -----------------------------------------------------------------------------

def test_ema_teacher_follows_the_weights_and_survives_a_checkpoint(tiny):
    net, images, labels, valid = tiny
    task = get_task("consistency", ema_decay=0.9)
    net.train()
    prepared_step(task, net, images, labels, valid)       # creates the teacher
    teacher = task.teacher
    assert teacher is not net and all(not p.requires_grad for p in teacher.parameters())
    before = [p.detach().clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    task.after_step(net)        # step 1: decay min(0.9, 1 - 1/2) = 0.5
    for t, b, s in zip(teacher.parameters(), before, net.parameters()):
        assert torch.allclose(t, 0.5 * b + 0.5 * s)
    state = task.state_dict()
    assert state["steps"] == 1
    other = get_task("consistency", ema_decay=0.9)
    other.load_state_dict(state)
    prepared_step(other, net, images, labels, valid)
    for a, b in zip(other.teacher.state_dict().values(), teacher.state_dict().values()):
        assert torch.equal(a, b)
    with torch.no_grad():
        for p in net.parameters():
            p.sub_(1.0)
    assert get_task("consistency").state_dict() == {}      # no teacher: nothing to keep


# ---- class-balanced selection and rare-class copy-paste --------------------------------------

def test_class_balanced_selection_keeps_the_top_share_of_each_predicted_class():
    # pixels 0-3 predicted class 0 (p .982 .971 .731 .622), 4-7 class 1 (p .550 .599 .690 .769)
    diff = torch.tensor([4.0, 3.5, 1.0, 0.5, -0.2, -0.4, -0.8, -1.2, 6.0])
    logits = torch.stack([diff, torch.zeros_like(diff)])[None, :, :, None]   # (1,2,9,1)
    valid = torch.ones(1, 1, 9, 1)
    valid[0, 0, 8] = 0                   # nodata: never a pseudo-label, not in any quantile
    _, keep = cons.pseudo_labels(logits, valid, 0.95)
    assert keep.flatten().tolist() == [True, True] + [False] * 7
    labels, keep = cons.pseudo_labels(logits, valid, 0.95, class_balance=0.5)
    # each class keeps its pixels at or above its median confidence (never above τ)
    assert keep.flatten().tolist() == [True, True, False, False, False, False, True, True, False]
    assert labels.flatten().tolist()[:8] == [0, 0, IGNORE_INDEX, IGNORE_INDEX,
                                             IGNORE_INDEX, IGNORE_INDEX, 1, 1]
    _, keep = cons.pseudo_labels(logits, valid, 0.6, class_balance=0.25)
    # τ below a class's quantile: the ordinary threshold rules (every pixel ≥ 0.6 kept)
    assert keep.flatten().tolist() == [True, True, True, True, False, False, True, True, False]


def test_copy_paste_puts_labelled_pixels_of_a_drawn_class_into_the_strong_view(monkeypatch):
    monkeypatch.setattr(cons, "apply_photometric", lambda x, valid, draws: x * valid)
    task = get_task("consistency", confidence=0.9)
    task.cutmix_p, task.paste_p = 0.0, 1.0
    # only class 3 has weight: the class drawn is always 3, from the one tile that holds it
    task.use_class_weights(torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]))
    images, labels, valid = batch_with(labeled=3, unlabeled=3)
    labels[1, :4, :5] = 3
    valid[4, 0, :2, :2] = 0              # nodata under the pasted corner: valid once pasted
    prepared = task.prepare(images, labels, valid, torch.Generator().manual_seed(0))
    task.before_step(ValueNet(), prepared, CPU)
    extra = prepared.extra
    corner = torch.zeros(16, 16, dtype=torch.bool)
    corner[:4, :5] = True
    for i in range(3, 6):
        own = torch.where(valid[i, 0] > 0, torch.tensor(i), torch.tensor(IGNORE_INDEX))
        assert torch.equal(extra["strong"][i, 0], torch.where(corner, 1.0, i * valid[i, 0]))
        assert torch.equal(extra["pseudo_mix"][i], torch.where(corner, torch.tensor(3), own))
        assert torch.equal(extra["pseudo"][i], own)   # the feature-perturbed target: no paste
    assert (extra["pseudo_mix"][:3] == IGNORE_INDEX).all()


def test_copy_paste_draws_nothing_without_labelled_pixels_and_follows_the_weights():
    _, labels, _ = batch_with(labeled=0, unlabeled=4)
    u = torch.ones(4, dtype=torch.bool)
    d = cons.paste_draws(labels, u, torch.Generator().manual_seed(0), 1.0, None)
    assert (d["donor"] == -1).all() and not d["paste"].any()
    _, labels, _ = batch_with(labeled=4, unlabeled=400, size=4)
    labels[0], labels[1, 0, 0], labels[2, :2] = 0, 1, 2      # class 1: one pixel of tile 1
    u = torch.arange(404) >= 4
    d = cons.paste_draws(labels, u, torch.Generator().manual_seed(0), 0.5,
                         torch.tensor([1.0, 3.0, 0.0]))
    used = d["donor"] >= 0
    assert 150 < int(used.sum()) < 250                       # p = 0.5
    drawn = d["paste_class"][used]
    assert set(drawn.tolist()) == {0, 1}                     # never the weightless class 2
    assert 0.65 < float((drawn == 1).float().mean()) < 0.85  # 3 : 1
    for i in used.nonzero()[:, 0]:
        j, c = int(d["donor"][i]), int(d["paste_class"][i])
        assert torch.equal(d["paste"][i], labels[j] == c)    # exactly the donor's pixels of c


def test_the_class_threshold_holds_beyond_torch_quantiles_limit():
    g = torch.Generator().manual_seed(0)
    small = torch.rand(1000, generator=g)
    assert cons.top_share_threshold(small, 0.2) == torch.quantile(small, 0.8)
    n = cons.QUANTILE_LIMIT + 5
    big = torch.randperm(n, generator=g).double()        # distinct values 0 … n − 1
    t = cons.top_share_threshold(big, 0.2)
    assert int((big >= t).sum()) == math.ceil(0.2 * n)  # the top ⌈0.2 n⌉ values
    assert abs(float(t) - (0.8 * (n - 1))) <= 1          # ≈ the 0.8 quantile
