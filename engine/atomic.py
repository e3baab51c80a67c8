"""Write-then-rename helpers so that no reader ever sees a half-written file."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def temporary_path_beside(path: str, suffix: str = "") -> str:
    """A fresh temporary file name in the destination's folder (same filesystem,
    so the final os.replace is atomic)."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + Path(path).name + ".", suffix=suffix + ".partial",
                               dir=folder)
    os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_output(path: str, suffix: str = ""):
    """Yield a temporary path; rename it to ``path`` on success, delete it on any error."""
    tmp = temporary_path_beside(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
