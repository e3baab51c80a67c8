"""Test harness: makes the repo importable as the ``berunda`` package (as QGIS
sees it once installed), points at the shared sample data, and starts one real
QgsApplication for the algorithm tests."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGINS_DIR = REPO / ".build" / "plugins"
DATA_DIR = Path(os.environ.get("BERUNDA_DATA", REPO.parent / "shared" / "data" / "dubai"))


def _ensure_plugin_link() -> None:
    PLUGINS_DIR.mkdir(parents=True, exist_ok=True)
    link = PLUGINS_DIR / "berunda"
    if not link.exists():
        try:
            link.symlink_to(REPO, target_is_directory=True)
        except FileExistsError:   # another pytest-xdist worker made it first
            pass


_ensure_plugin_link()
sys.path.insert(0, str(PLUGINS_DIR))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# `make test` runs two pytest-xdist workers on two cores: one thread each (two threads
# each would oversubscribe the CPU and slow training ~10×); alone, two threads.  A worker
# sets it outright: it inherits the controller's environment, where the default of 2
# was already set (so every worker ran 2 threads until this was found).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
else:
    os.environ.setdefault("OMP_NUM_THREADS", "2")
# The algorithms run Berunda's engine in a child process: the venv's interpreter, where
# torch, smp and rasterio are installed (a real user's QGIS uses its package folder).
os.environ.setdefault("BERUNDA_PYTHON", str(REPO / ".venv" / "bin" / "python"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "images").is_dir():
        pytest.fail(f"Sample data not found at {DATA_DIR}; set BERUNDA_DATA to the dubai folder")
    return DATA_DIR


def dubai_pair(name: str):
    return str(DATA_DIR / "images" / f"{name}.tif"), str(DATA_DIR / "labels" / f"{name}.tif")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny convolutions on a shared 2-core machine: one thread wastes less time spinning."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def qgis_app():
    """One real QgsApplication with Processing and the Berunda provider loaded."""
    from qgis.core import QgsApplication

    app = QgsApplication.instance()
    if app is None:
        app = QgsApplication([], False)
        app.initQgis()
    sys.path.insert(0, "/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    from berunda.berunda_plugin.provider import BerundaProvider

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("berunda")
    if provider is None:
        provider = BerundaProvider()   # keep a Python reference: the registry does not
        registry.addProvider(provider)
    yield app


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test`), the tests sharing a module-scoped fixture (a trained
    model, a comparison grid) run on one worker, so the fixture is built once, not per worker."""
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        defs = getattr(item, "_fixtureinfo", None)
        if defs and any(d[-1].scope == "module" for d in defs.name2fixturedefs.values() if d):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(scope="session", autouse=True)
def torch_threads_not_raised():
    """A test module that raises torch's thread count when imported does so in every
    xdist worker for the whole run: two workers × two threads on two cores slowed every
    training several-fold.  Checked once the modules are imported (collection)."""
    torch = sys.modules.get("torch")
    allowed = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if torch is not None and allowed and torch.get_num_threads() > allowed:
        pytest.fail(f"a test module set torch to {torch.get_num_threads()} threads at import "
                    f"(OMP_NUM_THREADS={allowed}); use the one_torch_thread fixture instead")
