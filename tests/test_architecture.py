"""Keeps the layering honest: the core never imports qgis, the plugin's import
path never imports torch, and the algorithms' static task list matches the
task registry."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = ["engine", "models"]


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
            if top in ("qgis", "processing", "PyQt5") or module.startswith(
                    ("berunda.algorithms", "berunda.berunda_plugin")):
                offenders.append(f"{path.relative_to(REPO)} imports {module}")
    assert not offenders, offenders


def test_import_scan_detects_a_qgis_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from qgis.core import QgsApplication\n")
    assert "qgis.core" in list(imported_modules(bad))


def test_static_task_list_matches_registry():
    from berunda.algorithms.training_parameters import PAPER_LAMBDA, TASK_IDS
    from berunda.models.tasks import TASKS

    assert TASK_IDS == list(TASKS)
    assert PAPER_LAMBDA == {k: cls.default_lambda for k, cls in TASKS.items()}
