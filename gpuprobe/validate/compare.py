"""Predicted against measured, per figure, for each validated layout (recomputable from a validation file).

Figures: ``kv_cache_tokens`` (per engine), and per workload ``output_tokens_per_s``, ``ttft_ms`` (median),
``tpot_ms`` (median) and, for served workloads, ``itl_ms`` (median). Error = (predicted − measured) / measured:
positive means the prediction is too high.
The predictor is reached only through ``gpuprobe.validate.adapter.predict_run``, so tests and calibration
can pass another one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuprobe.results.validation import Comparison, FigureComparison, LayoutRun, ValidationRuns
from gpuprobe.validate import adapter
from gpuprobe.validate.adapter import PredictedRun, Predictor, PredictRequest

FIGURES = ("kv_cache_tokens", "output_tokens_per_s", "ttft_ms", "tpot_ms", "itl_ms")
PERF_FIGURES = ("output_tokens_per_s", "ttft_ms", "tpot_ms", "itl_ms")


def rel_error(predicted: float | None, measured: float | None) -> float | None:
    if predicted is None or measured is None or measured == 0:
        return None
    return (predicted - measured) / measured


def measured_figures(run: LayoutRun) -> dict[tuple[str, str | None], float | None]:
    """(figure, workload label or None) -> measured value, for every figure the run has."""
    m = run.measured
    out: dict[tuple[str, str | None], float | None] = {}
    if m is None:
        return out
    out[("kv_cache_tokens", None)] = float(m.kv_cache.tokens) if m.kv_cache and m.kv_cache.tokens else None
    for w in m.workloads:
        if w.status != "ok":
            continue
        lab = w.workload.label
        out[("output_tokens_per_s", lab)] = w.output_tokens_per_s
        out[("ttft_ms", lab)] = w.ttft.median_ms if w.ttft else None
        out[("tpot_ms", lab)] = w.tpot.median_ms if w.tpot else None
        if w.itl is not None:
            out[("itl_ms", lab)] = w.itl.median_ms
    return out


def figures_of(run: LayoutRun, pred: PredictedRun) -> list[FigureComparison]:
    out = []
    for (fig, lab), meas in measured_figures(run).items():
        p = pred.kv_cache_tokens if fig == "kv_cache_tokens" else pred.workloads.get(lab or "", {}).get(fig)
        reason = None if p is not None else pred.reasons.get(fig, "the predictor gave no figure")
        if meas is None:
            reason = "not measured"
        out.append(FigureComparison(fig, lab, p, meas, rel_error(p, meas), reason))
    return out


def predict_request(runs: ValidationRuns, run: LayoutRun, system: str | None,
                    calibration: Any = None) -> PredictRequest:
    """What the predictor needs to predict one measured run (its ok workloads, the engine's settings)."""
    assert run.measured is not None
    return PredictRequest(
        model_config=runs.model_config,
        layout=run.layout,
        workloads=[w.workload for w in run.measured.workloads if w.status == "ok"],
        measured=run.measured,
        device=runs.run.device,
        gpu_count=runs.run.gpu_count,
        system_path=system,
        calibration=calibration,
        env=dict(run.env),
        host_gflops=runs.run.host_gflops,
        host_memory_gbps=runs.run.host_memory_gbps,
    )


def compare_run(
    runs: ValidationRuns,
    run: LayoutRun,
    system: str | os.PathLike[str] | None = None,
    calibration: str | os.PathLike[str] | None = None,
    predictor: Predictor | None = None,
) -> Comparison:
    """The comparison of one layout run (needs its measurement; a run that never started has none)."""
    m = run.measured
    if m is None or run.status == "skipped" or (m.kv_cache is None and not m.workloads):
        return Comparison(predictor="none", reason="nothing was measured")
    req = predict_request(runs, run, str(system) if system else None,
                          adapter.load_calibration_file(calibration) if calibration else None)
    try:
        pred = (predictor or adapter.predict_run)(req)
    except adapter.PredictorUnavailable as exc:
        return Comparison(predictor="unavailable", reason=str(exc), system=req.system_path)
    return Comparison(
        predictor=pred.predictor,
        calibration=str(calibration) if calibration else None,
        system=pred.system,
        figures=figures_of(run, pred),
        prediction=pred.raw,
        reason=None,
    )


def comparer(
    system: str | os.PathLike[str] | None = None, calibration: str | os.PathLike[str] | None = None
) -> Callable[[ValidationRuns, LayoutRun], None]:
    """The hook ``run_validation`` calls after each layout: fills ``run.comparison`` (never raises)."""

    def hook(runs: ValidationRuns, run: LayoutRun) -> None:
        try:
            run.comparison = compare_run(runs, run, system, calibration)
        except Exception as exc:  # noqa: BLE001 - a predictor bug must not lose a measured run
            run.comparison = Comparison(predictor="error", reason=f"{type(exc).__name__}: {exc}")

    return hook


def recompare(
    runs: ValidationRuns,
    system: str | os.PathLike[str] | Path | None = None,
    calibration: str | os.PathLike[str] | Path | None = None,
    predictor: Predictor | None = None,
) -> ValidationRuns:
    """Recompute every layout's comparison with the current predictor (offline; no vLLM needed)."""
    for run in runs.layouts:
        if run.measured is not None and run.status != "skipped":
            run.comparison = compare_run(runs, run, system, calibration, predictor)
    return runs
