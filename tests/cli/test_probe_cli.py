"""``gpuprobe probe`` in-process on a machine without a GPU: exit codes, one-line errors, real gloo runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpuprobe import load_results
from gpuprobe.cli.app import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version_and_help(capsys) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("gpuprobe ")
    code, out, _ = run(capsys, "probe", "--help")
    assert code == 0 and "--quick" in out


def test_list_shows_nvbandwidth_keys(capsys) -> None:
    code, out, _ = run(capsys, "probe", "--list", "--json")
    assert code == 0
    keys = [p["key"] for p in json.loads(out)]
    for key in ("host_to_device_memcpy_ce", "device_to_device_memcpy_read_sm", "host_device_latency_sm",
                "device_local_copy", "all_reduce"):
        assert key in keys
    assert keys.index("host_to_device_memcpy_ce") == 0


def test_no_gpu_says_so_and_shows_the_recorded_capture(capsys) -> None:
    code, out, err = run(capsys, "probe")
    assert code == 3
    assert "H100" in out  # the shipped real capture is rendered
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in err


def test_unknown_probe_is_a_usage_error(capsys) -> None:
    code, _, err = run(capsys, "probe", "--tests", "no_such_probe")
    assert code == 2 and err.startswith("Error: no probe matches 'no_such_probe'")


def test_bad_option_values_are_usage_errors(capsys) -> None:
    code, _, err = run(capsys, "probe", "--tests", "all_reduce", "--backend", "mpi")
    assert code == 2 and "collective backend 'mpi'" in err
    code, _, err = run(capsys, "probe", "--gpus", "zero")
    assert code == 2 and "--gpus" in err


def test_corrupt_input_file_is_one_error_line(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "r.json"
    bad.write_text('{"kind": "gpuprobe.results", "schema_version": 1, "run": 3}')
    code, _, err = run(capsys, "probe", "--input", str(bad))
    assert code == 1 and err.count("Error:") == 1 and "Traceback" not in err


def test_input_renders_the_real_capture(capsys, h100_results_path: Path) -> None:
    code, out, _ = run(capsys, "probe", "--input", str(h100_results_path), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["kind"] == "gpuprobe.results" and data["devices"][0]["name"].startswith("NVIDIA H100")


@pytest.mark.slow
def test_gloo_all_reduce_through_the_cli(capsys, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out_file = tmp_path / "cpu.json"
    code, _, err = run(capsys, "probe", "--tests", "all_reduce", "--backend", "gloo", "--cpu-ranks", "2",
                       "--allreduce-max-bytes", "65536", "-o", str(out_file))
    assert code == 0, err
    res = load_results(out_file)
    assert res.status == "complete"
    ms = [m for m in res.measurements if m.probe == "all_reduce"]
    assert len(ms) == len({m.size_bytes for m in ms}) >= 10
    assert all(m.status == "ok" and m.verified and m.wrong_elements == 0 and m.engine == "gloo" for m in ms)
    assert all(m.value > 0 and m.busbw_gbps == pytest.approx(m.algbw_gbps * 2 * (2 - 1) / 2) for m in ms)


def test_prestarted_workers_are_settled_before_latency_and_taken_over(capsys, tmp_path: Path) -> None:
    """Host, latency and all-reduce probes chosen on a machine without a GPU: the gloo workers start before the first
    probe (the probe declares the hook), the latency probe waits for them (its time includes the wait, even waived),
    and the all-reduce probe takes the started workers over."""
    pytest.importorskip("torch")
    out_file = tmp_path / "pre.json"
    code, _, err = run(capsys, "probe", "--tests", "host_to_device_memcpy_ce", "--tests", "host_device_latency_sm",
                       "--tests", "all_reduce", "--backend", "gloo", "--cpu-ranks", "2", "--allreduce-max-bytes",
                       "65536", "-o", str(out_file))  # fmt: skip
    assert code == 0, err
    res = load_results(out_file)
    ar = [m for m in res.measurements if m.probe == "all_reduce"]
    assert ar and all(m.status == "ok" for m in ar)
    assert any("workers started while the earlier probes ran" in n for n in ar[0].notes)
    assert "host_device_latency_sm" in res.probe_seconds


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_keep_what_was_measured(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    """A real gloo all-reduce sweep stopped part-way by SIGTERM or SIGHUP (a scheduler, a dropped SSH session):
    exit 128 + the signal, one line naming it, and the results file written with the sizes already measured."""
    pytest.importorskip("torch")
    out_file = tmp_path / "cpu.json"
    proc = subprocess.Popen([sys.executable, "-m", "gpuprobe", "probe", "--tests", "all_reduce", "--backend", "gloo",
                             "--cpu-ranks", "3", "-o", str(out_file)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _children(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the all-reduce worker processes are up
    time.sleep(8.0)  # part of the sweep is measured (the whole sweep of 3 ranks takes ~25 s on 2 cores)
    assert proc.poll() is None, "the sweep ended before the signal"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == (f"Stopped by {sig.name}: the probe was interrupted; results measured so "
                                            f"far are in {out_file}.")
    assert "Traceback" not in err
    res = load_results(out_file)
    assert res.status == "interrupted"
    assert f"stopped by {sig.name}; the measurements above were kept" in res.problems
    ok = [m for m in res.measurements if m.probe == "all_reduce" and m.status == "ok"]
    assert ok and all(m.verified for m in ok)


def _children(pid: int) -> list[str]:
    r = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return r.stdout.split()


def test_a_piped_probe_says_which_probe_runs(tmp_path: Path) -> None:
    """In a pipe (no terminal for a bar) each probe's start is one plain line on stderr; --json keeps it quiet."""
    pytest.importorskip("torch")
    args = [sys.executable, "-m", "gpuprobe", "probe", "--tests", "all_reduce", "--backend", "gloo", "--cpu-ranks",
            "2", "--allreduce-max-bytes", "4096"]
    r = subprocess.run([*args, "-o", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "probing 1/1: all_reduce" in r.stderr.splitlines()
    r = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "probing" not in r.stderr
