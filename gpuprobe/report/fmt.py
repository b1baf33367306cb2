"""Formatting shared by every report: terminal tables, HTML, Markdown and plot axes."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rich.markup import escape

NA = "—"
"""A figure that is not there."""


def host_line(cpu_model: str | None, loop_ns: float | None) -> str | None:
    """``host: CPU, Python loop N ns/iteration`` from a run header's host facts; None when it has neither."""
    if not (cpu_model or loop_ns):
        return None
    return f"host: {cpu_model or NA}" + (f", Python loop {loop_ns:.0f} ns/iteration" if loop_ns else "")


def size_label(n: float | None) -> str:
    """Bytes in binary units with no trailing zeros (``512 B``, ``1.5 KiB``, ``8 MiB``); ``NA`` for None."""
    if n is None:
        return NA
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:g} {unit}"
    return f"{n:g} B"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(value: object) -> str:
    """Text from a file, a path or a user, made safe for a terminal: tabs and line breaks become spaces, every other
    control character (ESC of an escape sequence, BEL, C1 codes) its visible ``\\xNN`` spelling. None is ``""``."""
    if value is None:
        return ""
    return _CONTROL.sub(lambda m: " " if m.group() in "\t\n\r" else f"\\x{ord(m.group()):02x}", str(value))


def safe(value: object) -> str:
    """``plain(value)`` for a place rich reads as markup (a table cell, a title, an f-string with styles): its
    brackets are escaped, so a name such as ``[/x]`` or ``[bold]x[/bold]`` is printed as it is."""
    return escape(plain(value))


def ranks_label(ranks: Sequence[int]) -> str:
    """A group's ranks for a label: all of them up to 8 (``0,1,2,3``), else the span and the count
    (``0-1023 (1,024 ranks)``, or the first four and the count when they are not consecutive)."""
    ranks = list(ranks)
    if len(ranks) <= 8:
        return ",".join(map(str, ranks))
    if ranks == list(range(ranks[0], ranks[0] + len(ranks))):
        return f"{ranks[0]}-{ranks[-1]} ({len(ranks):,} ranks)"
    return ",".join(map(str, ranks[:4])) + f",... ({len(ranks):,} ranks)"

