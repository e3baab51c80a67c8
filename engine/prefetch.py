"""Run a batch producer in a background thread so that reading and decoding
windows (GDAL releases the GIL) overlaps with the training step."""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(produce: Callable[[int], T], count: int, depth: int = 4) -> Iterator[T]:
    """Yield produce(0), ..., produce(count - 1), computed ahead in one thread
    (one thread keeps the order, and so the random draws, deterministic)."""
    q: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def worker():
        try:
            for i in range(count):
                if stop.is_set():
                    return
                item = produce(i)
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)
            return
        q.put(_DONE)

    thread = threading.Thread(target=worker, name="berunda-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)
