"""QGIS 4 (Qt6, PyQt6) readiness, checked without a QGIS 4: PyQt6 drops the unscoped enum
forms (``Qgis.Warning`` must be ``Qgis.MessageLevel.Warning``), Qt6 moved QAction & co. from
QtWidgets to QtGui, and a plugin without ``qgisMaximumVersion`` >= 4 is refused by QGIS 4.

The enum check asks the real QGIS bindings: every ``Name.Attr`` in the QGIS-facing code whose
``Name`` was imported from qgis.* and whose value is an enum *member* is an unscoped form (the
scoped form reaches the member through its enum type).  QGIS's own pyqt5_to_pyqt6 script
rewrites exactly these."""
import ast
import configparser
import enum
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QGIS_FACING = ["__init__.py", "berunda_plugin", "algorithms", "scripts", "tests", "bench"]
# What Qt6 moved from QtWidgets to QtGui (the Qt 6 porting guide, "Qt GUI").
MOVED_TO_QTGUI = {"QAction", "QActionGroup", "QShortcut", "QFileSystemModel", "QUndoCommand",
                  "QUndoGroup", "QUndoStack"}


def qgis_facing_files():
    for entry in QGIS_FACING:
        path = REPO / entry
        yield from ([path] if path.is_file() else sorted(path.rglob("*.py")))


def _qgis_imports(tree):
    """{local name: (module, attribute)} of the names imported from qgis.*."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "qgis":
            for alias in node.names:
                names[alias.asname or alias.name] = (node.module, alias.name)
    return names


def _is_enum_member(value) -> bool:
    if isinstance(value, type):
        return False
    return isinstance(value, enum.Enum) or type(type(value)).__name__ == "enumtype"


def unscoped_enums(source: str, filename: str = "<source>"):
    """'file:line: Name.Attr → Name.Enum.Attr' for each unscoped enum form in source."""
    tree = ast.parse(source, filename)
    imported = _qgis_imports(tree)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in imported):
            continue
        module, name = imported[node.value.id]
        try:
            owner = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        value = getattr(owner, node.attr, None)
        if _is_enum_member(value):
            # the enum's name on its class (QGIS 3.36+ keeps Type, SourceType… as aliases of
            # the Qgis.Processing… enums they moved to)
            scope = next((n for n in dir(owner) if getattr(owner, n, None) is type(value)),
                         type(value).__name__)
            found.append(f"{filename}:{node.lineno}: {node.value.id}.{node.attr} → "
                         f"{node.value.id}.{scope}.{node.attr}")
    return found


def qt6_moved_imports(source: str, filename: str = "<source>"):
    """Imports of QtWidgets names that Qt6 moved to QtGui, unless a try before them imports
    the same names from QtGui first."""
    tree = ast.parse(source, filename)
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            from_gui = {a.name for n in node.body if isinstance(n, ast.ImportFrom)
                        and (n.module or "").endswith("QtGui") for a in n.names}
            for handler in node.handlers:
                for n in handler.body:
                    if isinstance(n, ast.ImportFrom) and {a.name for a in n.names} <= from_gui:
                        guarded.add(id(n))
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.ImportFrom) and (node.module or "").endswith("QtWidgets")
                and id(node) not in guarded):
            moved = sorted({a.name for a in node.names} & MOVED_TO_QTGUI)
            if moved:
                found.append(f"{filename}:{node.lineno}: {', '.join(moved)} from QtWidgets "
                             "(Qt6: QtGui; try QtGui first)")
    return found


def test_the_checks_find_what_qgis4_refuses(qgis_app):
    """The checkers themselves: they flag the Qt5-only forms and pass the portable ones."""
    bad = ("from qgis.core import Qgis, QgsProcessingParameterNumber\n"
           "a = Qgis.Warning\nb = QgsProcessingParameterNumber.Double\n"
           "from qgis.PyQt.QtWidgets import QAction, QPushButton\n")
    good = ("from qgis.core import Qgis, QgsProcessingParameterNumber, QgsProcessing\n"
            "a = Qgis.MessageLevel.Warning\nb = QgsProcessingParameterNumber.Type.Double\n"
            "c = Qgis.QGIS_VERSION\nd = QgsProcessing.TEMPORARY_OUTPUT\n"
            "try:\n    from qgis.PyQt.QtGui import QAction\n"
            "except ImportError:\n    from qgis.PyQt.QtWidgets import QAction\n")
    found = [f.split(": ", 1)[1] for f in unscoped_enums(bad)]
    assert [f.split(" → ")[0] for f in found] == ["Qgis.Warning",
                                                  "QgsProcessingParameterNumber.Double"]
    assert found[0].endswith("Qgis.MessageLevel.Warning")
    assert len(qt6_moved_imports(bad)) == 1
    assert unscoped_enums(good) == [] and qt6_moved_imports(good) == []


def test_no_unscoped_enum_or_qt5_only_import_in_qgis_facing_code(qgis_app):
    files = list(qgis_facing_files())
    assert len(files) > 30
    offenders = []
    for path in files:
        source = path.read_text(encoding="utf-8")
        if "qgis" not in source:
            continue
        name = str(path.relative_to(REPO))
        offenders += unscoped_enums(source, name) + qt6_moved_imports(source, name)
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("key, wanted", [("qgisMinimumVersion", "3.22"),
                                         ("qgisMaximumVersion", "4.99")])
def test_metadata_admits_qgis_3_22_to_4(key, wanted):
    meta = configparser.ConfigParser()
    meta.read(REPO / "metadata.txt")
    assert meta["general"].get(key) == wanted, f"metadata.txt: {key} must be {wanted}"
