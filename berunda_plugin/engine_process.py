"""Running Berunda's engine in its own process, from QGIS.

QGIS's process never imports torch, segmentation-models-pytorch, timm or rasterio: in
the desktop, importing the CUDA build of torch loads triton's LLVM next to the one Mesa's
OpenGL driver already loaded and aborts QGIS; and QGIS's own older copies of torch's
dependencies would shadow the installed ones.  Each algorithm therefore starts
``python -m berunda --messages jsonl <command> …`` (the command line, cli/) with the
engine's interpreter and search path (dependencies.engine_python / engine_search_path),
turns its JSON lines into Processing feedback, sends "cancel" on its stdin when the user
cancels, and turns an engine crash into a clear error with the engine's last log lines.
A process per run also frees all GPU memory when it ends.  No QGIS import here.
"""
from __future__ import annotations

import collections
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

from ..engine.atomic import remove_partial_files
from ..engine.environment import QGIS_NUMPY_ENV
from . import dependencies

PACKAGE = os.path.basename(dependencies.PLUGIN_DIR)   # "berunda" once installed
CANCEL_GRACE_S = 120.0   # a training step on a slow CPU can take this long
# Variables that point rasterio's own GDAL/PROJ (bundled in its wheels) at QGIS's data
# files of another version; the engine process does without them.
FOREIGN_DATA_VARIABLES = ("GDAL_DATA", "PROJ_LIB", "PROJ_DATA", "GDAL_DRIVER_PATH")

_FIRST_RUN_DONE = False


class EngineError(Exception):
    """The engine refused or failed; the message is meant for the user as it is."""

    def __init__(self, message: str, kind: str = "", exit_code: Optional[int] = None):
        super().__init__(message)
        self.kind, self.exit_code = kind, exit_code


class Feedback:
    """What the runner tells the caller (Processing's feedback, adapted in algorithms/)."""

    def info(self, message: str) -> None: ...
    def warning(self, message: str) -> None: ...
    def progress(self, fraction: float) -> None: ...
    def status(self, text: str) -> None: ...
    def cancelled(self) -> bool: return False


def engine_command(args: List[str], describe: bool = False) -> List[str]:
    cmd = [dependencies.engine_python(), "-m", PACKAGE, "--messages", "jsonl"]
    if describe:
        cmd.append("--describe-environment")
    return cmd + list(args)


def engine_environment() -> Dict[str, str]:
    env = dict(os.environ)
    path = dependencies.engine_search_path()
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    if not os.environ.get(dependencies.PYTHON_ENV, "").strip():
        for name in FOREIGN_DATA_VARIABLES:
            env.pop(name, None)
        # QGIS's own folders end the engine's path: its numpy must keep QGIS's major version.
        numpy = dependencies.qgis_numpy()
        if numpy:
            env[QGIS_NUMPY_ENV] = numpy
    return env


def run_engine(args: List[str], feedback: Feedback, outputs_written=()) -> dict:
    """Run one engine command; return its outputs, or raise EngineError.  After a crash the
    temporary files of ``outputs_written`` (their final names) are removed: a killed engine
    cannot clean up, and no half-written file may stay behind."""
    global _FIRST_RUN_DONE
    describe = not _FIRST_RUN_DONE
    cmd = engine_command(args, describe)
    log_dir = tempfile.mkdtemp(prefix="berunda_engine_")
    log_path = os.path.join(log_dir, "engine.log")
    kwargs = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
              if sys.platform.startswith("win") else {"start_new_session": True})
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=engine_environment(), text=True,
                                encoding="utf-8", errors="replace", bufsize=1, **kwargs)
    except OSError as exc:
        shutil.rmtree(log_dir, ignore_errors=True)
        raise EngineError(
            f"Cannot start Berunda's engine with {cmd[0]} ({exc}). Check the interpreter "
            f"(${dependencies.PYTHON_ENV}, or QGIS's own Python) with berunda:diagnostics.",
            "StartError") from None
    events: "queue.Queue[Optional[dict]]" = queue.Queue()
    tail: "collections.deque[str]" = collections.deque(maxlen=40)
    readers = [threading.Thread(target=_read_events, args=(proc.stdout, events, tail), daemon=True),
               threading.Thread(target=_read_log, args=(proc.stderr, log_path, tail), daemon=True)]
    for thread in readers:
        thread.start()
    outputs, error, cancel_sent = None, None, None
    try:
        while True:
            if feedback.cancelled() and cancel_sent is None:
                cancel_sent = time.monotonic()
                _send_cancel(proc)
            if cancel_sent is not None and time.monotonic() - cancel_sent > CANCEL_GRACE_S:
                kill_tree(proc)
            try:
                event = events.get(timeout=0.1)
            except queue.Empty:
                continue
            if event is None:
                break
            kind = event.get("event")
            if kind == "result":
                outputs = event.get("outputs") or {}
            elif kind == "error":
                error = event
            else:
                _dispatch(event, feedback)
        code = proc.wait()
    finally:
        if proc.poll() is None:
            kill_tree(proc)
        for thread in readers:
            thread.join(timeout=5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
    if code == 0 and outputs is not None:
        _FIRST_RUN_DONE = True
        shutil.rmtree(log_dir, ignore_errors=True)
        return outputs
    if error is not None:
        if error.get("exit_code") != 3:
            _FIRST_RUN_DONE = True
        shutil.rmtree(log_dir, ignore_errors=True)
        raise EngineError(error.get("message") or "The engine failed.", error.get("kind", ""),
                          code)
    if cancel_sent is not None:
        shutil.rmtree(log_dir, ignore_errors=True)
        raise EngineError("Cancelled: the engine was stopped.", "Cancelled", code)
    for path in outputs_written:
        if path:
            remove_partial_files(path)
    last = "\n".join(tail) or "(it wrote nothing)"
    raise EngineError(
        f"Berunda's engine stopped unexpectedly ({describe_exit(code)}). QGIS is not affected; "
        f"the outputs of this run were not written. The engine's last lines:\n{last}\n"
        f"Its whole log: {log_path}. Run berunda:diagnostics and include both in a bug report.",
        "Crash", code)


def describe_exit(code: int) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {"SIGKILL": " — often the system running out of memory",
                "SIGSEGV": " — a crash in a compiled library",
                "SIGABRT": " — a compiled library aborted"}.get(name, "")
        return f"killed by {name}{hint}"
    return f"exit code {code}"


def _dispatch(event: dict, feedback: Feedback) -> None:
    kind = event.get("event")
    if kind == "info":
        feedback.info(event.get("message", ""))
    elif kind == "warning":
        feedback.warning(event.get("message", ""))
    elif kind == "progress":
        feedback.progress(float(event.get("fraction", 0.0)))
    elif kind == "status":
        feedback.status(event.get("text", ""))


def _read_events(stream, events: "queue.Queue", tail) -> None:
    try:
        for line in stream:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                tail.append(line)   # not protocol: keep it for the crash message
                continue
            if isinstance(event, dict):
                events.put(event)
    finally:
        events.put(None)


def _read_log(stream, log_path: str, tail) -> None:
    with open(log_path, "w", encoding="utf-8") as log:
        for line in stream:
            log.write(line)
            log.flush()
            tail.append(line.rstrip("\r\n"))


def _send_cancel(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.write("cancel\n")
        proc.stdin.flush()
    except (OSError, ValueError):   # it already ended
        pass


def kill_tree(proc: subprocess.Popen) -> None:
    """Stop the process and its children (it leads its own process group)."""
    if proc.poll() is not None:
        return
    try:
        if sys.platform.startswith("win"):
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(proc.pid)], capture_output=True,
                           timeout=30)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except Exception:  # noqa: BLE001 - fall back to killing the process itself
        pass
    if proc.poll() is None:
        try:
            if not sys.platform.startswith("win"):
                os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.kill()
        proc.wait(timeout=10)
