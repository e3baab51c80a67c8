"""Auxiliary-task losses on hand-built tensors with known values (pure torch, no QGIS)."""
import json

import numpy as np
import pytest
import torch

from berunda.models import IGNORE_INDEX
from berunda.models.network import NetOutput
from berunda.models.tasks import TASKS, PreparedBatch, get_task
from berunda.models.tasks.jigsaw import hamming_permutations, shuffle_tiles, unshuffle_tiles
from berunda.models.tasks.kmeans import membership_penalty
from berunda.models.tasks.mumford_shah import total_variation


A = torch.tensor([1.0, -0.5, 2.0])   # the two colours of the test image
B = torch.tensor([-1.0, 0.5, 0.0])


def two_colour(h=8, w=8):
    """(1,3,h,w) image: colour A on the left half, B on the right half; and its hard memberships."""
    x = torch.empty(1, 3, h, w)
    x[..., : w // 2] = A[:, None, None]
    x[..., w // 2:] = B[:, None, None]
    right = torch.zeros(1, 1, h, w)
    right[..., w // 2:] = 1
    return x, torch.cat([1 - right, right], dim=1)  # one-hot (1,2,h,w)


def aux_loss(task, aux, targets, valid=None, **extra):
    valid = torch.ones_like(targets[:, :1]) if valid is None else valid
    labels = torch.zeros(targets.shape[0], *targets.shape[2:], dtype=torch.long)
    batch = PreparedBatch(targets, targets, labels, valid, dict(extra))
    return task.loss(NetOutput(None, aux, None), batch)


# ---- reconstruction -------------------------------------------------------------------------

@pytest.mark.parametrize("task_id, power", [("l1", 1), ("l2", 2)])
def test_reconstruction_matches_numpy(task_id, power):
    g = torch.Generator().manual_seed(0)
    x, xh = torch.randn(2, 4, 6, 5, generator=g), torch.randn(2, 4, 6, 5, generator=g)
    valid = (torch.rand(2, 1, 6, 5, generator=g) > 0.3).float()
    got = aux_loss(get_task(task_id), xh, x, valid)
    per_pixel = (np.abs(x.numpy() - xh.numpy()) ** power).sum(axis=1)  # norm over bands
    v = valid.numpy()[:, 0] > 0
    assert got.item() == pytest.approx(per_pixel[v].mean(), rel=1e-5)
    # nodata pixels do not count
    assert aux_loss(get_task(task_id), torch.where(valid > 0, xh, 1e3 * xh), x, valid).item() \
        == pytest.approx(got.item(), rel=1e-5)


def test_reconstruction_without_valid_pixels_is_zero():
    x = torch.randn(1, 3, 4, 4)
    assert aux_loss(get_task("l2"), x + 1, x, torch.zeros(1, 1, 4, 4)).item() == 0.0


# ---- k-means and Mumford–Shah ---------------------------------------------------------------

def test_membership_term_closed_form():
    p = torch.softmax(torch.randn(2, 5, 4, 4), dim=1)
    np.testing.assert_allclose(membership_penalty(p).numpy(),
                               (1 - (p ** 2).sum(1, keepdim=True)).numpy(), atol=1e-6)
    x = torch.randn(2, 3, 4, 4)
    logits = torch.log(p)
    diff = (aux_loss(get_task("kmeans", alpha=1.0, clusters=5), logits, x)
            - aux_loss(get_task("kmeans", alpha=0.0, clusters=5), logits, x))
    assert diff.item() == pytest.approx((1 - (p ** 2).sum(1)).mean().item(), rel=1e-5)


def test_kmeans_hard_correct_memberships_give_zero_wrong_ones_do_not():
    x, onehot = two_colour()
    task = get_task("kmeans", alpha=1.0, clusters=2)
    assert aux_loss(task, 30 * onehot, x).item() == pytest.approx(0.0, abs=1e-5)
    # memberships that ignore the colours (checkerboard): both centroids are the mean colour
    checker = ((torch.arange(8)[:, None] + torch.arange(8)[None]) % 2).float()[None, None]
    wrong = torch.cat([1 - checker, checker], dim=1)
    expected = (A - B).abs().sum().item() / 2  # |x - mean| summed over bands, at every pixel
    assert aux_loss(task, 30 * wrong, x).item() == pytest.approx(expected, rel=1e-4)


def _numpy_centroids(x, p, v):
    pw = p * v[:, None]
    return np.einsum("bchw,bkhw->bkc", x, pw) / (pw.sum((2, 3))[..., None] + 1e-6)


def test_kmeans_and_mumford_shah_match_numpy_with_nodata():
    g = torch.Generator().manual_seed(1)
    x, logits = torch.randn(2, 3, 6, 7, generator=g), torch.randn(2, 4, 6, 7, generator=g)
    valid = (torch.rand(2, 1, 6, 7, generator=g) > 0.25).float()
    xn, p, v = x.numpy(), torch.softmax(logits, 1).numpy(), valid.numpy()[:, 0]
    c = _numpy_centroids(xn, p, v)                                   # (B,K,C)
    m = v > 0
    xc = np.einsum("bkc,bkhw->bchw", c, p)
    km = np.abs(xn - xc).sum(1)[m].mean() + 0.5 * (p * (1 - p)).sum(1)[m].mean()
    assert aux_loss(get_task("kmeans", alpha=0.5, clusters=4), logits, x, valid).item() \
        == pytest.approx(km, rel=1e-5)
    dist = ((xn[:, None] - c[..., None, None]) ** 2).sum(2)           # (B,K,H,W) ‖x − c_k‖²
    fid = (dist * p).sum(1)[m].mean()
    assert aux_loss(get_task("mumford_shah", alpha=0.0, clusters=4), logits, x, valid).item() \
        == pytest.approx(fid, rel=1e-5)


def test_mumford_shah_hard_memberships():
    x, onehot = two_colour()
    assert aux_loss(get_task("mumford_shah", alpha=0.0, clusters=2), 30 * onehot, x).item() \
        == pytest.approx(0.0, abs=1e-5)
    # TV of the hard split: 8 rows cross one vertical edge, |Δŷ| = 1 for each of the 2 clusters,
    # divided by the 64 pixels -> 16 / 64
    assert total_variation(onehot, torch.ones(1, 1, 8, 8)).item() == pytest.approx(0.25)
    assert aux_loss(get_task("mumford_shah", alpha=1.0, clusters=2), 30 * onehot, x).item() \
        == pytest.approx(0.25, abs=1e-5)
    wrong = torch.cat([onehot[:, :, :4], onehot[:, :, 4:].flip(1)], dim=2)  # bottom half swapped
    assert aux_loss(get_task("mumford_shah", alpha=0.0, clusters=2), 30 * wrong, x).item() \
        == pytest.approx(((A - B) ** 2).sum().item() / 4, rel=1e-4)


def test_cluster_losses_are_float32_and_differentiable_under_autocast():
    x = torch.randn(1, 3, 8, 8)
    logits = torch.randn(1, 10, 8, 8, requires_grad=True)
    for task_id in ("kmeans", "mumford_shah"):
        ref = aux_loss(get_task(task_id), logits, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = aux_loss(get_task(task_id), logits.bfloat16(), x.bfloat16())
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(ref.item(), rel=0.05)
        logits.grad = None
        ref.backward()
        assert logits.grad.abs().sum() > 0  # gradients flow through the memberships


# ---- inpainting -----------------------------------------------------------------------------

def test_inpainting_prepare_masks_one_square_per_image():
    task = get_task("inpainting", mask_size=5)
    images = torch.randn(3, 2, 16, 12)
    labels = torch.zeros(3, 16, 12, dtype=torch.long)
    valid = torch.ones(3, 1, 16, 12)
    batch = task.prepare(images, labels, valid, torch.Generator().manual_seed(0))
    mask = batch.extra["mask"]
    assert mask.shape == (3, 1, 16, 12)
    assert mask.sum((1, 2, 3)).tolist() == [25.0] * 3
    assert torch.equal(batch.inputs, images * (1 - mask))
    assert torch.equal(batch.targets, images)
    again = task.prepare(images, labels, valid, torch.Generator().manual_seed(0))
    assert torch.equal(again.extra["mask"], mask)  # reproducible with the generator
    big = get_task("inpainting", mask_size=80).prepare(images, labels, valid)
    assert big.extra["mask"].sum().item() == 3 * 16 * 12  # clipped to the tile


@pytest.mark.parametrize("supervision", ["ignore", "clean", "masked"])
def test_labels_under_the_inpainting_mask_never_reach_the_supervised_loss(supervision):
    task = get_task("inpainting", mask_size=6, supervision=supervision)
    g = torch.Generator().manual_seed(4)
    images = torch.randn(3, 2, 16, 16, generator=g)
    labels = torch.randint(0, 5, (3, 16, 16), generator=g)
    labels[2] = IGNORE_INDEX                              # an unlabeled tile
    batch = task.prepare(images, labels, torch.ones(3, 1, 16, 16), g)
    inside = batch.extra["mask"][:, 0] > 0
    assert inside.sum() == 3 * 36
    if supervision == "ignore":       # same blanked input, labels under the blank dropped
        assert (batch.labels[inside] == IGNORE_INDEX).all()
        assert torch.equal(batch.labels[~inside], labels[~inside])
    elif supervision == "clean":      # Ls on a second, clean view of the tile
        assert torch.equal(batch.labels, labels)
        assert torch.equal(batch.extra["clean"], images)
        seen = []

        def net(x):
            seen.append(x)
            return NetOutput(x[:, :1] * 1.0, x * 2.0, None)
        out = task.forward(net, batch)
        assert len(seen) == 1 and torch.equal(seen[0], torch.cat([images, batch.inputs]))
        assert torch.equal(out.seg, images[:, :1]) and torch.equal(out.aux, 2 * batch.inputs)
    else:                             # the old behaviour: trained on the blank
        assert torch.equal(batch.labels, labels)


def test_inpainting_loss_counts_masked_pixels_only():
    task = get_task("inpainting", mask_size=4, normalization="mask")
    g = torch.Generator().manual_seed(2)
    images = torch.randn(2, 3, 10, 10, generator=g)
    valid = torch.ones(2, 1, 10, 10)
    valid[0, :, :, :3] = 0
    batch = task.prepare(images, torch.zeros(2, 10, 10, dtype=torch.long), valid, g)
    m = batch.extra["mask"]
    out = torch.randn(2, 3, 10, 10, generator=g)
    loss = task.loss(NetOutput(None, out, None), batch)
    w = (m * valid).numpy()[:, 0] > 0
    expected = ((images.numpy() - out.numpy()) ** 2).sum(1)[w].mean()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    outside = torch.where(m > 0, out, out + 10)
    assert task.loss(NetOutput(None, outside, None), batch).item() == pytest.approx(loss.item())
    inside = torch.where(m > 0, out + 1, out)
    assert task.loss(NetOutput(None, inside, None), batch).item() != pytest.approx(loss.item())
    # the paper's eq. 6 (default): the same sum over the hole, divided by all N valid pixels
    per_n = get_task("inpainting", mask_size=4).loss(NetOutput(None, out, None), batch)
    sq = ((images.numpy() - out.numpy()) ** 2).sum(1)
    assert per_n.item() == pytest.approx(sq[w].sum() / valid.sum().item(), rel=1e-5)


# ---- jigsaw ---------------------------------------------------------------------------------

@pytest.mark.parametrize("selection, count, expected_min", [
    ("maxtotal", 30, 2), ("maxtotal", 100, 2), ("maxmin", 30, 7), ("maxmin", 100, 6)])
def test_hamming_permutations(selection, count, expected_min):
    perms = hamming_permutations(count, selection)
    assert perms.shape == (count, 9)
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    assert len({tuple(p) for p in perms.tolist()}) == count
    assert not (perms == np.arange(9)).all(1).any()  # identity is class 0, not in the set
    dist = (perms[:, None] != perms[None]).sum(-1)[np.triu_indices(count, 1)]
    print(f"{selection} P={count}: min Hamming {dist.min()}, mean {dist.mean():.3f}")
    assert dist.min() == expected_min
    assert np.array_equal(hamming_permutations(count, selection, seed=0), perms)  # deterministic


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (3, 65, 70), (7, 8)])
def test_unshuffle_inverts_shuffle(shape):
    x = torch.randn(*shape)
    perm = [8, 3, 5, 0, 1, 7, 2, 4, 6]
    s = shuffle_tiles(x, perm)
    assert not torch.equal(s, x)
    assert torch.equal(unshuffle_tiles(s, perm), x)
    h, w = shape[-2], shape[-1]
    ch, cw = h // 3, w // 3
    assert torch.equal(s[..., :ch, :cw], x[..., 2 * ch:3 * ch, 2 * cw:3 * cw])  # cell 0 <- cell 8
    assert torch.equal(s[..., 3 * ch:, :], x[..., 3 * ch:, :])  # leftover stripes stay in place
    assert torch.equal(s[..., :, 3 * cw:], x[..., :, 3 * cw:])


def test_jigsaw_prepare_shuffles_image_labels_and_valid_identically():
    task = get_task("jigsaw", permutations=30, unshuffled_share=0.3, supervision="shuffled")
    n, h, w = 400, 9, 9
    ramp = torch.arange(h * w).reshape(1, h, w).expand(n, h, w)
    images = ramp[:, None].float().repeat(1, 2, 1, 1)
    batch = task.prepare(images, ramp.clone(), (ramp[:, None] % 2).float(),
                         torch.Generator().manual_seed(0))
    cls = batch.extra["perm_class"]
    assert cls.dtype == torch.long and cls.shape == (n,)
    assert 0 <= cls.min() and cls.max() <= 30
    assert 0.2 < (cls == 0).float().mean() < 0.4          # the unshuffled share
    assert len(set(cls.tolist())) > 20                     # all permutations get used
    assert torch.equal(batch.labels, batch.inputs[:, 0].long())
    assert torch.equal(batch.valid[:, 0], (batch.labels % 2).float())
    for i in range(5):
        assert torch.equal(unshuffle_tiles(batch.inputs[i], task.permutation(int(cls[i]))), images[i])
    assert torch.equal(batch.inputs[cls == 0], images[cls == 0])
    none_ordered = get_task("jigsaw", permutations=5, unshuffled_share=0.0,
                            supervision="shuffled").prepare(
        images[:50], ramp[:50], torch.ones(50, 1, h, w), torch.Generator().manual_seed(1))
    assert (none_ordered.extra["perm_class"] > 0).all()


@pytest.mark.parametrize("supervision", ["labeled_ordered", "ordered_only"])
def test_labels_of_shuffled_jigsaw_tiles_never_reach_the_supervised_loss(supervision):
    task = get_task("jigsaw", permutations=10, unshuffled_share=0.3, supervision=supervision)
    n, h, w = 200, 9, 9
    g = torch.Generator().manual_seed(2)
    images = torch.randn(n, 2, h, w, generator=g)
    labels = torch.randint(0, 5, (n, h, w), generator=g)
    labels[n // 2:] = IGNORE_INDEX                        # the second half is unlabeled
    batch = task.prepare(images, labels, torch.ones(n, 1, h, w), torch.Generator().manual_seed(0))
    cls = batch.extra["perm_class"]
    shuffled = cls > 0
    assert 0.5 < shuffled[n // 2:].float().mean() < 0.9   # the puzzle is still there
    # every label that reaches Ls sits on an ordered tile, where it was
    known = batch.labels != IGNORE_INDEX
    assert not known[shuffled].any()
    assert torch.equal(batch.labels[~shuffled], labels[~shuffled])
    if supervision == "labeled_ordered":                  # labeled tiles keep all their labels
        assert not shuffled[: n // 2].any()
        assert torch.equal(batch.labels, labels)
    else:
        assert shuffled[: n // 2].any()


def test_jigsaw_loss_is_cross_entropy():
    task = get_task("jigsaw", permutations=4)
    logits = torch.randn(3, 5)
    target = torch.tensor([0, 4, 2])
    batch = PreparedBatch(None, None, None, None, {"perm_class": target})
    got = task.loss(NetOutput(None, None, logits), batch)
    assert got.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, target).item())
    assert task.classifier_classes() == 5 and task.head_channels(3) == 0


# ---- registry -------------------------------------------------------------------------------

HEADS = {"none": (0, 0), "l1": (4, 0), "l2": (4, 0), "kmeans": (10, 0),
         "mumford_shah": (10, 0), "inpainting": (4, 0), "jigsaw": (0, 101),
         "consistency": (0, 0)}


@pytest.mark.parametrize("task_id", list(HEADS))
def test_registry_builds_every_task(task_id):
    task = get_task(task_id)
    assert task.task_id == task_id and task.description
    assert (task.head_channels(4), task.classifier_classes()) == HEADS[task_id]
    assert json.loads(json.dumps(task.hparams())) == task.hparams()
    assert type(get_task(task_id, **task.hparams())) is type(task)  # round trip via the model file


def test_registry_lists_the_paper_defaults():
    assert list(TASKS) == list(HEADS)
    assert {t: TASKS[t].default_lambda for t in TASKS} == {
        "none": 0.0, "l1": 0.5, "l2": 5.0, "kmeans": 1.0, "mumford_shah": 1.0,
        "inpainting": 5.0, "jigsaw": 0.5, "consistency": 1.0}


@pytest.mark.parametrize("task_id, params, word", [
    ("nope", {}, "Unknown auxiliary task"),
    ("kmeans", {"alpha": -1}, "alpha"),
    ("kmeans", {"clusters": 1}, "clusters"),
    ("mumford_shah", {"clusters": 2.5}, "clusters"),
    ("mumford_shah", {"alpha": "abc"}, "alpha"),
    ("inpainting", {"mask_size": 0}, "mask_size"),
    ("jigsaw", {"permutations": 0}, "permutations"),
    ("jigsaw", {"permutations": 1001}, "permutations"),
    ("jigsaw", {"unshuffled_share": 1.0}, "unshuffled_share"),
    ("jigsaw", {"selection": "random"}, "selection"),
    ("jigsaw", {"supervision": "all"}, "supervision"),
    ("inpainting", {"supervision": "blank"}, "supervision"),
    ("inpainting", {"normalization": "sum"}, "normalization"),
    ("consistency", {"confidence": 1.5}, "confidence"),
    ("consistency", {"ema_decay": 1.0}, "ema_decay"),
    ("consistency", {"class_balance": 1.5}, "class_balance"),
    ("l1", {"alpha": 1}, "alpha"),
])
def test_registry_rejects_bad_input(task_id, params, word):
    with pytest.raises(ValueError, match=word):
        get_task(task_id, **params)
