"""Registry of auxiliary tasks, by id.  Adding a task = one file + one import here."""
from __future__ import annotations

import inspect
from typing import Dict, Type

from .base import AuxiliaryTask, PreparedBatch, unlabeled_rows

TASKS: Dict[str, Type[AuxiliaryTask]] = {}


def register(cls: Type[AuxiliaryTask]) -> Type[AuxiliaryTask]:
    TASKS[cls.task_id] = cls
    return cls


def get_task(task_id: str, **params) -> AuxiliaryTask:
    """Instantiate a task; ``params`` are its hyper-parameters (unknown ones are an error)."""
    try:
        cls = TASKS[task_id]
    except KeyError:
        raise ValueError(
            f"Unknown auxiliary task {task_id!r}; choose one of {', '.join(TASKS)}"
        ) from None
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"Unknown parameter(s) {', '.join(unknown)} for task {task_id!r}; "
            + (f"it accepts: {', '.join(accepted)}" if accepted else "it takes no parameters")
        )
    return cls(**params)


# Import order = order shown to users.
from . import none, reconstruction, kmeans, mumford_shah, inpainting, jigsaw, consistency  # noqa: E402,F401,E501

__all__ = ["AuxiliaryTask", "PreparedBatch", "TASKS", "get_task", "register", "unlabeled_rows"]
