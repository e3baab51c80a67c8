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
