"""Default class colours (used when neither the model nor a colour table names them)."""
from __future__ import annotations

from typing import Sequence, Tuple

# A categorical palette with good contrast on imagery (Tableau 20 ordering).
PALETTE = [
    "#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#7F7F7F",
    "#BCBD22", "#17BECF", "#AEC7E8", "#FFBB78", "#98DF8A", "#FF9896", "#C5B0D5", "#C49C94",
    "#F7B6D2", "#C7C7C7", "#DBDB8D", "#9EDAE5",
]


def default_color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def hex_to_rgba(color: str, alpha: int = 255) -> Tuple[int, int, int, int]:
    """'#RRGGBB' or '#RRGGBBAA' (the '#' is optional) -> (r, g, b, a) in 0..255."""
    c = str(color).strip().lstrip("#")
    if len(c) not in (6, 8):
        raise ValueError(f"Colour {color!r} is not of the form #RRGGBB or #RRGGBBAA.")
    try:
        parts = [int(c[i:i + 2], 16) for i in range(0, len(c), 2)]
    except ValueError:
        raise ValueError(f"Colour {color!r} is not of the form #RRGGBB or #RRGGBBAA.") from None
    return (parts[0], parts[1], parts[2], parts[3] if len(parts) == 4 else alpha)


def rgba_to_hex(rgba: Sequence[int]) -> str:
    return "#%02X%02X%02X" % tuple(int(v) for v in rgba[:3])
