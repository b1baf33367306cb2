"""Fit a rich table to the terminal without cutting a value: the table, narrowed, or one record per block.

rich narrows a table that is too wide by shrinking its widest columns, down to cutting numbers across lines
("446," / "240") or behind an ellipsis. Here every column keeps at least the width of its longest word (a
number, a probe key or a path is one word), so wrapping only ever happens between words. When even that does
not fit, the rows are printed as blocks: the key cells on one line, then ``header: value`` items packed into
the width, each item whole. ``wide`` keeps the full table whatever the width (the caller prints it uncut).
"""

from __future__ import annotations

import re

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

READABLE = 8
"""A wrapping column narrower than this (and than its content) reads badly: the rows become blocks instead."""
TALLER = 1.5
"""A narrowed table taller than this many times its blocks is shown as blocks (rows of wrapped text read badly)."""
INDENT = "  "
GAP = "   "
UNLIMITED = 100_000


def _text(console: Console, cell: RenderableType) -> Text:
    if isinstance(cell, Text):
        return cell
    if isinstance(cell, str):
        return console.render_str(cell, highlight=False)
    return Text(str(cell))


def _flat(text: Text) -> Text:
    """One line: the lines of a multi-line cell joined by a space."""
    parts = [line for line in text.split("\n") if line.plain.strip()]
    return Text(" ").join(parts) if parts else Text("")


def _range(console: Console, column, wrap: bool) -> tuple[int, int]:
    """(narrowest width that cuts no word, natural width) of a column's header and cells."""
    options = console.options.update_width(UNLIMITED)
    lo = hi = 0
    for cell in [column.header, *column.cells]:
        if cell == "" or cell is None:
            continue
        m = Measurement.get(console, options, _text(console, cell))
        lo, hi = max(lo, m.minimum if wrap else m.maximum), max(hi, m.maximum)
    lo = max(lo, column.min_width or 0)
    return lo, max(hi, lo)


def table_width(console: Console, table: Table) -> int:
    """The width the table takes with every column at its natural width."""
    return Measurement.get(console, console.options.update_width(UNLIMITED), table).maximum


def narrowed(console: Console, table: Table, width: int) -> Table | None:
    """``table`` with column widths set so that it fits ``width`` and no word is cut; None when impossible."""
    full = table_width(console, table)
    if full <= width:
        return table
    wraps = [not col.no_wrap for col in table.columns]
    ranges = [_range(console, col, wrap) for col, wrap in zip(table.columns, wraps, strict=True)]
    overhead = full - sum(hi for _, hi in ranges)
    floors = [lo if not wrap else max(lo, min(hi, READABLE)) for (lo, hi), wrap in zip(ranges, wraps, strict=True)]
    spare = width - overhead - sum(floors)
    if spare < 0:
        return None
    room = [hi - lo for lo, (_, hi) in zip(floors, ranges, strict=True)]
    total_room = sum(room)
    widths = list(floors)
    for i, r in enumerate(room):
        widths[i] += spare * r // total_room if total_room else 0
    for col, w in zip(table.columns, widths, strict=True):
        col.width, col.min_width, col.max_width = w, None, None
    return table if table_width(console, table) <= width else None


def stacked(console: Console, table: Table, width: int, keys: int = 1) -> Group:
    """One block per row: the first ``keys`` cells as a heading, then ``header: value`` items, none cut."""
    columns = table.columns
    cells = [[_flat(_text(console, c)) for c in col.cells] for col in columns]
    headers = [_flat(_text(console, col.header)).plain for col in columns]
    lines: list[Text] = []
    if table.title:
        lines += wrap_words(_flat(_text(console, table.title).copy()), width)
    for row in range(table.row_count):
        head = Text("  ").join([cells[i][row] for i in range(min(keys, len(columns))) if cells[i][row].plain])
        head.stylize("bold")
        lines.append(head)
        items = []
        for i in range(keys, len(columns)):
            value = cells[i][row]
            if not value.plain.strip():
                continue
            items.append(Text.assemble((f"{headers[i]}: ", "dim"), value) if headers[i] else value)
        lines += _pack(items, width)
    if table.caption:
        lines += wrap_words(_flat(_text(console, table.caption).copy()), width)
    for line in lines:
        line.overflow = "ignore"  # wrapped between words only, never cut
    return Group(*lines)


def wrap_words(text: Text, width: int) -> list[Text]:
    """``text`` on lines of at most ``width`` cells, broken only at spaces (a longer word keeps its own line)."""
    plain = text.plain
    lines: list[Text] = []
    start = end = 0
    for word in re.finditer(r"\S+", plain):
        if word.end() - start > width and end > start:
            lines.append(text[start:end])
            start = word.start()
        end = word.end()
    if end > start:
        lines.append(text[start:end])
    return lines or [Text("")]


def _pack(items: list[Text], width: int) -> list[Text]:
    """Items joined on lines of ``width``; an item longer than a line wraps between its words only."""
    avail = max(width - len(INDENT), 20)
    lines: list[Text] = []
    current: Text | None = None
    for item in items:
        if current is not None and current.cell_len + len(GAP) + item.cell_len <= avail:
            current.append(GAP)
            current.append_text(item)
            continue
        if current is not None:
            lines.append(current)
            current = None
        if item.cell_len <= avail:
            current = item.copy()
            continue
        parts = wrap_words(item, avail - len(INDENT))
        lines.append(parts[0])
        lines += [Text(INDENT) + p for p in parts[1:]]
    if current is not None:
        lines.append(current)
    return [Text(INDENT) + line for line in lines]


def _height(console: Console, renderable: RenderableType, width: int) -> int:
    return len(console.render_lines(renderable, console.options.update_width(width), pad=False))


def natural_width(console: Console, renderable: RenderableType) -> int:
    """The widest table in ``renderable`` at its natural width (0 when there is none)."""
    if isinstance(renderable, Table):
        return table_width(console, renderable)
    if isinstance(renderable, Group):
        return max((natural_width(console, r) for r in renderable.renderables), default=0)
    return 0


def fit(console: Console, renderable: RenderableType, width: int, keys: int = 1, wide: bool = False) -> RenderableType:
    """A table (or the tables in a group) fitted to ``width``; other renderables unchanged."""
    if wide:
        return renderable
    if isinstance(renderable, Table):
        if table_width(console, renderable) <= width:
            return renderable
        table = narrowed(console, renderable, width)
        blocks = stacked(console, renderable, width, keys)
        if table is None or _height(console, table, width) > TALLER * _height(console, blocks, width):
            return blocks
        return table
    if isinstance(renderable, Group):
        return Group(*(fit(console, r, width, keys) for r in renderable.renderables))
    return renderable
