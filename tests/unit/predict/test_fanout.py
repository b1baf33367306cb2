"""fan_out: the layout search spread over worker processes gives the serial answers, in order, carries errors
back as they were raised, and ends quietly on a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from gpuprobe.errors import UsageError
from gpuprobe.predict import recommend as recommend_mod
from gpuprobe.predict.calibration import Calibration
from gpuprobe.predict.fanout import fan_out, usable_cpus, workers_for
from gpuprobe.predict.model_spec import load_model_spec
from gpuprobe.predict.options import ServeOptions
from gpuprobe.predict.system import system_from_spec
from gpuprobe.predict.traffic import Traffic

ROOT = Path(__file__).resolve().parents[3]
multi_cpu = pytest.mark.skipif(usable_cpus() < 2 or not sys.platform.startswith("linux"),
                               reason="needs two usable CPUs and fork")


def _pid_and_square(x: int) -> tuple[int, int]:
    time.sleep(0.01)
    return os.getpid(), x * x


@multi_cpu
def test_workers_answer_in_order() -> None:
    out = fan_out(_pid_and_square, list(range(40)), work_units=10, min_work=1)
    assert [sq for _, sq in out] == [x * x for x in range(40)]
    assert {pid for pid, _ in out} - {os.getpid()}  # computed in other processes


def test_small_jobs_stay_in_this_process() -> None:
    out = fan_out(_pid_and_square, list(range(5)), work_units=10, min_work=11)
    assert {pid for pid, _ in out} == {os.getpid()}
    assert workers_for(5, 10, 11) == 1
    assert workers_for(1, 10**9, 1) == 1


def _fails_on_three(x: int) -> int:
    if x == 3:
        raise UsageError(f"item {x} is bad", hint="use another")
    return x


@multi_cpu
def test_an_error_comes_back_as_raised() -> None:
    with pytest.raises(UsageError) as info:
        fan_out(_fails_on_three, list(range(8)), work_units=10, min_work=1)
    assert str(info.value) == "item 3 is bad" and info.value.hint == "use another"


@multi_cpu
def test_search_in_workers_equals_the_serial_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole 8-GPU search (38 layouts, 300 requests each) ranks and predicts the same either way."""
    spec = load_model_spec(ROOT / "tests" / "data" / "configs" / "llama-3.1-8b.json")
    traffic = Traffic("closed", 300, 1024, 128, 64)

    def search() -> list[dict]:
        rec = recommend_mod.recommend(spec, system_from_spec("H100-SXM", 8), ServeOptions(), traffic, Calibration())
        return [asdict(r) for r in rec.layouts]

    monkeypatch.setattr(recommend_mod, "PARALLEL_MIN_REQUESTS", 1)
    fanned = search()
    monkeypatch.setattr(recommend_mod, "PARALLEL_MIN_REQUESTS", 10**9)
    serial = search()
    assert len(serial) == 38 and fanned == serial


@multi_cpu
def test_sigterm_mid_search_ends_quietly(tmp_path: Path) -> None:
    """SIGTERM while the workers run: the parent's interrupt path runs once, no worker prints a traceback, and no
    worker outlives the parent."""
    script = tmp_path / "search.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from gpuprobe.cli.signals import SignalsAsInterrupts
        from gpuprobe.predict.fanout import fan_out

        def slow(x):
            time.sleep(0.2)
            return os.getpid()

        if __name__ == "__main__":
            with SignalsAsInterrupts():
                try:
                    print("started", flush=True)
                    fan_out(slow, list(range(200)), work_units=10, min_work=1)
                    print("finished", flush=True)
                except KeyboardInterrupt as e:
                    print("interrupted", e, flush=True)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGTERM)  # the whole process group, as a scheduler or a dropped SSH session does
    out, err = proc.communicate(timeout=30)
    assert "interrupted SIGTERM" in out and "finished" not in out
    assert "Traceback" not in err, err
    time.sleep(0.5)
    assert _group_members(proc.pid) == []


def _group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(d.name))
    return out
