"""Threads that keep the device busy: one reads ahead, one writes behind, each
behind a bounded queue (so memory stays bounded).  GDAL and torch release the
GIL, so reading, computing and writing overlap.  Errors in a thread are raised
in the caller; closing stops the threads without waiting for the queues."""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator

_DONE = object()
_POLL_S = 0.1


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _put(q: "queue.Queue", item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


class ReadAhead:
    """Iterate ``make()`` (called in the thread, so that files it opens belong to it)
    up to ``depth`` items ahead of the consumer."""

    def __init__(self, make: Callable[[], Iterable], depth: int, name: str = "berunda-read"):
        self._queue: "queue.Queue" = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make,), name=name, daemon=True)
        self._thread.start()

    def _run(self, make) -> None:
        items = None
        try:
            items = iter(make())
            for item in items:
                if not _put(self._queue, item, self._stop):
                    return
            _put(self._queue, _DONE, self._stop)
        except BaseException as exc:  # handed to the consumer, raised there
            _put(self._queue, _Failure(exc), self._stop)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()   # a generator's `with` blocks (open files) end here, in this thread

    def __iter__(self) -> Iterator:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=_POLL_S)


class WriteBehind:
    """Call ``write(item)`` in a thread for each submitted item, in order."""

    def __init__(self, write: Callable, depth: int, name: str = "berunda-write"):
        self._write = write
        self._queue: "queue.Queue" = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if item is _DONE:
                return
            try:
                self._write(item)
            except BaseException as exc:
                self._error = exc
                self._stop.set()
                return

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, item) -> None:
        self._check()
        if not _put(self._queue, item, self._stop):
            self._check()
            raise RuntimeError("The writer thread was stopped.")

    def finish(self) -> None:
        """Wait until everything submitted is written; raise the writer's error if any."""
        self._check()
        _put(self._queue, _DONE, self._stop)
        self._thread.join()
        self._check()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
