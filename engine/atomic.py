"""Write-then-rename helpers so that no reader ever sees a half-written file."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence


def ensure_folder(path: str, label: str) -> str:
    """Create the folder of an output file if it is missing (as QGIS's own algorithms
    do); refuse, naming ``label`` and the folder, when it cannot be created or written."""
    from .errors import OutputError

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OutputError(f"The {label} {path} is a folder; give a file name.")
    if not os.path.isdir(folder):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"Cannot write the {label} {path}: the folder {folder} cannot be "
                              f"created ({exc.strerror or exc}; is part of it a file?). Choose "
                              "another folder.") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write the {label} {path}: the folder {folder} is not "
                          "writable. Choose another folder.")
    return folder


def temporary_path_beside(path: str, suffix: str = "") -> str:
    """A fresh temporary file name in the destination's folder (same filesystem,
    so the final os.replace is atomic)."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + Path(path).name + ".", suffix=suffix + ".partial",
                               dir=folder)
    os.close(fd)
    return tmp


def _ordinary_permissions(path: str) -> None:
    """mkstemp makes 0600 files; give the output the permissions a plain open() would."""
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_output(path: str, suffix: str = ""):
    """Yield a temporary path; rename it to ``path`` on success, delete it on any error."""
    tmp = temporary_path_beside(path, suffix)
    try:
        yield tmp
        _ordinary_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


# GDAL side-cars that belong to a raster: PAM metadata (category names, statistics)
# and an external mask.
RASTER_SIDECARS = (".aux.xml", ".msk")


@contextlib.contextmanager
def atomic_raster_output(path: str):
    """atomic_output for a raster and its GDAL side-cars: those written beside the
    temporary file move with it; stale ones of an older file at ``path`` (QGIS's
    cached statistics, old category names) are removed."""
    with atomic_output(path) as tmp:
        try:
            yield tmp
            for ext in RASTER_SIDECARS:
                if os.path.exists(tmp + ext):
                    os.replace(tmp + ext, path + ext)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path + ext)
        except BaseException:
            for ext in RASTER_SIDECARS:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp + ext)
            raise


def size_text(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def write_failure_message(what: str, paths: Sequence[str], needed: int, exc: BaseException,
                          kept: str = "nothing was written") -> str:
    """Why writing ``paths`` failed, for a user: the space they need, the space free in
    their folder and any file-size limit of this process (disk full, quota, ulimit -f)."""
    folder = os.path.dirname(os.path.abspath(paths[0])) or "."
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    limit = None
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        limit = None if soft == resource.RLIM_INFINITY else soft
    if free is not None and free < needed:
        cause = f"the disk is full: {size_text(free)} free in {folder}"
    elif limit is not None and limit < needed:
        cause = f"this process may not write files over {size_text(limit)} (ulimit -f)"
    else:
        cause = ("the disk may be full or a quota reached" +
                 (f"; {size_text(free)} free in {folder} now" if free is not None else ""))
    detail = getattr(exc, "__cause__", None) or exc
    return (f"Could not write the {what} {', '.join(map(str, paths))}: {cause} ({detail}). "
            f"It needs up to {size_text(needed)}. Free some space or choose another folder; "
            f"{kept}.")


def remove_partial_files(path: str) -> list:
    """Delete what a killed writer left of ``path``'s temporary files (and their side-cars);
    the names deleted."""
    import glob

    folder = os.path.dirname(os.path.abspath(path)) or "."
    pattern = os.path.join(glob.escape(folder), "." + glob.escape(Path(path).name) + ".*.partial*")
    removed = []
    for leftover in glob.glob(pattern):
        with contextlib.suppress(OSError):
            os.remove(leftover)
            removed.append(leftover)
    return removed
