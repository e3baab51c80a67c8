"""λ in the training step (engine/loss_balance.py, engine/step.py): a numeric LAMBDA gives
exactly today's loss and weights, LAMBDA=auto is the default and records a finite,
positive λ per epoch, resume stays bit-identical with auto and with the consistency
task's EMA teacher, and the task hooks run once per step under the OOM fallback."""
import copy
import math

import pytest
import torch

from conftest import dubai_pair

from berunda.engine import loss_balance
from berunda.engine.config import TrainingConfig
from berunda.engine.loss_balance import (FrozenMagnitudeBalance, GradientCosineBalance,
                                         MagnitudeBalance, UncertaintyBalance, make_balance)
from berunda.engine.model_file import load_model
from berunda.engine.progress import Reporter
from berunda.engine.step import train_step
from berunda.engine.trainer import train
from berunda.models import IGNORE_INDEX
from berunda.models.losses import supervised_loss
from berunda.models.network import BerundaNetLate
from berunda.models.tasks import TASKS, get_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")
TINY = dict(encoder="resnet18", encoder_weights="none", tile_size=64, batch_size=2, samples_per_epoch=4, epochs=1,
            device="cpu")


def dubai_config(**kw):
    img, lab = dubai_pair("scene1_part1")
    return TrainingConfig([img], [lab], [dubai_pair("scene2_part1")[0]], **{**TINY, **kw})


class Lines(Reporter):
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)


def tensors_equal(a, b):
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, differ[:3]


# ---- numeric λ: today's loss, exactly --------------------------------------------------------

@pytest.mark.parametrize("task_id, lam", [("kmeans", 1.0), ("l2", 5.0), ("jigsaw", 0.5)])
def test_numeric_lambda_reproduces_the_plain_loss_exactly(task_id, lam):
    """One step through engine/step.py == one step of (Ls + λ·Lu).backward() written out."""
    params = {"jigsaw": {"permutations": 10}}.get(task_id, {})
    task = get_task(task_id, **params)
    torch.manual_seed(0)
    net = BerundaNetLate(3, 4, "resnet18", task.head_channels(3), task.classifier_classes())
    ref = copy.deepcopy(net)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, 64, 64, generator=g)
    labels = torch.randint(0, 4, (4, 64, 64), generator=g)
    labels[2:] = IGNORE_INDEX                         # two unlabeled tiles
    valid = torch.ones(4, 1, 64, 64)

    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    torch.manual_seed(2)
    parts = train_step(net.train(), optimizer, scaler, task, make_balance(lam, task), True,
                       (images, labels, valid), torch.Generator().manual_seed(3), CPU, False,
                       [None], Reporter())

    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    torch.manual_seed(2)
    prepared = task.prepare(images, labels, valid, torch.Generator().manual_seed(3))
    out = ref.train()(prepared.inputs)
    ls = supervised_loss(out.seg, prepared.labels)
    lu = task.loss(out, prepared).float()
    ref_opt.zero_grad()
    (ls + lam * lu).backward()
    ref_opt.step()

    ls, lu = ls.detach(), lu.detach()
    assert parts["supervised"] == float(ls) and parts["auxiliary"] == float(lu)
    assert parts["lambda"] == lam and parts["loss"] == float(ls) + lam * float(lu)
    tensors_equal(net.state_dict(), ref.state_dict())


# ---- auto ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", loss_balance.METHODS)
def test_auto_is_the_default_and_records_a_positive_lambda_per_epoch(method, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setattr(loss_balance, "DEFAULT_METHOD", method)
    log = Lines()
    out = tmp_path / f"{method}.pt"
    result = train(dubai_config(aux_task="l2", epochs=2), str(out), log)   # LAMBDA empty
    meta = load_model(str(out)).metadata
    assert meta["task"]["lambda"] == "auto" and meta["task"]["lambda_method"] == method
    assert meta["task"]["mode"] == "semi-supervised"
    lams = [r["lambda"] for r in meta["history"]]
    assert len(lams) == 2 and all(math.isfinite(v) and v > 0 for v in lams)
    assert lams == [r["lambda"] for r in result.history]
    epoch_lines = [line for line in log.lines if line.startswith("epoch ")]
    assert all(f"λ {v:.4g}" in line for v, line in zip(lams, epoch_lines))
    assert any("λ=auto" in line for line in log.lines)
    if method == "gradcos":
        assert all(0 <= r["aux_gated_share"] <= 1 for r in meta["history"])


def test_auto_for_the_baseline_is_zero_and_for_consistency_its_own_scale():
    assert make_balance(None, get_task("none")).lam == 0.0
    fixed = make_balance("auto", get_task("consistency"))
    assert (fixed.setting, fixed.lam) == ("auto", 1.0)
    assert make_balance(0.25, get_task("kmeans")).setting == 0.25
    assert isinstance(make_balance(None, get_task("kmeans")), MagnitudeBalance)


def test_magnitude_balance_follows_the_ratio_of_the_loss_averages():
    b = MagnitudeBalance()
    assert b.weight(2.0, 8.0) == 0.25                      # before any step: this step's ratio
    losses = [(2.0, 8.0), (1.0, 1.0), (0.5, 4.0)]
    ema_s = ema_u = 0.0
    for i, (ls, lu) in enumerate(losses, 1):
        b.update(ls, lu, b.weight(ls, lu))
        ema_s, ema_u = 0.99 * ema_s + 0.01 * ls, 0.99 * ema_u + 0.01 * lu
        c = 1 - 0.99 ** i
        assert b.weight(9.0, 9.0) == pytest.approx((ema_s / c) / (ema_u / c))
    assert MagnitudeBalance().weight(1.0, 0.0) == loss_balance.HIGH      # clipped
    again = MagnitudeBalance()
    again.load_state_dict(b.state_dict())
    assert again.weight(1.0, 1.0) == b.weight(1.0, 1.0)
    assert b.epoch_metrics()["lambda"] > 0


def test_frozen_balance_keeps_the_ratio_reached_at_the_end_of_the_first_epoch():
    b, free = FrozenMagnitudeBalance(), MagnitudeBalance()
    short_epoch = [(2.0, 4.0), (1.5, 2.0)]
    long_epoch = [(1.0, 1.0)] * (FrozenMagnitudeBalance.MIN_STEPS - len(short_epoch))
    for epoch in (short_epoch, long_epoch):   # the magnitude rule until MIN_STEPS steps
        for ls, lu in epoch:
            assert b.weight(ls, lu) == free.weight(ls, lu)
            b.update(ls, lu, b.weight(ls, lu))
            free.update(ls, lu, free.weight(ls, lu))
        assert b.epoch_metrics()["lambda"] > 0
        assert (b.frozen is None) == (epoch is short_epoch)   # too few steps to freeze
    end_of_epoch_1 = free.weight(0.0, 0.0)
    again = FrozenMagnitudeBalance()
    again.load_state_dict(b.state_dict())
    for balance in (b, again):   # later epochs: the auxiliary loss shrinks, λ stays
        for lu in (0.5, 0.1, 0.01):
            assert balance.weight(1.0, lu) == end_of_epoch_1
            balance.update(1.0, lu, balance.weight(1.0, lu))
        assert balance.epoch_metrics()["lambda"] == pytest.approx(end_of_epoch_1)
    free.update(1.0, 0.01, 1.0)
    assert free.weight(0.0, 0.0) > end_of_epoch_1                # what the magnitude rule does


def test_uncertainty_balance_moves_towards_the_loss_ratio():
    b = UncertaintyBalance()
    assert b.weight(1.0, 1.0) == 1.0                        # log-variances start at 0
    for _ in range(300):
        b.update(2.0, 0.2, b.weight(2.0, 0.2))
    assert b.weight(0, 0) == pytest.approx(10.0, rel=0.2)   # exp(s_s - s_u) -> Ls / Lu
    again = UncertaintyBalance()
    again.load_state_dict(b.state_dict())
    again.update(2.0, 0.2, 1.0)
    b.update(2.0, 0.2, 1.0)
    assert again.weight(0, 0) == b.weight(0, 0)


@pytest.mark.parametrize("aux_sign, gated", [(1.0, False), (-1.0, True)])
def test_gradient_cosine_drops_an_opposed_auxiliary_gradient(aux_sign, gated):
    shared = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    head = torch.nn.Parameter(torch.tensor([3.0]))
    b = GradientCosineBalance([shared], [shared])
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    shared.grad = torch.tensor([0.5, 0.5])                   # an earlier micro-batch's gradient
    ls = (shared * torch.tensor([1.0, 0.0])).sum()           # ∇ = (1, 0)
    lu = aux_sign * shared.sum() + head.sum() * aux_sign     # ∇ = ±(1, 1); head: ±1
    b.backward(scaler, ls, lu, 2.0, 1.0)
    expected = [1.5, 0.5] if gated else [3.5, 2.5]
    assert shared.grad.tolist() == expected
    assert head.grad.tolist() == [2.0 * aux_sign]            # the head keeps its gradient
    assert b.epoch_metrics()["aux_gated_share"] == (1.0 if gated else 0.0)


# ---- resume with auto and with the EMA teacher -----------------------------------------------

@pytest.mark.parametrize("task_id, extra", [
    ("kmeans", {"clusters": 4}),
    ("consistency", {"confidence": 0.3, "ema_decay": 0.9}),
])
def test_resume_is_bit_identical_with_auto(task_id, extra, tmp_path):
    cfg = dict(aux_task=task_id, seed=5, **extra)
    straight = train(dubai_config(epochs=2, **cfg), str(tmp_path / "straight.pt"))
    first = train(dubai_config(epochs=1, **cfg), str(tmp_path / "first.pt"))
    resumed = train(dubai_config(epochs=2, **cfg), str(tmp_path / "resumed.pt"),
                    resume=first.checkpoint_path)
    tensors_equal(load_model(straight.model_path).state_dict,
                  load_model(resumed.model_path).state_dict)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")}  # noqa: E731
                       for r in h]
    assert strip(straight.history) == strip(resumed.history)
    state = load_model(first.checkpoint_path).checkpoint
    assert state["balance"]["method"] == ("fixed" if task_id == "consistency" else "frozen")
    if task_id == "consistency":
        assert set(state["task"]) == {"teacher", "steps"} and state["task"]["steps"] == 2
        assert all(0 <= r["confident_share"] <= 1 for r in straight.history)


# ---- the hooks under the CUDA out-of-memory fallback -----------------------------------------

def test_pseudo_labels_are_computed_once_per_step_when_memory_runs_out(tmp_path, monkeypatch):
    task_cls = TASKS["consistency"]
    calls, raised = [], []
    original_before, original_encode = task_cls.before_step, BerundaNetLate.encode

    def before_step(self, net, batch, device, chunk=None):
        calls.append(chunk)
        return original_before(self, net, batch, device, chunk)

    def encode(self, x):
        if x.shape[0] > 3 and not raised:                  # the first training pass
            raised.append(x.shape[0])
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original_encode(self, x)

    monkeypatch.setattr(task_cls, "before_step", before_step)
    monkeypatch.setattr(BerundaNetLate, "encode", encode)
    log = Lines()
    result = train(dubai_config(aux_task="consistency", confidence=0.0), str(tmp_path / "m.pt"),
                   log)
    assert raised == [6]                  # 2 labeled + 2 unlabeled + 2 strong views
    assert calls == [None, 2]             # once per step (2 steps), not once per micro-batch
    assert result.history[0]["batch_size"] == 2
    assert math.isfinite(result.history[0]["loss"]) and result.history[0]["auxiliary"] > 0
