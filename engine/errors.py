"""Exceptions the engine raises for bad input or interrupted work.

Each message is meant for a GIS operator: it names the file or parameter and
says how to fix it.  The Processing algorithms turn them into
QgsProcessingException unchanged.
"""


class BerundaError(Exception):
    """Base class: an expected failure with a user-facing message."""


class InvalidParameterError(BerundaError):
    """A parameter value is out of range or inconsistent."""


class RasterError(BerundaError):
    """A raster cannot be used as given (unreadable, mismatched grid, wrong type)."""


class DataError(BerundaError):
    """The data cannot train a model (no labels, a single class, nothing valid)."""


class ModelFileError(BerundaError):
    """A file is not a usable Berunda model (wrong format, truncated, unsafe, incompatible)."""


class Cancelled(BerundaError):
    """The user cancelled; nothing half-written is left behind."""


class TrainingCancelled(Cancelled):
    """The user cancelled training; the last complete checkpoint is kept."""


class NonFiniteLossError(BerundaError):
    """The loss became NaN or infinite."""


class OutputError(BerundaError):
    """An output path cannot be written, or would overwrite an input."""


class WeightsError(BerundaError):
    """Pretrained weights cannot be used (unreadable or unsafe file, weights of another
    encoder, download impossible)."""


class MissingDependencyError(BerundaError):
    """An optional package a feature needs is not installed; the message gives the pip command."""


class ExportError(BerundaError):
    """An export could not be written or failed its check; nothing is left behind."""
