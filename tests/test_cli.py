"""``python -m berunda`` without QGIS: help, exit codes, training jobs (written in QGIS,
trained on the command line, classified back in QGIS), moving a job's data, cancelling."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from helpers import TINY, image, label

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / ".build" / "plugins"
SUBCOMMANDS = ["train", "classify", "evaluate", "compare", "diagnostics"]


def berunda(*args, cwd=PLUGINS, timeout=600, **kwargs):
    """python -m berunda ... run as a user would: from the folder that holds the plugin."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "berunda", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def test_importing_the_command_line_imports_neither_qgis_nor_torch():
    script = ("import sys; sys.path.insert(0, %r); import berunda.cli.main, berunda.cli.commands; "
              "print([m for m in ('qgis', 'torch', 'rasterio') if m in sys.modules])") % str(PLUGINS)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_every_subcommand(command):
    out = berunda(command, "--help", timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: python -m berunda {command}")
    expected = {"train": ["JOB.json", "--output", "--resume", "--data-root", "tile_size [TILE_SIZE]",
                          "(default: 320)", "aux_task [AUX_TASK]"],
                "classify": ["--input", "--model", "--output", "--tile-size", "(default: 4)"],
                "evaluate": ["--prediction", "--ground-truth", "--output-report"],
                "compare": ["--aux-tasks", "--lambdas", "--runs", "(default: 4)"],
                "diagnostics": ["--json"]}[command]
    for needle in expected:
        assert needle in out.stdout, needle


def test_no_command_and_bad_options_exit_2():
    assert berunda(timeout=60).returncode == 2
    out = berunda("classify", "--model", "m.pt", timeout=60)
    assert out.returncode == 2 and "--input" in out.stderr and "Traceback" not in out.stderr


def write(path, record):
    path.write_text(json.dumps(record))
    return path


def tiny_config(**extra):
    config = {"labeled_images": [image("scene1_part1")], "labels": [label("scene1_part1")],
              "aux_task": "none", "encoder": "resnet18", "tile_size": 64, "batch_size": 2,
              "epochs": 1, "samples_per_epoch": 2, "device": "cpu"}
    config.update(extra)
    return config


JOB = {"format": "berunda-training-job", "schema_version": 1}


@pytest.mark.parametrize("record, words", [
    ({"format": "something-else"}, ["not a Berunda training job"]),
    (dict(JOB, schema_version=99, config={}), ["schema version 99", "newer Berunda"]),
    (dict(JOB, config={"labels": []}), ["lacks the required key(s) labeled_images"]),
    (dict(JOB, config=dict(tiny_config(), tile_sise=64)), ["unknown key(s) tile_sise"]),
    (dict(JOB, config=tiny_config(labeled_images=["/nowhere/a.tif"])),
     ["do not exist: /nowhere/a.tif", "--data-root"]),
    (dict(JOB, config=tiny_config(epochs="three")), ["\"epochs\" must be of type int"]),
    (dict(JOB, config=tiny_config(tile_size=100)), ["TILE_SIZE 100", "multiple of 32"]),
])
def test_bad_job_files_exit_2_with_a_clear_message(tmp_path, record, words):
    job = write(tmp_path / "job.json", record)
    out = berunda("train", job, "--output", tmp_path / "m.pt", timeout=120)
    assert out.returncode == 2, out.stderr
    for word in words:
        assert word in out.stderr, (word, out.stderr)
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "m.pt").exists()


def test_a_file_that_is_not_json_exits_2(tmp_path):
    job = tmp_path / "job.json"
    job.write_text("{ not json")
    out = berunda("train", job, "--output", tmp_path / "m.pt", timeout=60)
    assert out.returncode == 2 and "not a readable training job" in out.stderr


def weights(path):
    from berunda.engine.model_file import load_model

    return load_model(str(path)).state_dict


def metadata(path):
    from berunda.engine.model_file import load_model

    return load_model(str(path)).metadata


@pytest.mark.slow
def test_job_from_qgis_trained_on_the_command_line_then_classified_in_qgis(qgis_app, tmp_path,
                                                                         monkeypatch):
    """berunda:train writes the job (and trains); `python -m berunda train` trains the job
    to the very same weights (CPU, same seed); berunda:classify uses that model in QGIS."""
    import processing

    from berunda.engine.job import read_job

    params = dict(TINY, LABELED_IMAGES=[image("scene1_part1")], LABELS=[label("scene1_part1")],
                  UNLABELED_IMAGES=[image("scene2_part1")], AUX_TASK="kmeans", DEVICE="cpu",
                  EXPORT_JOB=str(tmp_path / "job.json"), OUTPUT_MODEL=str(tmp_path / "qgis.pt"))
    # the engine process QGIS starts uses as many CPU threads as berunda() below: another
    # thread count sums floats in another order (weights then differ by ~1e-8)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = processing.run("berunda:train", params)
    assert result["EXPORT_JOB"] == str(tmp_path / "job.json")
    job = read_job(str(tmp_path / "job.json"))
    assert job.config.labeled_images == [image("scene1_part1")]   # paths as given
    assert job.prepared["classes"]["values"] == [1, 2, 3, 4, 5]
    assert len(job.prepared["normalization"]["mean"]) == 3

    out = berunda("--messages", "plain", "train", tmp_path / "job.json", "--output",
                  tmp_path / "cli.pt")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"OUTPUT_MODEL: {tmp_path / 'cli.pt'}" in out.stdout
    assert "epoch 1/1" in out.stderr
    a, b = weights(tmp_path / "qgis.pt"), weights(tmp_path / "cli.pt")
    ma, mb = metadata(tmp_path / "qgis.pt"), metadata(tmp_path / "cli.pt")
    ca, cb = ma["training"]["config"], mb["training"]["config"]
    assert ca == cb, {k: (ca.get(k), cb.get(k)) for k in set(ca) | set(cb) if ca.get(k) != cb.get(k)}
    assert ma["normalization"] == mb["normalization"]
    assert ma["history"][0]["loss"] == mb["history"][0]["loss"], (ma["history"], mb["history"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    classified = processing.run("berunda:classify", {
        "INPUT": image("scene3_part1"), "MODEL": str(tmp_path / "cli.pt"),
        "OUTPUT": str(tmp_path / "classes.tif")})
    assert Path(classified["OUTPUT"]).is_file() and (tmp_path / "classes.qml").is_file()


def test_job_only_writes_the_job_and_trains_nothing(qgis_app, tmp_path):
    import processing

    result = processing.run("berunda:train", dict(
        TINY, LABELED_IMAGES=[image("scene1_part1")], LABELS=[label("scene1_part1")],
        AUX_TASK="none", EXPORT_JOB=str(tmp_path / "job.json"), JOB_ONLY=True,
        OUTPUT_MODEL=str(tmp_path / "m.pt")))
    assert json.loads((tmp_path / "job.json").read_text())["prepared"]["classes"]["names"][0] == "building"
    assert not (tmp_path / "m.pt").exists() and "OUTPUT_MODEL" not in result


def test_moved_data_is_found_with_data_root(tmp_path):
    """A job with absolute paths, its data copied elsewhere: --data-root finds it; relative
    paths are read against the job's folder."""
    data = tmp_path / "data"
    data.mkdir()
    for kind, path in (("image", image("scene1_part1")), ("label", label("scene1_part1"))):
        shutil.copy(path, data / f"{kind}.tif")
    job = write(tmp_path / "job.json", dict(JOB, data_root="/old/place", config=tiny_config(
        labeled_images=["/old/place/image.tif"], labels=["/old/place/label.tif"])))
    missing = berunda("train", job, "--output", tmp_path / "m.pt", timeout=120)
    assert missing.returncode == 2 and "/old/place/image.tif" in missing.stderr
    moved = berunda("--messages", "plain", "train", job, "--output", tmp_path / "m.pt",
                    "--data-root", data)
    assert moved.returncode == 0, moved.stderr[-2000:]
    relative = write(data / "job.json", dict(JOB, config=tiny_config(
        labeled_images=["image.tif"], labels=["label.tif"])))
    out = berunda("--messages", "plain", "train", relative, "--output", tmp_path / "r.pt")
    assert out.returncode == 0, out.stderr[-2000:]


def test_cancel_exits_130_and_keeps_the_checkpoint(tmp_path):
    """The plugin's Cancel ("cancel" on stdin, JSON lines) and Ctrl-C on a terminal."""
    job = write(tmp_path / "job.json", dict(JOB, config=tiny_config(epochs=50, samples_per_epoch=8)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    for how in ("stdin", "sigint"):
        model = tmp_path / f"{how}.pt"
        mode = "jsonl" if how == "stdin" else "plain"
        proc = subprocess.Popen([sys.executable, "-m", "berunda", "--messages", mode, "train",
                                 str(job), "--output", str(model)], cwd=PLUGINS, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        checkpoint = tmp_path / f"{how}.checkpoint.pt"
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and time.monotonic() < deadline:   # after epoch 1
            time.sleep(0.2)
        assert checkpoint.exists()
        if how == "stdin":
            proc.stdin.write("cancel\n")
            proc.stdin.flush()
        else:
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 130, stderr[-2000:]
        if how == "stdin":
            events = [json.loads(line) for line in stdout.splitlines()]
            error = events[-1]
            assert error["event"] == "error" and error["exit_code"] == 130
            assert "RESUME" in error["message"] and str(checkpoint) in error["message"]
            assert {e["event"] for e in events} >= {"info", "progress", "error"}
        else:
            assert "Cancelling after the current step" in stderr and "RESUME" in stderr
        assert checkpoint.exists() and not model.exists()


def test_runs_from_the_unzipped_package(tmp_path):
    out = subprocess.run(["make", "-s", "package"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    archive = next((REPO / "dist").glob("berunda-*.zip"))
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path)
    job = write(tmp_path / "job.json", dict(JOB, config=tiny_config()))
    out = berunda("--messages", "plain", "train", job, "--output", tmp_path / "m.pt", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "m.pt").is_file()
