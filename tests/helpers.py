"""Small shared helpers for the tests (tiny training settings, qgis_process runner)."""
import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERUNDA_DATA", REPO.parent / "shared" / "data" / "dubai"))

# Small enough for a 2-core CPU, large enough to run every part of the loop.
TINY = {"ENCODER": "resnet18", "ENCODER_WEIGHTS": "none", "TILE_SIZE": 64, "BATCH_SIZE": 2, "EPOCHS": 1,
        "SAMPLES_PER_EPOCH": 4, "MASK_SIZE": 16, "CLUSTERS": 4, "PERMUTATIONS": 10}


def image(name):
    return str(DATA / "images" / f"{name}.tif")


def label(name):
    return str(DATA / "labels" / f"{name}.tif")


def qgis_process(*args, timeout=600):
    """Run scripts/qgis_process --json run ...; returns (returncode, parsed JSON or None, stderr)."""
    proc = subprocess.run([str(REPO / "scripts" / "qgis_process"), "--json", "run", *args],
                          capture_output=True, text=True, timeout=timeout)
    try:
        payload = json.loads(proc.stdout)
    except ValueError:
        payload = None
    return proc.returncode, payload, proc.stderr + proc.stdout[-4000:]


def recording_feedback(on_info=None):
    """A real QgsProcessingFeedback that keeps what it is told: ``infos``, ``warnings``,
    ``console`` lines, progress ``texts`` and ``progress_values``.  ``on_info(feedback,
    line)`` runs after each info line (e.g. to cancel).  Made lazily: needs QGIS."""
    from qgis.core import QgsProcessingFeedback

    class Recorder(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.infos, self.warnings, self.console, self.texts = [], [], [], []
            self.progress_values = []
            self.progressChanged.connect(self.progress_values.append)

        def pushInfo(self, info):  # noqa: N802 (QGIS API)
            super().pushInfo(info)
            self.infos.append(info)
            if on_info is not None:
                on_info(self, info)

        def pushWarning(self, warning):  # noqa: N802
            super().pushWarning(warning)
            self.warnings.append(warning)

        def pushConsoleInfo(self, text):  # noqa: N802
            super().pushConsoleInfo(text)
            self.console.append(text)

        def setProgressText(self, text):  # noqa: N802
            super().setProgressText(text)
            self.texts.append(text)

    return Recorder()


def as_cli(params):
    """{'A': [x, y], 'B': 1} -> ['A=x', 'A=y', 'B=1'] (qgis_process repeats keys for lists)."""
    out = []
    for key, value in params.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            out.append(f"{key}={v}")
    return out


def read_crop(path, row, col, size):
    """(data, georeferencing, colour table or None) of a size×size window of a raster."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as ds:
        window = Window(col, row, size, size)
        data = ds.read(window=window)
        geo = {"crs": ds.crs, "transform": ds.window_transform(window), "nodata": ds.nodata}
        try:
            cmap = ds.colormap(1)
        except ValueError:
            cmap = None
    return data, geo, cmap


def write_raster(path, data, geo, colormap=None, **overrides):
    """Write (bands, H, W) ``data`` as a GeoTIFF with ``geo`` (crs, transform, nodata)."""
    import rasterio

    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, crs=geo["crs"], transform=geo["transform"],
                   nodata=geo.get("nodata"))
    profile.update(overrides)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if colormap is not None:
            dst.write_colormap(1, colormap)
    return str(path)


def crop(src, dst, window):
    """A window of a GeoTIFF (georeferencing, nodata and colour table kept)."""
    import rasterio

    with rasterio.open(src) as ds:
        profile = ds.profile
        profile.update(width=window.width, height=window.height,
                       transform=ds.window_transform(window), driver="GTiff")
        profile.pop("photometric", None)
        profile["compress"] = "deflate"
        data = ds.read(window=window)
        try:
            colours = ds.colormap(1)
        except ValueError:
            colours = None
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
        if colours and profile["count"] == 1:
            out.write_colormap(1, colours)
    return str(dst)


def patch_engine(monkeypatch, folder, code):
    """Run ``code`` at the start of every engine process the algorithms start from now on
    (a sitecustomize.py first on the child's PYTHONPATH): how a test reaches into the engine,
    which runs in its own process."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(code)
    current = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", str(folder) + (os.pathsep + current if current else ""))
