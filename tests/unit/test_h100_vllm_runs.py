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


LEASE2 = REPORT / "lease2"
LEASE2_SYSTEM = str(LEASE2 / "probe-run2.json")


def _lease2_runs():
    return [load_runs(LEASE2 / f"validation-{m}.json") for m in ("1b", "3b", "qwen7b", "8b")]


def _log_errors(all_runs, system: str, cal) -> dict[tuple[str, str, str, str], float]:
    """(model, engine, workload, figure) -> ln(predicted / measured) of every measured speed figure."""
    out = {}
    for runs in all_runs:
        for run in runs.layouts:
            req = compare.predict_request(runs, run, system)
            pred = adapter.predict_run(dataclasses.replace(req, calibration=cal))
            eng = "eager" if run.layout.enforce_eager else "graphs"
            for (fig, lab), meas in compare.measured_figures(run).items():
                if fig in compare.PERF_FIGURES and lab and meas:
                    out[(runs.model_name, eng, lab, fig)] = math.log(pred.workloads[lab][fig] / meas)
    return out


def _tokps_errors(all_runs, system: str, cal) -> dict[tuple[str, str, str], float]:
    """(model, engine, workload) -> relative error of output tokens/s."""
    return {k[:3]: math.exp(v) - 1 for k, v in _log_errors(all_runs, system, cal).items()
            if k[3] == "output_tokens_per_s"}


def test_defaults_on_runs_not_used_to_set_them() -> None:
    """The shipped speed defaults were fitted to the reference runs; lease 2 (another machine, two new models)
    is out of sample. GPU-bound engines (7B/8B with CUDA graphs) within 7 %, the median point within 10 %."""
    from gpuprobe.predict.calibration import Calibration

    errs = _tokps_errors(_lease2_runs(), LEASE2_SYSTEM, Calibration())
    assert len(errs) == 32
    gpu_bound = {k: v for k, v in errs.items() if k[1] == "graphs" and ("7b" in k[0] or "8b" in k[0])}
    assert len(gpu_bound) == 8
    assert all(abs(v) <= 0.07 for v in gpu_bound.values()), gpu_bound
    med = sorted(abs(v) for v in errs.values())[len(errs) // 2]
    assert med <= 0.10, med


def test_same_engine_twice_differs_by_more_than_the_target_when_host_bound() -> None:
    """The measurement's own spread (lease 3: the 1B twice, back to back on one machine): eager and host-bound
    graphs engines move by more than 5 %, so no model can be held to 5 % on them; the GPU-bound 8B with graphs
    repeats within 2 % even across machines."""
    reps = [load_runs(REPORT / "lease3-repeat" / f"validation-1b-rep{r}.json") for r in (1, 2)]
    tok = [{(run.layout.enforce_eager, lab): v for run in r.layouts
            for (fig, lab), v in compare.measured_figures(run).items() if fig == "output_tokens_per_s"}
           for r in reps]
    assert tok[0].keys() == tok[1].keys() and len(tok[0]) == 8
    change = {k: tok[1][k] / tok[0][k] - 1 for k in tok[0]}
    assert max(abs(v) for k, v in change.items() if k[0]) > 0.20  # eager
    assert max(abs(v) for k, v in change.items() if not k[0]) > 0.05  # 1B with graphs: host-bound
    a = load_runs(REPORT / "validation-8b.json")
    b = load_runs(LEASE2 / "validation-8b.json")
    for ra, rb in zip(a.layouts, b.layouts, strict=True):
        if ra.layout.enforce_eager:
            continue
        fa, fb = compare.measured_figures(ra), compare.measured_figures(rb)
        for key, va in fa.items():
            if key[0] == "output_tokens_per_s":
                assert abs(fb[key] / va - 1) <= 0.02, (key, va, fb[key])


def test_committed_lease2_calibration_loads_and_fits_better_than_defaults() -> None:
    """The calibration fitted on lease 2 (benchmarks/validation_accuracy.py --fit-out) lowers the fit's own
    robust loss on those runs compared with the defaults."""
    from gpuprobe.predict.calibration import Calibration

    cal = adapter.load_calibration_file(LEASE2 / "calibration.json")
    assert cal.source.endswith("calibration.json")

    def loss(c) -> float:
        return sum(calibrate._soft_l1(v) for v in _log_errors(_lease2_runs(), LEASE2_SYSTEM, c).values())

    assert loss(cal) < loss(Calibration())
