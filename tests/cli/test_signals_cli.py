"""Every long command ends the same way on SIGINT, SIGTERM and SIGHUP: one line naming what was stopped, the figures
measured so far written with status ``interrupted``, no worker process and no temporary folder left behind; a
second signal while that is written does not cut it short. Real ``gpuprobe probe`` processes (gloo on CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from gpuprobe import load_results

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(ROOT))
    env.pop("GPUPROBE_DEBUG", None)
    return env


def _measured(tmp: Path) -> bool:
    """A worker of the sweep has written its first measured size (its lines are in its temporary folder)."""
    for f in tmp.glob("gpuprobe-allreduce-*/rank0.jsonl"):
        try:
            lines = f.read_text().splitlines()
        except OSError:
            continue
        if sum(1 for x in lines if x.strip() and json.loads(x)["kind"] == "size") >= 2:
            return True
    return False


def _start_sweep(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path, list[int]]:
    """A gloo all-reduce sweep on 2 CPU processes, running until at least two sizes are measured."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out_file = tmp_path / "cpu.json"
    proc = subprocess.Popen([sys.executable, "-m", "gpuprobe", "probe", "--tests", "all_reduce", "--backend", "gloo",
                             "--cpu-ranks", "2", "--samples", "3", "-o", str(out_file)], cwd=ROOT, env=_env(tmp),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _measured(tmp):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no size measured within 120 s"
        time.sleep(0.05)
    workers = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert workers
    return proc, out_file, tmp, workers


def _gone(pids: list[int]) -> list[int]:
    """The pids still running (a zombie has ended; its parent, now init, reaps it)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _check_stopped(proc: subprocess.Popen, out_file: Path, tmp: Path, workers: list[int], sig: signal.Signals,
                   code: int) -> None:
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"Stopped by {sig.name}: the probe was interrupted; " \
                                           f"results measured so far are in {out_file}.", err
    res = load_results(out_file)
    assert res.status == "interrupted"
    reason = "interrupted by the user" if sig == signal.SIGINT else f"stopped by {sig.name}"
    assert f"{reason}; the measurements above were kept" in res.problems
    ok = [m for m in res.measurements if m.probe == "all_reduce" and m.status == "ok"]
    assert len(ok) >= 2 and all(m.verified for m in ok)
    deadline = time.monotonic() + 10
    while _gone(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _gone(workers), "worker processes were left running"
    assert not list(tmp.iterdir()), f"temporary files left behind: {list(tmp.iterdir())}"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_stops_the_sweep_and_keeps_what_was_measured(tmp_path: Path, sig: signal.Signals,
                                                              code: int) -> None:
    pytest.importorskip("torch")
    proc, out_file, tmp, workers = _start_sweep(tmp_path)
    proc.send_signal(sig)
    _check_stopped(proc, out_file, tmp, workers, sig, code)


def test_a_second_sigint_does_not_cut_the_save_short(tmp_path: Path) -> None:
    """Ctrl-C pressed twice quickly: the first stops the sweep, the second is ignored while the results are written."""
    pytest.importorskip("torch")
    proc, out_file, tmp, workers = _start_sweep(tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _check_stopped(proc, out_file, tmp, workers, signal.SIGINT, 130)


HANG = """#!/bin/bash
# Stands in for the interpreter that runs a vLLM engine ('--python'): it starts a child of its own and hangs.
sleep 300 & echo $! > "$FAKE_PIDFILE"
echo "INFO starting"
sleep 300
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_validate_stopped_by_a_signal_ends_the_engine_group_and_marks_the_file(tmp_path: Path, sig: signal.Signals,
                                                                            code: int) -> None:
    """``gpuprobe validate`` with a stand-in engine that hangs: the signal ends the engine's whole process group and
    the validation file says ``interrupted`` (not ``running``)."""
    pytest.importorskip("vllm")
    fake = tmp_path / "fakepython"
    fake.write_text(HANG)
    fake.chmod(0o755)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                                                   "hidden_size": 256, "num_hidden_layers": 2, "vocab_size": 32000,
                                                   "num_attention_heads": 4, "num_key_value_heads": 2}))
    pidfile = tmp_path / "child.pid"
    out_file = tmp_path / "runs.json"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "gpuprobe", "validate", "--model", str(model), "--layout", "tp=1",
                             "--python", str(fake), "--no-preload", "-o", str(out_file)], cwd=ROOT,
                            env={**_env(tmp), "FAKE_PIDFILE": str(pidfile)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the stand-in engine did not start within 120 s"
        time.sleep(0.05)
    engine = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    background = int(pidfile.read_text())
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"Stopped by {sig.name}: the validation was interrupted; " \
                                           f"results measured so far are in {out_file}.", err
    runs = json.loads(out_file.read_text())
    assert runs["status"] == "interrupted"
    deadline = time.monotonic() + 10
    while _gone([*engine, background]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _gone([*engine, background]), "the engine's processes were left running"
    assert not list(tmp.iterdir())
