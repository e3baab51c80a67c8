"""Keeps the layering honest: the core and the command line never import qgis, QGIS's side
(algorithms/, berunda_plugin/) never imports torch & co. — not even through the engine —
and the algorithms' static task list matches the task registry."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = ["engine", "models", "cli"]
QGIS_SIDE = ["algorithms", "berunda_plugin"]
HEAVY = ("torch", "segmentation_models_pytorch", "rasterio", "timm", "onnx", "onnxruntime")


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.module
            elif node.level >= 2 and node.module:
                yield "berunda." + node.module   # ..x from inside a subpackage


def test_core_never_imports_qgis_or_plugin_code():
    offenders = []
    files = [p for d in CORE for p in (REPO / d).rglob("*.py")]
    assert len(files) > 10
    for path in files:
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top in ("qgis", "processing", "PyQt5", "PyQt6") or module.startswith(
                    ("berunda.algorithms", "berunda.berunda_plugin")):
                offenders.append(f"{path.relative_to(REPO)} imports {module}")
    assert not offenders, offenders


def _module_file(module: str):
    """berunda.engine.job -> REPO/engine/job.py (None outside the plugin)."""
    if not module.startswith("berunda."):
        return None
    path = REPO.joinpath(*module.split(".")[1:])
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def heavy_imports(path: Path, seen=None):
    """Heavy modules imported by ``path`` or, transitively, by the plugin modules it imports
    at module level (imports inside functions run in the engine process, not in QGIS)."""
    seen = set() if seen is None else seen
    if path in seen:
        return set()
    seen.add(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    package = "berunda." + ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    for node in tree.body:   # module level only
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level == 0:
                names = [node.module]
            else:
                base = package.rstrip(".").split(".")
                base = base[:len(base) - (node.level - 1)]
                names = [".".join(base + [node.module])]
        for name in names:
            if name.split(".")[0] in HEAVY:
                found.add(f"{path.relative_to(REPO)} imports {name}")
            target = _module_file(name)
            if target is not None:
                found |= heavy_imports(target, seen)
    return found


def test_qgis_side_never_imports_torch_smp_timm_or_rasterio():
    files = [p for d in QGIS_SIDE for p in (REPO / d).rglob("*.py")] + [REPO / "__init__.py"]
    offenders = set()
    for path in files:
        offenders |= heavy_imports(path)
    assert not offenders, sorted(offenders)


def test_heavy_import_scan_follows_the_plugin_modules(tmp_path):
    assert heavy_imports(REPO / "engine" / "trainer.py")   # torch, directly
    assert heavy_imports(REPO / "engine" / "validation.py") == set()   # only inside functions


def test_import_scan_detects_a_qgis_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from qgis.core import QgsApplication\n")
    assert "qgis.core" in list(imported_modules(bad))


def test_static_task_list_matches_registry():
    from berunda.algorithms.training_parameters import PAPER_LAMBDA, TASK_IDS
    from berunda.models.tasks import TASKS

    assert TASK_IDS == list(TASKS)
    assert PAPER_LAMBDA == {k: cls.default_lambda for k, cls in TASKS.items()}
