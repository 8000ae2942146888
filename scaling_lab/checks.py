"""Numeric config values, checked before any work starts: one line naming the key, raised as the caller's error.

Every stage raises its own error type (the CLI prints any of them as one line), but "an integer >= 1" or "a number
in (0, 1]" is checked and worded here alone, so the same kind of knob behaves the same in every config group.
"""

from __future__ import annotations

import math
from typing import Any


def count(key: str, value: Any, low: int = 1, high: float = math.inf, *, besides: tuple = (),
          error: type[Exception] = ValueError) -> Any:
    """`value`, unless it is neither an integer in [low, high] nor one of `besides` (e.g. None, "auto").

    YAML's true is no count, though Python's bool is an int.
    """
    if value in besides:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bounds = f"in [{low}, {high}]" if high < math.inf else f">= {low}"
        raise error(f"{key} must be an integer {bounds}{_spelled(besides)}, got {value!r}")
    return value


def number(key: str, value: Any, interval: str, *, besides: tuple = (), error: type[Exception] = ValueError) -> Any:
    """`value`, unless it is neither a number in `interval` (written as in maths: "(0, 1]", "[0, inf)") nor one of
    `besides`. NaN is in no interval."""
    if value in besides:
        return value
    low, high = (float(end) for end in interval[1:-1].split(","))
    inside = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and (low < value if interval[0] == "(" else low <= value)
              and (value < high if interval[-1] == ")" else value <= high))
    if not inside:
        raise error(f"{key} must be a number in {interval}{_spelled(besides)}, got {value!r}")
    return value


def _spelled(besides: tuple) -> str:
    """How the accepted non-numbers read in a message, in YAML's words."""
    return " or " + ", ".join("null" if other is None else str(other) for other in besides) if besides else ""
