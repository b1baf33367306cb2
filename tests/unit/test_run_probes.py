"""run_probes keeps going after a crashed probe and keeps what was measured when interrupted."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprobe import load_results
from gpuprobe.options import ProbeOptions
from gpuprobe.probes import run as run_mod
from gpuprobe.probes.core.registry import ProbeSpec
from gpuprobe.results.model import CUDA_SKIPPED, Measurement


def _spec(key: str, fn) -> ProbeSpec:
    return ProbeSpec(key=key, group="test", description=key, run=fn, needs="dist")


def _one(ctx):
    yield Measurement(probe="first", status="waived", unit="GB/s", reason="placeholder record of the run machinery")


def _crash(ctx):
    raise RuntimeError("boom\nsecond line")
    yield  # pragma: no cover


def _interrupt(ctx):
    raise KeyboardInterrupt
    yield  # pragma: no cover


def test_a_crashing_probe_becomes_an_error_record(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(run_mod, "select", lambda tests: [_spec("first", _one), _spec("crash", _crash),
                                                          _spec("after", _one)])
    out = tmp_path / "r.json"
    res = run_mod.run_probes(ProbeOptions(tests=["x"]), output=out)
    keys = [(m.probe, m.status) for m in res.measurements]
    assert ("crash", "error") in keys and keys[-1] == ("first", "waived") and len(keys) == 3
    err = next(m for m in res.measurements if m.status == "error")
    assert err.reason == "RuntimeError: boom"
    assert res.status == "partial" and load_results(out) == res
    assert set(res.probe_seconds) == {"first", "crash", "after"}
    assert res.run.cpu_model and res.run.host_python_loop_ns and res.run.host_python_loop_ns > 0  # the host's speed


def test_interrupt_keeps_the_results_measured_so_far(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(run_mod, "select", lambda tests: [_spec("first", _one), _spec("stop", _interrupt)])
    out = tmp_path / "r.json"
    with pytest.raises(KeyboardInterrupt):
        run_mod.run_probes(ProbeOptions(tests=["x"]), output=out)
    saved = load_results(out)
    assert saved.status == "interrupted" and [m.probe for m in saved.measurements] == ["first"]
    assert saved.run.finished_utc is not None


def test_why_cuda_did_not_run_is_a_field_of_the_results(tmp_path: Path, h100_results_path: Path) -> None:
    """A CUDA probe on a machine without a usable GPU: the reason is ``cuda_unavailable`` (and one problems line);
    files written before the field existed give the same reason from their problems line."""
    import dataclasses
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() > 0:
                pytest.skip("a GPU answers here: this checks a machine without one")
        except Exception:  # noqa: BLE001 - any CuPy failure means no usable GPU, which is the case checked
            pass
    res = run_mod.run_probes(ProbeOptions(tests=["host_to_device_memcpy_ce"]), tmp_path / "r.json")
    assert res.cuda_unavailable
    assert res.problems.count(f"{CUDA_SKIPPED}{res.cuda_unavailable}") == 1
    back = load_results(tmp_path / "r.json")
    assert back.cuda_skip_reason() == res.cuda_unavailable
    legacy = dataclasses.replace(back, cuda_unavailable=None)
    assert legacy.cuda_skip_reason() == res.cuda_unavailable
    assert load_results(h100_results_path).cuda_skip_reason() is None
