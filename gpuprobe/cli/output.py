"""One output sink: data (tables or JSON) to stdout, diagnostics and progress to stderr.

Nothing is cut or wrapped inside a word: tables are fitted to the width (``gpuprobe.report.terminal_fit``: the
table, narrowed, or one record per block; ``wide`` keeps the full table), and commands, paths and messages
are printed as plain lines, whole, whatever the width (a terminal, a pipe or a file).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

from gpuprobe.report.fmt import plain
from gpuprobe.report.terminal_fit import fit, natural_width, wrap_words


class Output:
    """``json_mode``: stdout carries exactly one JSON document; nothing else is printed there.

    Text from files, paths and users goes through ``gpuprobe.report.fmt.plain`` (plain lines and messages) or
    ``safe`` (table cells and titles, which rich reads as markup) before it reaches the terminal."""

    def __init__(self, json_mode: bool = False, quiet: bool = False, wide: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.wide = wide
        self.out = Console(highlight=False, soft_wrap=False, emoji=False)
        self.err = Console(stderr=True, highlight=False, emoji=False)

    @property
    def interactive(self) -> bool:
        """Progress bars only for a person at a terminal, never in JSON mode."""
        return not self.json_mode and not self.quiet and self.err.is_terminal

    def data(self, obj: Any, keys: int = 1) -> None:
        """Print the command's result: JSON in json mode, else a rich renderable or markup text.

        Tables are fitted to the width (``keys``: how many leading cells name a row when rows become blocks);
        with ``wide`` they keep their full width and lines longer than the terminal are left whole."""
        if self.json_mode:
            sys.stdout.write(json.dumps(obj, indent=1, allow_nan=False) + "\n")
            sys.stdout.flush()
            return
        width = max(self.out.width, natural_width(self.out, obj)) if self.wide else self.out.width
        saved = self.out.width
        self.out.width = width
        try:
            self.out.print(fit(self.out, obj, width, keys=keys, wide=self.wide), crop=False)
        finally:
            self.out.width = saved

    def line(self, text: str = "") -> None:
        """One plain line on stdout (a command, a path): no markup, never wrapped or cut."""
        self.out.print(Text(plain(text)), soft_wrap=True)

    def text(self, text: str, style: str = "", first: str = "", indent: str = "  ") -> None:
        """Plain text on stdout wrapped between words to the width (``first`` before the first line, ``indent``
        before the others): reasons and notes, never a word cut."""
        width = max(self.out.width - max(len(first), len(indent)), 20)
        for i, part in enumerate(wrap_words(Text(plain(text), style=style), width)):
            self.out.print(Text(first if i == 0 else indent) + part, soft_wrap=True)

    def info(self, msg: str) -> None:
        """A plain message on stderr (no markup: messages carry paths and names), never wrapped or cut."""
        if not self.quiet:
            self.err.print(Text(plain(msg)), soft_wrap=True)

    def warn(self, msg: str) -> None:
        self.err.print(Text.assemble(("Warning:", "yellow"), " ", plain(msg)), soft_wrap=True)
