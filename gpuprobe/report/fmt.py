"""Formatting shared by every report: terminal tables, HTML, Markdown and plot axes."""

from __future__ import annotations

NA = "—"
"""A figure that is not there."""


def size_label(n: float | None) -> str:
    """Bytes in binary units with no trailing zeros (``512 B``, ``1.5 KiB``, ``8 MiB``); ``NA`` for None."""
    if n is None:
        return NA
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:g} {unit}"
    return f"{n:g} B"
