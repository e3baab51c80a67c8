"""Training under torchrun (gloo on CPU, two processes): one model like a single-process one,
ranks that draw disjoint tiles, resume under torchrun, a failing rank that stops the job
with its message, and a batch that does not split evenly refused."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import image, label

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / ".build" / "plugins"
pytestmark = pytest.mark.slow


def job(tmp_path, **extra):
    config = {"labeled_images": [image("scene1_part1"), image("scene2_part1")],
              "labels": [label("scene1_part1"), label("scene2_part1")],
              "unlabeled_images": [image("scene3_part1")], "aux_task": "kmeans", "lam": 1.0,
              "encoder": "resnet18", "tile_size": 64, "batch_size": 4, "epochs": 1,
              "samples_per_epoch": 8, "clusters": 4, "device": "cpu"}
    config.update(extra)
    path = tmp_path / f"job_{len(list(tmp_path.glob('job_*')))}.json"
    path.write_text(json.dumps({"format": "berunda-training-job", "schema_version": 1,
                                "config": config}))
    return path


def torchrun(*args, env_extra=None, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", "-m", "berunda", "--messages", "plain", *map(str, args)],
                          cwd=PLUGINS, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_ranks_train_one_model_from_disjoint_tiles_and_resume(tmp_path):
    from berunda.engine.model_file import load_model

    model = tmp_path / "m.pt"
    out = torchrun("train", job(tmp_path), "--output", model)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("OUTPUT_MODEL: ") == 1          # rank 0 alone reports
    package = load_model(str(model))
    record = package.metadata["history"][0]
    assert record["ranks"] == 2
    first, second = ({tuple(w) for w in ws} for ws in record["windows_by_rank"])
    assert len(first) == len(second) == 4                   # 2 steps × 2 tiles each
    assert not first & second                                # no tile drawn twice
    # the same file as a single-process run: same keys and shapes, loads into a plain network
    single = tmp_path / "single.pt"
    alone = subprocess.run([sys.executable, "-m", "berunda", "--messages", "plain", "train",
                            str(job(tmp_path)), "--output", str(single)], cwd=PLUGINS,
                           capture_output=True, text=True, timeout=600,
                           env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                                "OMP_NUM_THREADS": "1"})
    assert alone.returncode == 0, alone.stderr[-2000:]
    reference = load_model(str(single))
    assert {k: v.shape for k, v in package.state_dict.items()} == \
        {k: v.shape for k, v in reference.state_dict.items()}
    assert package.build_network("cpu") is not None
    # every rank resumes from the checkpoint rank 0 wrote
    resumed = tmp_path / "r.pt"
    out = torchrun("train", job(tmp_path, epochs=2), "--output", resumed, "--resume",
                   tmp_path / "m.checkpoint.pt")
    assert out.returncode == 0, out.stderr[-3000:]
    history = load_model(str(resumed)).metadata["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def test_a_failing_rank_stops_the_job_with_its_message(tmp_path):
    patch = tmp_path / "patch"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import berunda.engine.trainer as t\n"
        "    def broken(*a, **k):\n"
        "        raise OSError('rank 1 lost its disk')\n"
        "    t.prepare_training_data = broken\n")
    out = torchrun("train", job(tmp_path, epochs=3), "--output", tmp_path / "m.pt",
                   env_extra={"PYTHONPATH": f"{patch}{os.pathsep}{PLUGINS}"}, timeout=300)
    assert out.returncode != 0
    assert "rank 1 lost its disk" in out.stderr
    assert not (tmp_path / "m.pt").exists()


def test_a_batch_that_does_not_split_over_the_ranks_is_refused(tmp_path):
    out = torchrun("train", job(tmp_path, batch_size=3), "--output", tmp_path / "m.pt", timeout=300)
    assert out.returncode != 0
    assert "BATCH_SIZE 3 must be a multiple of the 2 training processes" in out.stderr
    assert "Traceback" not in out.stderr.split("BATCH_SIZE 3")[0][-500:]
