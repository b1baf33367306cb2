"""A validation's child processes are ended with their process groups when the run is interrupted at any point,
including while the preloaded interpreter is still importing vLLM (real processes, a stand-in interpreter)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from gpuprobe.validate import process

SLOW_IMPORT = """#!/bin/bash
# Stands in for 'python -m gpuprobe.validate.preload' importing vLLM: it never says ready, and has a child.
sleep 300 & echo $! > "$1"
sleep 300
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def test_an_interrupt_while_the_preloaded_interpreter_starts_ends_its_group(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "python"
    pidfile = tmp_path / "child.pid"
    fake.write_text(SLOW_IMPORT.replace('"$1"', f'"{pidfile}"'))
    fake.chmod(0o755)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    pool = process.PreloadPool()
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        with pytest.raises(KeyboardInterrupt):
            pool.get(str(fake), dict(os.environ), {}, tmp_path / "preload.log")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert pidfile.exists()
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the interpreter's process group outlived the interrupt"
    pool.close()
