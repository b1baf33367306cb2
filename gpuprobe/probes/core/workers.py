"""Supervising worker processes (the all-reduce's ranks): a free rendezvous port, the JSON lines they append, the
last line of a worker's log, and ending them with their process groups."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JsonLinesTail:
    """Complete JSON lines appended to the workers' files since the last read."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = paths
        self._offsets = [0] * len(paths)

    def read(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for i, path in enumerate(self._paths):
            try:
                with path.open("rb") as f:
                    f.seek(self._offsets[i])
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1
            self._offsets[i] += end
            lines += [json.loads(raw) for raw in data[:end].splitlines() if raw.strip()]
        return lines


def last_log_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        for line in reversed(path.read_text(errors="replace").splitlines()):
            if line.strip():
                return " ".join(line.split())[:200]
    return ""


def kill_workers(procs: Sequence[BaseProcess]) -> None:
    for p in procs:
        if p.pid is not None and p.exitcode is None:
            with contextlib.suppress(OSError):
                os.killpg(p.pid, signal.SIGKILL)  # the worker's own group (it calls setpgrp)
            with contextlib.suppress(OSError):
                p.kill()
    for p in procs:
        p.join(timeout=5)
