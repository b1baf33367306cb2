"""Signals to a real ``gpuprobe probe --backend gloo`` all-reduce run after it has started its worker processes:
the documented exit code, the results file written whole with status ``interrupted``, no traceback, no worker
left running. The runs are started together (one module fixture) so the cases cost the time of one run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from harness import PYTHON, REPO, SIGNAL_CODES, bad_figures, partial_files, python_env

SIGNALS = {
    "SIGINT": [signal.SIGINT],
    "SIGTERM": [signal.SIGTERM],
    "SIGHUP": [signal.SIGHUP],
    "SIGTERM-twice": [signal.SIGTERM, signal.SIGTERM],
    "SIGINT-then-SIGTERM": [signal.SIGINT, signal.SIGTERM],
}
STARTED_S = 3.0
"""How long the workers run before the signal: part of the sweep is measured."""


@dataclass
class SignalledRun:
    name: str
    signals: list[signal.Signals]
    folder: Path
    proc: subprocess.Popen | None = None
    workers: set[int] = field(default_factory=set)
    signalled: bool = False
    ended_before_signal: bool = False
    code: int | None = None
    err: str = ""
    orphans: list[int] = field(default_factory=list)

    @property
    def results(self) -> Path:
        return self.folder / "results.json"


def _proc_stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0]


def descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st is not None and st[1] != "Z":
                parents[int(entry)] = st[0]
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier and p not in found}
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    st = _proc_stat(pid)
    return st is not None and st[1] != "Z"


@pytest.fixture(scope="module")
def signalled_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SignalledRun]]:
    pytest.importorskip("torch")
    runs = {}
    for name, sigs in SIGNALS.items():
        folder = tmp_path_factory.mktemp(f"signal-{name}")
        run = SignalledRun(name, sigs, folder)
        run.proc = subprocess.Popen(
            [PYTHON, "-m", "gpuprobe", "probe", "--tests", "all_reduce", "--backend", "gloo", "--cpu-ranks", "2",
             "-o", str(run.results)],
            cwd=REPO, env=python_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        runs[name] = run
    try:
        deadline = time.monotonic() + 120
        first_seen: dict[str, float] = {}
        while time.monotonic() < deadline and not all(r.signalled or r.ended_before_signal for r in runs.values()):
            for r in runs.values():
                if r.signalled or r.ended_before_signal:
                    continue
                assert r.proc is not None
                if r.proc.poll() is not None:
                    r.ended_before_signal = True
                    continue
                kids = descendants(r.proc.pid)
                if len(kids) >= 2 and r.name not in first_seen:
                    first_seen[r.name] = time.monotonic()  # the gloo workers are up
                r.workers |= kids
                if r.name in first_seen and time.monotonic() - first_seen[r.name] >= STARTED_S:
                    for k, sig in enumerate(r.signals):
                        if k:
                            time.sleep(0.3)  # the second one arrives while the first one's interrupt path runs
                        r.proc.send_signal(sig)
                    r.signalled = True
            time.sleep(0.1)
        for r in runs.values():
            assert r.proc is not None
            try:
                _, r.err = r.proc.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                _, r.err = r.proc.communicate()
                r.err += "\n(still running 90 s after the signal: killed)"
            r.code = r.proc.returncode
            end = time.monotonic() + 5
            while time.monotonic() < end and any(_alive(p) for p in r.workers):
                time.sleep(0.1)
            r.orphans = sorted(p for p in r.workers if _alive(p))
        yield runs
    finally:
        for r in runs.values():  # end what these runs started and left behind, each by its id
            if r.proc is not None and r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()
            for pid in r.workers:
                if _alive(pid):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("name", list(SIGNALS))
def test_signals(name: str, signalled_runs: dict[str, SignalledRun]) -> None:
    from gpuprobe.results.io import load_results

    r = signalled_runs[name]
    command = "gpuprobe probe --tests all_reduce --backend gloo --cpu-ranks 2 -o results.json"
    assert not r.ended_before_signal, f"{command} ended before the signal (exit {r.code}): {r.err[-300:]}"
    assert r.signalled, f"{command}: the gloo workers never started"
    problems = []
    expected = {SIGNAL_CODES[s] for s in r.signals}  # a second signal during the save may name itself
    if r.code not in expected:
        names = "+".join(s.name for s in r.signals)
        problems.append(f"EXIT: exit code {r.code}, documented {' or '.join(map(str, sorted(expected)))} for {names}")
    if "Traceback (most recent call last)" in r.err:
        last = next((x for x in reversed(r.err.splitlines()) if x and not x.startswith(" ")), "")
        problems.append(f"TRACEBACK: printed on stderr: {last}")
    if r.orphans:
        problems.append(f"ORPHAN: worker processes still running after the command ended: {r.orphans}")
    left = partial_files(r.folder)
    if left:
        problems.append(f"PARTIAL: temporary files left: {left}")
    try:
        res = load_results(r.results)
    except Exception as exc:  # noqa: BLE001 - reported as the finding
        problems.append(f"UNREADABLE: the results file does not load: {type(exc).__name__}: {exc}")
    else:
        if res.status != "interrupted":
            problems.append(f"EXIT: results status {res.status!r}, expected 'interrupted'")
        bad = bad_figures(res)
        if bad:
            problems.append(f"ACCEPTED: non-finite or negative figures written: {bad[:3]}")
    if problems:
        tail = " | ".join(r.err.strip().splitlines()[-3:])
        pytest.fail("\n".join([*problems, f"command: {command} (then {'+'.join(s.name for s in r.signals)})",
                               f"stderr (last lines): {tail}"]), pytrace=False)
