"""Child processes of a validation run: started fresh or forked from a preloaded interpreter, always in their
own process group so that a timeout, a signal or the end of the run takes every vLLM process down with them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import gpuprobe

KILL_GRACE_S = 10.0
PRELOAD_START_TIMEOUT_S = 300.0


def kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def group_alive(pgid: int) -> bool:
    return kill_group(pgid, 0)


def end_group(pgid: int, grace_s: float = KILL_GRACE_S, reap: Callable[[], object] | None = None) -> None:
    """SIGTERM the whole group, SIGKILL what is left after ``grace_s``, and wait (a few seconds at most) until
    no process of it remains. ``reap`` collects the leader's exit status when it is our own child (a zombie
    still counts as a member of its group)."""

    def alive() -> bool:
        if reap is not None:
            reap()
        return group_alive(pgid)

    kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive():
        kill_group(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)


class Child(Protocol):
    """What the runner needs of a started run: its pid (also its process group) and its exit code."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


@dataclass
class ForkedChild:
    """A child of the preloaded interpreter (its exit code arrives through the interpreter's reports)."""

    pid: int
    owner: PreloadedInterpreter
    ident: int
    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.owner.exit_code(self.ident)
            if self.returncode is None and not self.owner.alive():
                self.returncode = -signal.SIGKILL  # the interpreter died: its children went with it
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.1)
        assert self.returncode is not None
        return self.returncode


@dataclass
class PreloadedInterpreter:
    """``python -m gpuprobe.validate.preload``: vLLM imported once, one fork per run."""

    python: str
    env: dict[str, str]
    log_path: Path
    import_s: float | None = None
    reason: str | None = None
    """Why it could not be started (the runner then starts each run fresh)."""
    _proc: subprocess.Popen[str] | None = None
    _log: IO[bytes] | None = None
    _pids: dict[int, int] = field(default_factory=dict)
    _exits: dict[int, int] = field(default_factory=dict)
    _next: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def start(self, timeout_s: float = PRELOAD_START_TIMEOUT_S) -> bool:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - held for the interpreter's lifetime, closed in close()
        self._proc = subprocess.Popen(
            [self.python, "-m", "gpuprobe.validate.preload"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, env=self.env, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            threading.Thread(target=self._read, daemon=True).start()
            with self._cond:
                self._cond.wait_for(lambda: self.import_s is not None or not self.alive(), timeout_s)
        except BaseException:  # an interrupt while vLLM imports: the interpreter's group must not outlive the run
            self.close()
            raise
        if self.import_s is None:
            self.reason = f"the preloaded interpreter did not start (see {self.log_path})"
            self.close()
            return False
        return True

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                if msg.get("ready"):
                    self.import_s = float(msg.get("import_s") or 0.0)
                elif "pid" in msg:
                    self._pids[msg["id"]] = int(msg["pid"])
                elif "exit" in msg:
                    self._exits[msg["id"]] = int(msg["exit"])
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(self, kind: str, args: list[str], log: Path, env: dict[str, str]) -> ForkedChild:
        """Fork a child running ``kind`` (``worker`` or ``serve``) with ``args``; its output goes to ``log``."""
        assert self._proc is not None and self._proc.stdin is not None
        ident = self._next
        self._next += 1
        self._proc.stdin.write(json.dumps({"id": ident, "kind": kind, "args": args, "log": str(log),
                                           "env": env}) + "\n")
        self._proc.stdin.flush()
        with self._cond:
            self._cond.wait_for(lambda: ident in self._pids or not self.alive(), 60.0)
        if ident not in self._pids:
            raise RuntimeError(f"the preloaded interpreter did not start the run (see {self.log_path})")
        return ForkedChild(self._pids[ident], self, ident)

    def exit_code(self, ident: int) -> int | None:
        with self._cond:
            return self._exits.get(ident)

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
            end_group(self._proc.pid, grace_s=2.0, reap=self._proc.poll)
            self._proc.wait()
        if self._log is not None:
            self._log.close()


@dataclass
class PreloadPool:
    """Preloaded interpreters by (python, environment): a caller running many validations in one process shares
    one, so vLLM is imported once for all of them. ``close`` ends them all."""

    _items: dict[tuple[str, tuple[tuple[str, str], ...]], PreloadedInterpreter] = field(default_factory=dict)

    def get(self, python: str, env: dict[str, str], key_env: dict[str, str], log_path: Path) -> PreloadedInterpreter:
        """The live interpreter for ``python`` and ``key_env`` (the variables that differ between runs), started
        with ``env`` when there is none; check ``import_s`` (None: it failed, ``reason`` says why)."""
        key = (python, tuple(sorted(key_env.items())))
        pre = self._items.get(key)
        if pre is None or not pre.alive():
            pre = PreloadedInterpreter(python, env, log_path)
            pre.start()
            self._items[key] = pre
        return pre

    def close(self) -> None:
        for pre in self._items.values():
            pre.close()
        self._items.clear()


def launch_fresh(argv: list[str], log: IO[bytes], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A new interpreter in its own session (process group = its pid)."""
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def child_env(env_set: dict[str, str]) -> dict[str, str]:
    """This process's environment with the run's variables, and this gpuprobe first on the child's path."""
    env = {**os.environ, **env_set}
    pkg_root = str(Path(gpuprobe.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH", "")) if p)
    return env


def start_child(kind: str, args: list[str], log_path: Path, log: IO[bytes], env_set: dict[str, str], python: str,
                preloaded: PreloadedInterpreter | None) -> Child:
    """A run's process (``worker``: an offline engine; ``serve``: ``vllm serve``): forked from the preloaded
    interpreter when there is one, else a fresh ``python`` in its own process group."""
    if preloaded is not None:
        return preloaded.spawn(kind, args, log_path, env_set)
    module = "gpuprobe.validate.worker" if kind == "worker" else "gpuprobe.validate.vllm_cli"
    return launch_fresh([python, "-m", module, *args], log, child_env(env_set))


def supervise(child: Child, timeout_s: float, t0: float, progress: Callable[[str], None], name: str,
              interval_s: float = 0.2) -> bool:
    """Wait for the child to end; at ``timeout_s`` after ``t0`` kill its group. True when it timed out."""
    timed_out = False
    try:
        while child.poll() is None:
            if time.monotonic() - t0 > timeout_s:
                timed_out = True
                progress(f"{name}: no result after {timeout_s:.0f} s, killing it")
                break
            time.sleep(interval_s)
    finally:  # an interrupt takes the whole group down before it is re-raised
        end_child(child)
    return timed_out


def end_child(child: Child) -> None:
    """End the child's whole process group and reap it: vLLM's engine and worker processes must not outlive the
    run (GPU memory for the next layout)."""
    end_group(child.pid, grace_s=KILL_GRACE_S, reap=child.poll)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(KILL_GRACE_S)
