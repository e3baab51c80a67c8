"""Time estimates (issue 13): the first steps of a real (tiny) training give an
estimate of the whole run, every epoch logs an ETA and sets the progress text,
and a run estimated at more than a few hours says so with what to change."""
import pytest

from conftest import dubai_pair

from berunda.engine.config import TrainingConfig
from berunda.engine.errors import TrainingCancelled
from berunda.engine.progress import Reporter, ScaledReporter
from berunda.engine.time_estimate import TrainingClock, format_duration
from berunda.engine.trainer import train


class Log(Reporter):
    def __init__(self, cancel_on_warning=False):
        self.lines, self.warnings, self.texts = [], [], []
        self.cancel_on_warning = cancel_on_warning

    def info(self, message):
        self.lines.append(message)

    def warning(self, message):
        self.warnings.append(message)

    def status(self, text):
        self.texts.append(text)

    def cancelled(self):
        return self.cancel_on_warning and bool(self.warnings)


def config(**kw):
    img, lab = dubai_pair("scene1_part1")
    values = dict(encoder="resnet18", encoder_weights="none", tile_size=64, batch_size=2, samples_per_epoch=4, epochs=1,
                  device="cpu", aux_task="none")
    values.update(kw)
    return TrainingConfig([img], [lab], [dubai_pair("scene2_part1")[0]], **values)


def test_first_steps_give_an_estimate_and_every_epoch_an_eta(tmp_path, one_torch_thread):
    log = Log()
    # 5 steps per epoch: the estimate comes after a warm-up step and 3 measured steps
    train(config(samples_per_epoch=10, epochs=2), str(tmp_path / "m.pt"), log)
    estimates = [line for line in log.lines if line.startswith("Time estimate")]
    assert len(estimates) == 1
    assert "3 steps after a warm-up step" in estimates[0] and "on cpu" in estimates[0]
    assert log.lines.index(estimates[0]) < next(
        i for i, line in enumerate(log.lines) if line.startswith("epoch 1/2"))
    etas = [line for line in log.lines if line.startswith("Epoch ") and "left" in line]
    assert [line.split(":")[0] for line in etas] == ["Epoch 1/2", "Epoch 2/2"]
    assert etas[-1].startswith("Epoch 2/2: about 0 s left")
    assert log.texts == [line.split(" (done")[0] for line in etas]
    assert log.warnings == []            # seconds, not hours


def test_an_estimate_of_many_hours_warns_with_what_to_change(tmp_path, one_torch_thread):
    # 50 x 200,000 tiles of 64 px: tens of hours on a CPU; cancelled once warned
    log = Log(cancel_on_warning=True)
    with pytest.raises(TrainingCancelled):
        train(config(samples_per_epoch=200_000, epochs=50), str(tmp_path / "m.pt"), log)
    assert len(log.warnings) == 1
    warning = log.warnings[0]
    assert warning.startswith("This will take about ") and " on cpu" in warning
    assert "GPU" in warning and "SAMPLES_PER_EPOCH (200000) or EPOCHS (50)" in warning
    assert not (tmp_path / "m.pt").exists()


def test_suggestions_name_the_costly_defaults():
    clock = TrainingClock(Reporter(), TrainingConfig(["a"], ["b"]), [1000])
    clock.device = "cpu"
    text = " ".join(clock.suggestions())
    assert "ENCODER=resnet18" in text and "TILE_SIZE=128" in text and "6.2x" in text
    many = TrainingClock(Reporter(), TrainingConfig(["a"], ["b"]), [1000] * 12)
    assert "RUNS" in " ".join(many.suggestions())


def test_a_clock_over_several_trainings_estimates_them_all():
    log = Log()
    clock = TrainingClock(log, TrainingConfig(["a"], ["b"], tile_size=64), [100, 200, 200])
    clock.begin("cpu")
    clock.rate = 0.5                       # seconds per tile, as if measured
    clock._first_estimate("measured")
    assert "3 trainings will take about 4 min" in log.lines[0]    # 500 tiles x 0.5 s
    clock.tiles_done = 100
    assert clock.remaining() == pytest.approx(200.0)


def test_status_reaches_the_parent_of_a_scaled_reporter():
    log = Log()
    ScaledReporter(log, 0.2, 0.4).status("Epoch 1/3: about 2 min left")
    assert log.texts == ["Epoch 1/3: about 2 min left"]
    Reporter().status("ignored")          # the default reporter accepts it


@pytest.mark.parametrize("seconds,text", [(5, "5 s"), (600, "10 min"), (3 * 3600 + 300, "3 h 05 min"),
                                          (3 * 86400 + 7200, "3 d 2 h")])
def test_durations_read_naturally(seconds, text):
    assert format_duration(seconds) == text
