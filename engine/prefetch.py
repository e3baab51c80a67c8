"""Run a batch producer in background threads so that reading and decoding windows
(GDAL and numpy release the GIL) overlaps with the training step.

Items come back in index order whatever the number of threads; ``produce(i)`` must
depend on ``i`` alone (its own random stream), not on the order of the calls, so that
the result does not depend on how many threads computed it."""
from __future__ import annotations

import os
import threading
from typing import Callable, Iterator, TypeVar

from .background import _POLL_S, _Failure
from .errors import InvalidParameterError

T = TypeVar("T")
MIN_THREADED_TILE = 256   # below, threads contend for the GIL more than they read (bench/README.md)


def reading_workers(device_type: str, tile_size: int) -> int:
    """Threads that read training tiles: one on the CPU (the cores compute the steps) and
    for tiles under MIN_THREADED_TILE px; otherwise, on a GPU, up to 4, sharing the
    machine's cores with the other local ranks.  ``BERUNDA_READ_WORKERS`` overrides (e.g.
    on a cluster node with few cores per job)."""
    override = os.environ.get("BERUNDA_READ_WORKERS", "").strip()
    if override:
        try:
            workers = int(override)
        except ValueError:
            workers = 0
        if workers < 1:
            raise InvalidParameterError(
                f"BERUNDA_READ_WORKERS={override!r} is not a whole number ≥ 1; unset it or "
                "give the number of threads that read training tiles.")
        return workers
    if device_type == "cpu" or tile_size < MIN_THREADED_TILE:
        return 1
    local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(4, (os.cpu_count() or 2) // (2 * local_ranks)))


def prefetch(produce: Callable[[int], T], count: int, depth: int = 4,
             workers: int = 1) -> Iterator[T]:
    """Yield produce(0), ..., produce(count - 1), computed by ``workers`` threads at most
    ``depth`` items ahead of the consumer.  An exception in produce(i) is raised when
    item i is due; leaving the loop early stops the threads."""
    depth = max(depth, workers)
    cond = threading.Condition()
    ready: dict = {}
    state = {"next": 0, "consumed": 0, "stop": False}

    def worker():
        while True:
            with cond:
                while (not state["stop"] and state["next"] < count
                       and state["next"] >= state["consumed"] + depth):
                    cond.wait(_POLL_S)
                if state["stop"] or state["next"] >= count:
                    return
                i = state["next"]
                state["next"] += 1
            try:
                item = produce(i)
            except BaseException as exc:  # handed to the consumer, raised there
                item = _Failure(exc)
            with cond:
                ready[i] = item
                cond.notify_all()

    threads = [threading.Thread(target=worker, name="berunda-prefetch", daemon=True)
               for _ in range(max(1, min(workers, count)))]
    for thread in threads:
        thread.start()
    try:
        for i in range(count):
            with cond:
                while i not in ready:
                    cond.wait(_POLL_S)
                item = ready.pop(i)
                state["consumed"] = i + 1
                cond.notify_all()
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        with cond:
            state["stop"] = True
            ready.clear()
            cond.notify_all()
        for thread in threads:
            thread.join()
