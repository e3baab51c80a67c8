"""How the engine reports progress and learns of cancellation, without QGIS.

The Processing algorithms pass an adapter over QgsProcessingFeedback; the
command line and tests pass ``Reporter()`` or a subclass.
"""
from __future__ import annotations


class Reporter:
    """Default reporter: silent and never cancelled."""

    def progress(self, fraction: float) -> None:
        """Overall progress in [0, 1]."""

    def info(self, message: str) -> None:
        """A line for the log."""

    def warning(self, message: str) -> None:
        """Something the user should act on; the work goes on.  Default: an info line."""
        self.info(f"Warning: {message}")

    def status(self, text: str) -> None:
        """A short progress text (e.g. the time left); default: not shown."""

    def cancelled(self) -> bool:
        return False


class PrintReporter(Reporter):
    """Prints log lines (command line, demo)."""

    def info(self, message: str) -> None:
        print(message, flush=True)


class ScaledReporter(Reporter):
    """Maps a sub-job's [0, 1] onto [start, end] of a parent reporter."""

    def __init__(self, parent: Reporter, start: float, end: float):
        self.parent, self.start, self.end = parent, start, end

    def progress(self, fraction: float) -> None:
        self.parent.progress(self.start + (self.end - self.start) * min(max(fraction, 0.0), 1.0))

    def info(self, message: str) -> None:
        self.parent.info(message)

    def warning(self, message: str) -> None:
        self.parent.warning(message)

    def status(self, text: str) -> None:
        self.parent.status(text)

    def cancelled(self) -> bool:
        return self.parent.cancelled()
