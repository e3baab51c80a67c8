"""argparse options from the engine's parameter descriptions (engine/parameters.py), the
same descriptions the Processing algorithms are built from."""
from __future__ import annotations

import argparse
from typing import Dict, Sequence

from ..engine.parameters import Param, help_line

_TYPES = {"int": int, "float": float}


def add_options(parser: argparse.ArgumentParser, params: Sequence[Param], skip=()) -> None:
    for p in params:
        if p.id in skip or p.kind == "field" and not p.parent:
            continue
        kwargs = {"dest": p.id, "help": help_line(p, html=False).split(": ", 1)[1]}
        if p.kind in _TYPES:
            kwargs["type"] = _TYPES[p.kind]
            kwargs["metavar"] = p.kind.upper()
        elif p.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif p.kind == "enum":
            kwargs["choices"] = list(p.choices)
            if p.multiple:
                kwargs["nargs"] = "+"
        elif p.kind == "rasters":
            kwargs["nargs"] = "+"
            kwargs["metavar"] = "RASTER"
        else:
            kwargs["metavar"] = "PATH" if p.kind not in ("string", "field") else "TEXT"
        required = not p.optional and p.default is None and p.kind != "bool"
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = p.default
        parser.add_argument(p.option, **kwargs)


def values(args: argparse.Namespace, params: Sequence[Param]) -> Dict[str, object]:
    """{Processing id: value} of the parsed options."""
    return {p.id: getattr(args, p.id) for p in params if hasattr(args, p.id)}
