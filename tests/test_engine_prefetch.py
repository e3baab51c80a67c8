"""The tile reader (engine/prefetch.py): several threads, one order."""
from __future__ import annotations

import random
import threading
import time

import pytest

from berunda.engine.errors import InvalidParameterError
from berunda.engine.prefetch import prefetch, reading_workers


def _alive():
    return [t for t in threading.enumerate() if t.name == "berunda-prefetch" and t.is_alive()]


def _slow_square(i):
    time.sleep(random.Random(i).uniform(0, 0.01))   # later items often finish first
    return i * i, threading.current_thread().name, threading.get_ident()


def test_several_threads_yield_in_order():
    items = list(prefetch(_slow_square, 40, depth=6, workers=4))
    assert [v for v, _, _ in items] == [i * i for i in range(40)]
    assert len({ident for _, _, ident in items}) > 1   # really computed by several threads
    assert not _alive()


def test_no_item_is_computed_more_than_depth_ahead():
    computed, ahead = [], []
    consumed = [0]

    def produce(i):
        computed.append(i)
        ahead.append(i - consumed[0])
        return i

    for i in prefetch(produce, 30, depth=5, workers=3):
        time.sleep(0.002)
        consumed[0] = i + 1
    assert sorted(computed) == list(range(30))
    assert max(ahead) <= 5


def test_an_error_is_raised_when_its_item_is_due():
    def produce(i):
        if i == 7:
            raise OSError("disk gone at 7")
        return i

    seen = []
    with pytest.raises(OSError, match="disk gone at 7"):
        for item in prefetch(produce, 20, workers=3):
            seen.append(item)
    assert seen == list(range(7))
    assert not _alive()


def test_leaving_the_loop_early_stops_the_threads():
    for i in prefetch(_slow_square, 1000, workers=4):
        if i[0] >= 9:
            break
    assert not _alive()


def test_reading_workers(monkeypatch):
    monkeypatch.delenv("BERUNDA_READ_WORKERS", raising=False)
    assert reading_workers("cpu", 512) == 1           # the cores compute the steps
    assert reading_workers("cuda", 128) == 1          # small tiles: the GIL, not the disk
    assert 1 <= reading_workers("cuda", 320) <= 4
    monkeypatch.setenv("BERUNDA_READ_WORKERS", "6")
    assert reading_workers("cpu", 128) == 6
    for bad in ("0", "two"):
        monkeypatch.setenv("BERUNDA_READ_WORKERS", bad)
        with pytest.raises(InvalidParameterError, match="BERUNDA_READ_WORKERS"):
            reading_workers("cuda", 320)
