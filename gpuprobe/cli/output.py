"""One output sink: data (tables or JSON) to stdout, diagnostics and progress to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console


class Output:
    """``json_mode``: stdout carries exactly one JSON document; nothing else is printed there."""

    def __init__(self, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.out = Console(highlight=False, soft_wrap=False)
        self.err = Console(stderr=True, highlight=False)

    @property
    def interactive(self) -> bool:
        """Progress bars only for a person at a terminal, never in JSON mode."""
        return not self.json_mode and not self.quiet and self.err.is_terminal

    def data(self, obj: Any) -> None:
        """Print the command's result: JSON in json mode, else a rich renderable or text."""
        if self.json_mode:
            sys.stdout.write(json.dumps(obj, indent=1, allow_nan=False) + "\n")
            sys.stdout.flush()
        else:
            self.out.print(obj)

    def info(self, msg: str) -> None:
        if not self.quiet:
            self.err.print(msg)

    def warn(self, msg: str) -> None:
        self.err.print(f"[yellow]Warning:[/yellow] {msg}")
