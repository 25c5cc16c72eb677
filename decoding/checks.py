"""Argument checks for processors, switching, training configs and controls, with messages that name the argument and its range."""

from __future__ import annotations

import math
from typing import Any


def in_range(name: str, value: Any, low: float, high: float = math.inf, *, open_low: bool = False) -> float:
    """``value`` as a float, if it is a number in ``[low, high]`` (``(low, high]`` when ``open_low``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"`{name}` must be a number, got {value!r}")
    if (value <= low if open_low else value < low) or value > high:
        interval = f"{'(' if open_low else '['}{low}, {high}{']' if high != math.inf else ')'}"
        raise ValueError(f"`{name}` must be in {interval}, got {value!r}")
    return float(value)


def at_least(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}")
    return value


def one_of(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {', '.join(allowed)}, got {value!r}")
    return value
