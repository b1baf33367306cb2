"""SIGINT (Ctrl-C), SIGTERM (a scheduler stopping the job) and SIGHUP (an SSH session that drops) all end a command
the same way: raised as ``KeyboardInterrupt`` in the main thread, so every stage runs its interrupt path (workers and
engines ended with their process groups, temporary folders removed, what was measured written with status
``interrupted``). A second such signal while that path runs is ignored (SIGKILL still stops the process at once).

A long command says what it is doing and where its results go (:func:`doing`), so that the CLI can end with one line
naming what was stopped and where the figures measured so far are."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class Activity:
    what: str | None = None
    """What runs, as the stop line names it ("the probe")."""
    output: str | None = None
    """Where the figures measured so far are written (None: nowhere)."""


CURRENT = Activity()


def doing(what: str, output: str | os.PathLike[str] | None) -> None:
    """Declare the long work that starts now and the file that keeps its figures (None when it keeps none)."""
    CURRENT.what = what
    CURRENT.output = os.fspath(output) if output is not None else None


def stop_line(name: str, saved: bool = True) -> str:
    """The one line a command stopped by signal ``name`` ends with; ``saved`` False when writing the results failed
    (that error is shown above it)."""
    if CURRENT.what is None:
        return f"Stopped by {name}."
    line = f"Stopped by {name}: {CURRENT.what} was interrupted"
    if not saved:
        return line + "."
    if CURRENT.output is None:
        return line + "; nothing was saved (no -o FILE)."
    return line + f"; results measured so far are in {CURRENT.output}."


class SignalsAsInterrupts:
    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> SignalsAsInterrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._old[sig] = signal.signal(sig, self._raise)
        return self

    def _raise(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return  # already saving what was measured
        self.received = signum
        if signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C: "interrupted by the user"
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def ignore_rest(self) -> None:
        """The process ends now: any later signal is ignored (also after the block), so a late one can neither
        print a traceback on the way out nor change the exit code."""
        for sig in self._old:
            signal.signal(sig, signal.SIG_IGN)
        self._old.clear()

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    @property
    def name(self) -> str | None:
        return None if self.received is None else signal.Signals(self.received).name
