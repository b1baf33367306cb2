"""Real vLLM 0.26.0 runs on one H100 80GB HBM3 (reports/h100-2026-11-25/README.md): log parsers, the memory
model against vLLM's KV cache size, and the calibration fit on held-out runs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from gpuprobe.validate import adapter, calibrate, compare
from gpuprobe.validate.logparse import last_error_line, parse_allreduce, parse_memory_profile
from gpuprobe.validate.store import load_runs

ROOT = Path(__file__).resolve().parent.parent.parent
REPORT = ROOT / "reports" / "h100-2026-11-25"
SYSTEM = str(ROOT / "tests" / "data" / "h100-probe-2026-11-25.json")

# log name -> (weights GiB, available KV GiB, KV tokens, CUDA-graph pool GiB or None)
LOGS = {
    "llama-1b-tp1-eager": (2.32, 69.33, 2_271_888, None),
    "llama-1b-tp1-graphs": (2.32, 69.28, 2_270_288, 0.15),
    "llama-8b-tp1-eager": (15.0, 55.9, 457_904, None),
    "llama-8b-tp1-graphs": (15.0, 55.85, 457_504, 0.22),
}


@pytest.mark.parametrize("name", sorted(LOGS))
def test_gpu_log_memory_lines(name: str) -> None:
    log = (REPORT / "vllm-logs" / f"{name}.log").read_text()
    weights, kv_gib, tokens, graphs = LOGS[name]
    prof = parse_memory_profile(log)
    assert prof is not None
    assert prof.kv_cache_device == "GPU"
    assert prof.model_weights_gib == weights
    assert prof.available_kv_gib == kv_gib
    assert prof.kv_cache_tokens == tokens
    assert prof.max_concurrency_tokens_per_request == 4096
    assert prof.cuda_graph_actual_gib == graphs
    assert (prof.graph_capture_s is not None) == (graphs is not None)
    assert prof.init_engine_s is not None and prof.init_engine_s > 0
    assert parse_allreduce(log) == (None, None)  # TP=1: no all-reduce line
    assert last_error_line(log) is None


def _runs():
    return [load_runs(REPORT / f"validation-{m}.json") for m in ("1b", "8b")]


def test_kv_tokens_within_3_percent_of_real_vllm() -> None:
    seen = 0
    for runs in _runs():
        for run in runs.layouts:
            assert run.status == "ok"
            cmp = compare.compare_run(runs, run, system=SYSTEM)
            kv = [f for f in cmp.figures if f.figure == "kv_cache_tokens"]
            assert len(kv) == 1 and kv[0].rel_error is not None
            assert abs(kv[0].rel_error) <= 0.03, (runs.model_name, run.layout.name, kv[0])
            seen += 1
    assert seen == 4


def _errors(runs, cal) -> dict[tuple[str, str, str], float]:
    """ln(predicted / measured) of every speed figure of ``runs``."""
    out = {}
    for run in runs.layouts:
        req = compare.predict_request(runs, run, SYSTEM)
        pred = adapter.predict_run(dataclasses.replace(req, calibration=cal))
        for (fig, lab), meas in compare.measured_figures(run).items():
            if fig in compare.PERF_FIGURES and meas:
                out[(run.layout.name, lab or "", fig)] = math.log(pred.workloads[lab or ""][fig] / meas)
    return out


def test_calibration_fitted_on_8b_is_closer_on_held_out_1b() -> None:
    from gpuprobe.predict.calibration import Calibration
    from gpuprobe.results.serde import from_data

    runs_1b, runs_8b = _runs()
    fit = calibrate.fit_calibration([runs_8b], system=SYSTEM, holdout="model")  # one model: a single fit
    fitted = from_data(Calibration, fit.calibration)
    before = _errors(runs_1b, Calibration())
    after = _errors(runs_1b, fitted)
    for fig in compare.PERF_FIGURES:
        b = sum(v * v for k, v in before.items() if k[2] == fig)
        a = sum(v * v for k, v in after.items() if k[2] == fig)
        assert a < b, (fig, a, b)


def test_committed_calibration_loads_and_beats_defaults() -> None:
    from gpuprobe.predict.calibration import Calibration

    cal = adapter.load_calibration_file(REPORT / "calibration.json")
    for runs in _runs():
        before = _errors(runs, Calibration())
        after = _errors(runs, cal)
        assert sum(v * v for v in after.values()) < sum(v * v for v in before.values())
