"""How the command line reports: a tqdm bar on a terminal, plain lines otherwise, or JSON
lines for the QGIS plugin (which runs the engine as a child process and reads them).

JSON lines (one object per line on the protocol stream, i.e. the original stdout):
    {"event": "info" | "warning", "message": str}
    {"event": "progress", "fraction": float in [0, 1]}
    {"event": "status", "text": str}                    # progress text (ETA, …)
    {"event": "result", "outputs": {...}}               # last line of a successful run
    {"event": "error", "kind": str, "message": str, "exit_code": int}
Cancelling: a line "cancel" on stdin (the plugin's Cancel button), end of stdin (QGIS went
away) or SIGINT (Ctrl-C; a second one stops at once).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Optional

from ..engine.progress import Reporter


class CancelFlag:
    def __init__(self):
        self.event = threading.Event()

    def set(self) -> None:
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()

    def watch_stdin(self) -> None:
        """A line 'cancel' or the end of stdin cancels (jsonl mode)."""
        def read():
            for line in sys.stdin:
                if line.strip() == "cancel":
                    break
            self.set()

        threading.Thread(target=read, daemon=True, name="berunda-cancel").start()

    def watch_sigint(self, say) -> None:
        """First Ctrl-C: cancel cleanly after the current step (checkpoints kept); second:
        stop at once."""
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(_signum, _frame):
            if self.is_set():
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self.set()
            say("Cancelling after the current step… (Ctrl-C again to stop at once)")

        signal.signal(signal.SIGINT, handler)


class JsonLinesReporter(Reporter):
    def __init__(self, stream, cancel: CancelFlag):
        self.stream, self.cancel = stream, cancel
        self.lock = threading.Lock()
        self.last_fraction, self.last_time = -1.0, 0.0

    def emit(self, event: str, **fields) -> None:
        line = json.dumps({"event": event, **fields}, ensure_ascii=False, default=str)
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def progress(self, fraction: float) -> None:
        now = time.monotonic()
        # every 0.1 % or every second: smooth bars without flooding the pipe
        if abs(fraction - self.last_fraction) >= 0.001 or now - self.last_time >= 1.0:
            self.last_fraction, self.last_time = fraction, now
            self.emit("progress", fraction=round(float(fraction), 5))

    def info(self, message: str) -> None:
        self.emit("info", message=message)

    def warning(self, message: str) -> None:
        self.emit("warning", message=message)

    def status(self, text: str) -> None:
        self.emit("status", text=text)

    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def result(self, outputs: dict) -> None:
        self.emit("result", outputs=outputs)

    def error(self, kind: str, message: str, exit_code: int) -> None:
        self.emit("error", kind=kind, message=message, exit_code=exit_code)

    def close(self) -> None:
        pass


class TerminalReporter(Reporter):
    """A tqdm bar on stderr when it is a terminal, else a plain line every 5 %."""

    def __init__(self, cancel: CancelFlag, stream=None, bar: Optional[bool] = None):
        self.cancel = cancel
        self.stream = stream or sys.stderr
        self.bar = None
        self.use_bar = self.stream.isatty() if bar is None else bar
        self.shown = -1

    def _bar(self):
        if self.bar is None and self.use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=1000, file=self.stream, unit="‰", dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
        return self.bar

    def progress(self, fraction: float) -> None:
        bar = self._bar()
        if bar is not None:
            bar.n = int(1000 * min(max(fraction, 0.0), 1.0))
            bar.refresh()
            return
        step = int(fraction * 20)
        if step > self.shown:
            self.shown = step
            self._line(f"[{100 * fraction:5.1f} %]")

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def info(self, message: str) -> None:
        self._line(message)

    def warning(self, message: str) -> None:
        self._line(f"Warning: {message}")

    def status(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)

    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def result(self, outputs: dict) -> None:
        self.close()
        for key, value in outputs.items():
            if not isinstance(value, (dict, list)):
                print(f"{key}: {value}", flush=True)   # stdout: what scripts read

    def error(self, kind: str, message: str, exit_code: int) -> None:
        self.close()
        print(f"berunda: error: {message}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class SilentReporter(Reporter):
    """Ranks other than 0 under torchrun: rank 0 speaks for the job; errors still show."""

    def __init__(self, cancel: CancelFlag, rank: int):
        self.cancel, self.rank = cancel, rank

    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def result(self, outputs: dict) -> None:
        pass

    def error(self, kind: str, message: str, exit_code: int) -> None:
        print(f"berunda (rank {self.rank}): error: {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def protocol_stream():
    """The original stdout for JSON lines; everything else that writes to stdout (print,
    C libraries) is sent to stderr so it cannot corrupt the protocol."""
    stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return stream


def make_reporter(mode: str, rank: int = 0):
    cancel = CancelFlag()
    if mode == "jsonl":
        reporter = JsonLinesReporter(protocol_stream(), cancel)
        cancel.watch_stdin()
        return reporter
    reporter = (TerminalReporter(cancel, bar=None if mode == "auto" else mode == "terminal")
                if rank == 0 else SilentReporter(cancel, rank))
    cancel.watch_sigint(reporter.info)
    return reporter
