"""Small shared helpers for the tests (tiny training settings, qgis_process runner)."""
import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERUNDA_DATA", REPO.parent / "shared" / "data" / "dubai"))

# Small enough for a 2-core CPU, large enough to run every part of the loop.
TINY = {"ENCODER": "resnet18", "TILE_SIZE": 64, "BATCH_SIZE": 2, "EPOCHS": 1,
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


def as_cli(params):
    """{'A': [x, y], 'B': 1} -> ['A=x', 'A=y', 'B=1'] (qgis_process repeats keys for lists)."""
    out = []
    for key, value in params.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            out.append(f"{key}={v}")
    return out
