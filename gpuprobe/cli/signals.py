"""SIGTERM and SIGHUP (a scheduler stopping the job, an SSH session that drops) handled as Ctrl-C is: raised as
``KeyboardInterrupt`` in the main thread, so every stage runs its interrupt path and writes what it measured.
A second such signal while that path runs is ignored (SIGKILL still stops the process at once)."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGHUP)


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
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    @property
    def name(self) -> str | None:
        return None if self.received is None else signal.Signals(self.received).name

