"""How figures are written for people, the same in report.md, the console, the charts and each
pass's own section: sizes in binary units, a steered pass's goal."""

from __future__ import annotations

from typing import Any


def size_unit(size: float) -> tuple[float, str]:
    """(bytes per unit, unit name): the largest binary unit `size` fills at least once."""
    for scale, unit in ((1024 ** 3, "GiB"), (1024 ** 2, "MiB"), (1024, "KiB")):
        if size >= scale:
            return float(scale), unit
    return 1.0, "B"


def human_size(size: int) -> str:
    scale, unit = size_unit(size)
    return f"{size:.0f} B" if unit == "B" else f"{size / scale:.1f} {unit}"


def goal_text(goal: dict[str, Any]) -> str:
    """A steered pass's goal as its report section states it ({metric, maxAccuracyDrop, mode})."""
    return "none" if goal["maxAccuracyDrop"] is None else f"drop ≤ {goal['maxAccuracyDrop']:g} ({goal['mode']})"
