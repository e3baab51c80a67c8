"""The teacher-quality gate of self-training (models/tasks/_teacher_gate.py) and its use by
`consistency` (gate, ramp, flip agreement): analytic cases on hand-built logits and the
task's own before_step / loss on a network whose predictions are known (pure torch)."""
import pytest
import torch

from berunda.models import IGNORE_INDEX
from berunda.models.network import NetOutput
from berunda.models.tasks import get_task
from berunda.models.tasks._teacher_gate import TeacherGate
from test_models_consistency import CPU, ValueNet, batch_with

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def logits_for(pred):
    """(1, C, H, W) logits whose argmax is ``pred`` (H, W)."""
    return 10.0 * torch.nn.functional.one_hot(pred, 3).permute(2, 0, 1)[None].float()


def step_with(gate, truth, pred):
    gate.observe(logits_for(pred), truth[None])
    gate.step()


def test_the_gate_never_opens_before_the_mean_class_recall_reaches_its_threshold():
    truth = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 2]])       # class 2 is one pixel of eight
    frequent_only = torch.zeros_like(truth)                 # recall 1 for class 0, 0 for 2
    gate = TeacherGate(threshold=0.6, ramp_steps=4)
    for _ in range(50):   # 7 of 8 pixels right, but the mean class recall is 0.5
        assert gate.weight() == 0.0 and not gate.open
        step_with(gate, truth, frequent_only)
        assert gate.recall() == pytest.approx(0.5)
    assert not gate.open
    # From now on every pixel is right: the EMA recall of class 2 is 1 - 0.9^k after k steps
    # (its EMA total stays > 0); the mean crosses 0.6 once 0.5 + (1 - 0.9^k) / 2 >= 0.6.
    k = 0
    while not gate.open:
        assert gate.weight() == 0.0
        step_with(gate, truth, truth)
        k += 1
        expected = 0.5 + 0.5 * (1 - 0.9 ** k)
        assert gate.recall() == pytest.approx(expected)
        assert gate.open == (expected >= 0.6)
    assert k == 3     # 0.5 + 0.5 · (1 − 0.729) = 0.6355 >= 0.6 > 0.5 + 0.5 · 0.19
    # then the weight ramps linearly over 4 steps and stays at 1
    weights = []
    for _ in range(6):
        weights.append(gate.weight())
        step_with(gate, truth, frequent_only)   # a worse teacher later never shuts it again
    assert weights == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_no_threshold_means_open_from_the_first_step_and_the_state_round_trips():
    assert TeacherGate().weight() == 1.0
    assert TeacherGate(0.0, 2).weight() == 0.5
    gate = TeacherGate(0.5, 3)
    truth = torch.tensor([[0, 1], [1, IGNORE_INDEX]])
    step_with(gate, truth, torch.tensor([[0, 1], [0, 0]]))   # recall (1 + 0.5) / 2 = 0.75
    again = TeacherGate(0.5, 3)
    again.load_state_dict(gate.state_dict())
    assert (again.open, again.weight(), again.recall()) == (gate.open, gate.weight(), gate.recall())
    assert gate.weight() == pytest.approx(1 / 3)


def run_step(task, net, labeled=2, unlabeled=2):
    """One step of the task: prepare, before_step, Lu of fixed strong / perturbed logits
    (the same every step, so that only the gate changes Lu), after_step."""
    images, labels, valid = batch_with(labeled, unlabeled)
    images[:labeled] = 1.0          # labeled tiles: ValueNet predicts class 1 = their label
    prepared = task.prepare(images, labels, valid, torch.Generator().manual_seed(0))
    task.before_step(net, prepared, CPU)
    seg = net(prepared.inputs).seg
    extra = {}
    if "pseudo" in prepared.extra:
        fixed = torch.linspace(-1, 1, unlabeled * 8 * 16 * 16).view(unlabeled, 8, 16, 16)
        extra = {"strong": fixed, "fp": fixed.flip(1)}
    lu = task.loss(NetOutput(seg, None, None, extra), prepared)
    task.after_step(net)
    return prepared, lu


def test_consistency_makes_no_pseudo_labels_while_the_gate_is_shut(monkeypatch):
    monkeypatch.setattr(get_task("consistency").__class__, "gate", 1.01)   # never reachable
    task = get_task("consistency", confidence=0.5)
    net = ValueNet()
    for _ in range(5):
        prepared, lu = run_step(task, net)
        assert "pseudo" not in prepared.extra and float(lu) == 0.0
    assert task.epoch_metrics() == {"confident_share": 0.0, "teacher_recall": 1.0}


def test_consistency_opens_after_one_perfect_step_and_ramps_lu(monkeypatch):
    cls = get_task("consistency").__class__
    monkeypatch.setattr(cls, "gate", 0.9)
    monkeypatch.setattr(cls, "ramp_steps", 2)
    task = get_task("consistency", confidence=0.5)
    net = ValueNet()
    prepared, lu = run_step(task, net)          # the first step only measures the teacher
    assert "pseudo" not in prepared.extra and float(lu) == 0.0
    losses = []
    for _ in range(3):
        prepared, lu = run_step(task, net)
        assert "pseudo" in prepared.extra
        losses.append(float(lu))
    assert losses[1] > 0
    assert losses == pytest.approx([losses[1] / 2, losses[1], losses[1]])   # the ramp: ½, 1, 1


class SideNet(ValueNet):
    """Predicts class 1 on the left half of a tile and 2 on the right, whatever it shows:
    its prediction of the flipped view, flipped back, disagrees with it everywhere."""

    def forward(self, x):
        self.calls += 1
        cls = torch.ones(x.shape[0], x.shape[2], x.shape[3], dtype=torch.long)
        cls[..., x.shape[3] // 2:] = 2
        seg = 20.0 * torch.nn.functional.one_hot(cls, self.classes).permute(0, 3, 1, 2).float()
        return NetOutput(seg, None, None)


def test_flip_agreement_keeps_only_the_pixels_both_views_agree_on(monkeypatch):
    images, labels, valid = batch_with(0, 2)
    images[:, :, :, :8] = 3.0     # the left half of each tile is class 3 to ValueNet
    for agreement, net, kept in ((1, ValueNet(), True), (1, SideNet(), False),
                                 (0, SideNet(), True)):
        monkeypatch.setattr(get_task("consistency").__class__, "agreement", agreement)
        task = get_task("consistency", confidence=0.5, class_balance=0.0)
        prepared = task.prepare(images, labels, valid, torch.Generator().manual_seed(0))
        task.before_step(net, prepared, CPU)
        pseudo = prepared.extra["pseudo"]
        assert bool((pseudo != IGNORE_INDEX).all()) == kept
        assert bool((pseudo == IGNORE_INDEX).all()) == (not kept)
        assert net.calls == 1     # both views in one forward pass
