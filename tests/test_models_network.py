"""BerundaNet-late with each task: shapes, where the auxiliary gradients go, and the
supervised baseline being exactly a plain smp U-Net."""
import pytest
import torch

from berunda.models.losses import supervised_loss
from berunda.models.network import BerundaNetLate
from berunda.models.tasks import TASKS, get_task


ENCODER = "resnet18"


def net_for(task, bands=3, classes=4):
    return BerundaNetLate(bands, classes, ENCODER, aux_channels=task.head_channels(bands),
                          aux_classes=task.classifier_classes())


@pytest.mark.parametrize("bands", [1, 3, 4, 8])
def test_forward_shapes(bands):
    torch.manual_seed(0)
    net = BerundaNetLate(bands, 5, ENCODER, aux_channels=bands, aux_classes=7).eval()
    with torch.no_grad():
        for size in (64, 96):
            out = net(torch.randn(2, bands, size, size))
            assert out.seg.shape == (2, 5, size, size)
            assert out.aux.shape == (2, bands, size, size)
            assert out.cls.shape == (2, 7)


# Tasks with their own head; consistency's loss trains the supervised head itself
# (tests/test_models_consistency.py checks where its gradients go).
HEADED = [t for t in TASKS if get_task(t).head_channels(3) or get_task(t).classifier_classes()]


def test_every_task_but_the_baseline_and_consistency_has_a_head():
    assert set(TASKS) - set(HEADED) == {"none", "consistency"}


@pytest.mark.parametrize("task_id", HEADED)
def test_auxiliary_loss_trains_the_shared_encoder_not_the_supervised_head(task_id):
    torch.manual_seed(0)
    params = {"jigsaw": {"permutations": 10}, "inpainting": {"mask_size": 16}}.get(task_id, {})
    task = get_task(task_id, **params)
    net = net_for(task).train()
    images = torch.randn(2, 3, 64, 64)
    no_labels = torch.full((2, 64, 64), -100, dtype=torch.long)
    batch = task.prepare(images, no_labels, torch.ones(2, 1, 64, 64), torch.Generator().manual_seed(0))
    out = task.forward(net, batch)
    loss = task.default_lambda * task.loss(out, batch)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    encoder_grads = [p.grad for p in net.unet.encoder.parameters()]
    assert all(g is not None for g in encoder_grads)
    assert sum(g.abs().sum() for g in encoder_grads) > 0
    for p in net.unet.segmentation_head.parameters():
        assert p.grad is None or not p.grad.any()
    head = net.unet.classification_head if task_id == "jigsaw" else net.aux_head
    assert all(p.grad is not None and p.grad.any() for p in head.parameters())


def test_task_none_is_a_plain_unet():
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    task = get_task("none")
    net = net_for(task, classes=4).train()
    assert net.aux_head is None and net.unet.classification_head is None
    plain = smp.Unet(encoder_name=ENCODER, encoder_weights=None, in_channels=3, classes=4).train()
    plain.load_state_dict(net.unet.state_dict())
    images = torch.randn(2, 3, 64, 64)
    labels = torch.randint(0, 4, (2, 64, 64))
    labels[:, :8] = -100  # some unlabeled pixels
    batch = task.prepare(images, labels, torch.ones(2, 1, 64, 64))

    out = net(batch.inputs)
    assert out.aux is None and out.cls is None
    loss = supervised_loss(out.seg, batch.labels) + 1.0 * task.loss(out, batch)
    ref = supervised_loss(plain(images), labels)
    loss.backward()
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    mine = dict(net.unet.named_parameters())
    for name, p in plain.named_parameters():
        assert torch.allclose(mine[name].grad, p.grad, rtol=1e-5, atol=1e-7), name
