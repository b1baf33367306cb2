"""Range checks of number options at the CLI boundary: finite, in range, and the range in the message (exit 2)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import typer

N = TypeVar("N", int, float, "int | None", "float | None")


def _num(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:g}"


def _describe(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"{'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_num(low)}"
    assert high is not None
    return f"{'<' if high_open else '<='} {_num(high)}"


def within(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Callable[[N], N]:
    """A typer ``callback`` that passes a finite value in the range through (None too: the option was not given)
    and turns anything else, NaN and infinities included, into a usage error that states the range."""
    allowed = _describe(low, high, low_open, high_open)

    def check(value: N) -> N:
        if value is None:
            return value
        bad = not math.isfinite(value)
        if low is not None:
            bad = bad or value < low or (low_open and value == low)
        if high is not None:
            bad = bad or value > high or (high_open and value == high)
        if bad:
            raise typer.BadParameter(f"{value!r} is outside the allowed range: {allowed}")
        return value

    return check
