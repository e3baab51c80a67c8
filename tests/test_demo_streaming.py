"""`make demo` streams training's log (time estimate, every epoch) while qgis_process
runs, instead of printing it all at the end (issue 13)."""
import importlib.util

from helpers import REPO, TINY, image, label


def load_demo():
    spec = importlib.util.spec_from_file_location("demo", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_log_arrives_while_qgis_process_runs(tmp_path):
    demo = load_demo()
    model = tmp_path / "m.pt"
    params = dict(TINY, EPOCHS=2, SAMPLES_PER_EPOCH=8, LABELED_IMAGES=[image("scene1_part1")],
                  LABELS=[label("scene1_part1")], AUX_TASK="none", OUTPUT_MODEL=str(model))
    results, tail, seen = {}, [], []
    for line in demo.stream_log("berunda:train", params, results, tail):
        # the final model is written after the last epoch: a line seen before it exists
        # was streamed while training still ran
        seen.append((line, model.exists()))
    assert results["_returncode"] == 0, "\n".join(tail)
    lines = [line for line, _ in seen]
    epoch1 = next(i for i, line in enumerate(lines) if line.startswith("epoch 1/2"))
    assert not seen[epoch1][1]
    assert any(line.startswith("Time estimate") for line in lines[:epoch1 + 1])
    assert any(line.startswith("Epoch 1/2: about") for line in lines)
    assert not any(line.startswith(("LABELED_IMAGES", "----")) for line in lines)   # no echo
    assert len(lines) == len(set(lines))     # the progress text does not repeat log lines
    assert results["OUTPUT_MODEL"] == str(model) and model.is_file()
