"""Run under a real X server (Xvfb): opens Processing's own algorithm dialog for a Berunda
algorithm in a GUI QgsApplication, saves a screenshot of the window and prints (as JSON on
the last line) what the widget tree holds.  Used by tests/test_desktop.py.

    xvfb-run -a python tests/gui_probe.py berunda:train out_prefix
"""
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".build" / "plugins"))
sys.path.insert(0, "/usr/share/qgis/python/plugins")


def pump(app, seconds=0.5):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def screenshot(app, widget, path):
    """What the X server shows of the window (falls back to rendering the widget)."""
    widget.raise_()
    widget.activateWindow()
    pump(app, 0.8)
    image = app.primaryScreen().grabWindow(int(widget.winId())).toImage()
    if image.isNull() or image.width() < 50:
        image = widget.grab().toImage()
    image.save(str(path))
    return image


def distinct_colours(image, step=7):
    colours = set()
    for y in range(0, image.height(), step):
        for x in range(0, image.width(), step):
            colours.add(image.pixel(x, y))
    return len(colours)


def main(algorithm_id, prefix):
    from qgis.core import QgsApplication

    app = QgsApplication([], True)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    from berunda.berunda_plugin.provider import BerundaProvider

    provider = BerundaProvider()   # the registry does not own Python providers: keep a reference
    QgsApplication.processingRegistry().addProvider(provider)
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.gui import QgsCollapsibleGroupBox
    from qgis.PyQt import sip
    from qgis.PyQt.QtCore import QPoint
    from qgis.PyQt.QtWidgets import QGroupBox, QScrollArea, QToolButton

    alg = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    dialog = AlgorithmDialog(alg)
    dialog.resize(1000, 820)
    dialog.show()
    pump(app, 1.0)

    panel = dialog.mainWidget()
    # sip shows QGIS's C++-created group box as a QGroupBox: cast by its real class name
    boxes = [sip.cast(b, QgsCollapsibleGroupBox) if b.metaObject().className() == "QgsCollapsibleGroupBox"
             else b for b in dialog.findChildren(QGroupBox)]
    advanced = [b for b in boxes if isinstance(b, QgsCollapsibleGroupBox)
                and b.title() == "Advanced Parameters"]
    placement = {}
    for name, wrapper in panel.wrappers.items():
        widget = wrapper.wrappedWidget() if hasattr(wrapper, "wrappedWidget") else wrapper.widget
        placement[name] = {
            "advanced_flag": bool(alg.parameterDefinition(name).flags() & 0x2),
            "in_advanced_group": bool(advanced and widget is not None and advanced[0].isAncestorOf(widget)),
            "visible": bool(widget is not None and widget.isVisibleTo(dialog)),
        }
    collapsed_before = advanced[0].isCollapsed() if advanced else None

    shot = screenshot(app, dialog, f"{prefix}.png")
    if advanced:
        advanced[0].setCollapsed(False)
        pump(app, 0.5)
        # scroll the parameters into view so the screenshot shows the advanced ones
        for area in dialog.findChildren(QScrollArea):
            if area.widget() is not None and area.widget().isAncestorOf(advanced[0]):
                top = advanced[0].mapTo(area.widget(), QPoint(0, 0)).y()
                area.verticalScrollBar().setValue(max(0, top - 40))
        pump(app, 0.3)
        screenshot(app, dialog, f"{prefix}_advanced.png")
    visible_after = {name: bool((w.wrappedWidget() if hasattr(w, "wrappedWidget") else w.widget).isVisibleTo(dialog))
                     for name, w in panel.wrappers.items()}
    result = {
        "title": dialog.windowTitle(),
        "platform": app.platformName(),
        "display": os.environ.get("DISPLAY"),
        "screenshot": f"{prefix}.png",
        "size": [shot.width(), shot.height()],
        "colours": distinct_colours(shot),
        "group_titles": [f"{b.metaObject().className()}: {b.title()}" for b in boxes],
        "advanced_groups": len(advanced),
        "advanced_collapsible": bool(advanced and any(
            b.metaObject().className() == "QgsGroupBoxCollapseButton" and b.isVisibleTo(dialog)
            for b in advanced[0].findChildren(QToolButton))),
        "advanced_collapsed_initially": collapsed_before,
        "parameters": placement,
        "visible_after_expanding": visible_after,
    }
    dialog.close()
    pump(app, 0.2)
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)   # skip QGIS's slow (and noisy) teardown


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
