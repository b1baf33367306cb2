"""The predictor against real vLLM 0.26.0 runs: KV cache and memory profile of every engine, the start-to-start
spread of host-bound engines, and the speed figures on runs the reference calibration was not fitted to.

Data (tests/data/vllm-h200-2026-12-01/README.md, tests/data/vllm-h100-2026-11-25/README.md): engines on an
H100 80GB HBM3 (three machines) and an H200 (five machines). The exact accuracy figures are the benchmark's
(``python benchmarks/predictor_accuracy.py``); the bounds here guard them against regressions.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import math
import statistics
import sys
from pathlib import Path

import pytest

from gpuprobe.predict.calibration import Calibration
from gpuprobe.predict.memory import forward_activation_bytes
from gpuprobe.predict.model_spec import model_spec_from_dict
from gpuprobe.predict.options import ServeOptions
from gpuprobe.predict.stepcost import StepCost
from gpuprobe.predict.system import SystemProfile
from gpuprobe.results.validation import WorkloadResult
from gpuprobe.validate import compare
from gpuprobe.validate.logparse import Iteration, last_error_line, parse_allreduce, parse_memory_profile
from gpuprobe.validate.spread import start_spreads
from gpuprobe.validate.store import load_runs

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import predictor_accuracy as bench  # noqa: E402

H100 = ROOT / "tests" / "data" / "vllm-h100-2026-11-25"
H200 = ROOT / "tests" / "data" / "vllm-h200-2026-12-01"
GiB = 1 << 30

# H100 log name -> (weights GiB, available KV GiB, KV tokens, CUDA-graph pool GiB or None)
LOGS = {
    "llama-1b-tp1-eager": (2.32, 69.33, 2_271_888, None),
    "llama-1b-tp1-graphs": (2.32, 69.28, 2_270_288, 0.15),
    "llama-8b-tp1-eager": (15.0, 55.9, 457_904, None),
    "llama-8b-tp1-graphs": (15.0, 55.85, 457_504, 0.22),
}


@pytest.mark.parametrize("name", sorted(LOGS))
def test_gpu_log_memory_lines(name: str) -> None:
    log = (H100 / "logs" / f"{name}.log").read_text()
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


def _every_engine() -> list[tuple[Path, Path]]:
    out = list(bench.FIT) + list(bench.HELD_OUT) + list(bench.KV_ONLY)
    out += [(f, H200 / "probe-machine1.json") for f in sorted(H200.glob("mem-*.json"))]
    out += [(H100 / f"machine3-validation-1b-rep{r}.json", bench.H100_M1_SYSTEM) for r in (1, 2)]
    return out


def test_kv_tokens_within_2_percent_of_every_real_engine() -> None:
    """vLLM's own "GPU KV cache size" of every engine that started: 1B to 30B-A3B (MoE) and block-FP8, eager and
    CUDA graphs, offline and served, max_num_seqs 1 to 1024 and max_num_batched_tokens 2,048 to 16,384, vLLM's
    defaults included (max_model_len 32K to 128K, utilization 0.92)."""
    seen = 0
    for path, system in _every_engine():
        runs = load_runs(path)
        for run in runs.layouts:
            if run.measured is None or run.measured.kv_cache is None:
                continue
            kv = [f for f in compare.compare_run(runs, run, system=system).figures if f.figure == "kv_cache_tokens"]
            assert len(kv) == 1 and kv[0].rel_error is not None, (path.name, run.layout.name)
            assert abs(kv[0].rel_error) <= 0.02, (path.name, run.layout.name, kv[0])
            seen += 1
    assert seen >= 30


def test_activation_peak_matches_the_memory_sweep() -> None:
    """The profile run's activation peak (debug log of vLLM's memory profiler) for max_num_seqs 1 to 1024 and
    max_num_batched_tokens 2,048 to 16,384 on three shapes: within 0.1 GiB of the model, and independent of
    max_num_seqs (vLLM 0.26's GPU model runner samples the profile's logits in place)."""
    cal = Calibration().memory
    by_tokens: dict[tuple[str, int], set[float]] = {}
    for path in sorted(H200.glob("mem-*.json")):
        runs = load_runs(path)
        m = runs.layouts[0].measured
        assert m is not None and m.memory_profile is not None and m.memory_profile.activation_peak_gib is not None
        spec = model_spec_from_dict(runs.model_config)
        tokens = m.max_num_batched_tokens
        assert tokens is not None
        model = (forward_activation_bytes(spec, 1, tokens, cal) + cal.activation_fixed_bytes) / GiB
        assert model == pytest.approx(m.memory_profile.activation_peak_gib, abs=0.1), path.name
        by_tokens.setdefault((spec.hidden_size, tokens), set()).add(m.memory_profile.activation_peak_gib)
        assert m.memory_profile.non_torch_gib == pytest.approx(cal.non_torch_bytes / GiB, abs=0.01)
    assert len(by_tokens) >= 6
    shared = [v for v in by_tokens.values() if len(v) == 1]
    assert len(shared) == len(by_tokens)  # same tokens, any max_num_seqs: the same peak


def test_host_bound_engines_move_between_starts() -> None:
    """The measurement's own spread: the 1B-shaped engine started three times on one H200 moved output
    tokens/s by more than 10 % on some workload, twice on an H100 by more than 20 % in eager mode; the
    GPU-bound 8B with CUDA graphs repeats within 2 % across two H100 machines."""
    h200 = [s for s in start_spreads(load_runs(H200 / "llama-3.2-1b-graphs.json"))
            if s.figure == "output_tokens_per_s"]
    assert len(h200) == 6 and max(s.spread for s in h200) > 0.10
    reps = [load_runs(H100 / f"machine3-validation-1b-rep{r}.json") for r in (1, 2)]
    tok = [{(run.layout.enforce_eager, lab): v for run in r.layouts
            for (fig, lab), v in compare.measured_figures(run).items() if fig == "output_tokens_per_s"}
           for r in reps]
    assert tok[0].keys() == tok[1].keys() and len(tok[0]) == 8
    assert max(abs(tok[1][k] / tok[0][k] - 1) for k in tok[0] if k[0]) > 0.20
    a, b = (load_runs(H100 / f"machine{m}-validation-8b.json") for m in (1, 2))
    for ra, rb in zip(a.layouts, b.layouts, strict=True):
        if not ra.layout.enforce_eager:
            fa, fb = compare.measured_figures(ra), compare.measured_figures(rb)
            for key, va in fa.items():
                if key[0] == "output_tokens_per_s":
                    assert abs(fb[key] / va - 1) <= 0.02, (key, va, fb[key])


def test_held_out_accuracy_of_the_shipped_defaults() -> None:
    """Runs the reference calibration never saw (other models, other machines, the other GPU kind, an MoE model
    and dense shapes never seen, MoE and FP8 serving): median |error| of output tokens/s within 5 %, TPOT within
    7 %, TTFT within 13 %, the served loads' tokens/s within 3.5 %, TTFT within 10 % and TPOT within 5.5 %, and
    the band covers at least 92 % of measured points (the benchmark reports the exact figures: 2.2 %, 5.2 %,
    9.7 %, 1.7 %, 8.6 %, 3.9 %, 98 %)."""
    pts = [p for p in bench.points("held out", bench.HELD_OUT, Calibration()) if p.figure != "kv_cache_tokens"]
    assert len(pts) >= 300

    def med(fig: str) -> float:
        return statistics.median(abs(p.err) for p in pts if p.figure == fig and p.err is not None)

    assert med("output_tokens_per_s") <= 0.05
    assert med("tpot_ms") <= 0.07
    assert med("ttft_ms") <= 0.13
    served = [p for p in pts if p.mode == "served" and p.err is not None]
    assert statistics.median(abs(p.err) for p in served if p.figure == "output_tokens_per_s") <= 0.035
    assert statistics.median(abs(p.err) for p in served if p.figure == "ttft_ms") <= 0.10
    assert statistics.median(abs(p.err) for p in served if p.figure == "tpot_ms") <= 0.055
    covered = [p.covered for p in pts if p.covered is not None]
    assert len(covered) >= 380 and sum(covered) / len(covered) >= 0.92


def _tpot(path: Path, label: str) -> tuple[float, float]:
    """(measured, predicted) median TPOT of one workload of a run, on the run's own machine."""
    runs = load_runs(path)
    (run,) = runs.layouts
    cmp = compare.compare_run(runs, run, system=H200 / "probe-machine3.json")
    figs = {(f.figure, f.workload): f for f in cmp.figures}
    f = figs[("tpot_ms", label)]
    assert f.measured is not None and f.predicted is not None
    return f.measured, f.predicted


def test_moe_decode_above_the_capture_sizes_costs_less_compiled_than_eager() -> None:
    """Qwen3-30B-A3B decoding 1,024 requests (steps above the largest CUDA-graph size, 512): the compiled engine's
    steps (no graph, torch.compile'd code) took 82 ms, the eager engine's 125 ms, both set by the host's
    per-layer fused-MoE dispatch; the model orders them the same way and puts each within 30 % (the eager one is
    27 % short since the served Llama-3.2-1B engine joined the fit set; it was 23 % short before)."""
    wl = "n=1024,in=128,out=128"
    compiled = _tpot(H200 / "qwen3-30b-a3b-graphs-warm.json", wl)
    eager = _tpot(H200 / "qwen3-30b-a3b-eager.json", wl)
    assert eager[0] > 1.3 * compiled[0]
    assert eager[1] > 1.1 * compiled[1]
    for measured, predicted in (compiled, eager):
        assert predicted == pytest.approx(measured, rel=0.30)


def test_warm_moe_batches_are_faster_than_the_ones_that_compiled_kernels() -> None:
    """The same Qwen3-30B-A3B engine shape on two H200 machines: the run that JIT-compiled fused-MoE kernels while
    timed (vLLM's jit_monitor warned in its log) measured under half the warm run's speed at 128 and 1,024
    requests; at one request, where nothing new compiled, the two agree within 5 %."""
    def tok(name: str) -> dict[str, float]:
        (run,) = load_runs(H200 / name).layouts
        return {lab: v for (fig, lab), v in compare.measured_figures(run).items() if fig == "output_tokens_per_s"}

    cold, warm = tok("qwen3-30b-a3b-graphs.json"), tok("qwen3-30b-a3b-graphs-warm.json")
    for wl in ("n=128,in=512,out=128", "n=1024,in=128,out=128"):
        assert cold[wl] < 0.6 * warm[wl]
    assert cold["n=1,in=128,out=256"] == pytest.approx(warm["n=1,in=128,out=256"], rel=0.05)


def step_cost(name: str, sysp: SystemProfile, cal: Calibration, tp: int = 1,
              serve: ServeOptions | None = None) -> StepCost:
    """The step cost of one replica of model ``name`` (tests/data/configs) at TP ``tp`` on system ``sysp``."""
    from gpuprobe.predict.layouts import assign_gpus
    from gpuprobe.predict.model_spec import load_model_spec
    from gpuprobe.predict.recommend import predict_layout_memory

    spec = load_model_spec(ROOT / "tests" / "data" / "configs" / f"{name}.json")
    layout = assign_gpus(sysp, tp, 1, 1)
    mem = predict_layout_memory(spec, sysp, layout, serve or ServeOptions(), cal)
    return StepCost(spec, sysp, layout, 0, mem, cal)


def test_fp8_steps_pay_the_fitted_activation_quantization_per_layer() -> None:
    """A decode step of the FP8 engine is longer by layers x fp8_per_layer_us than it would be without that term;
    a BF16 engine's is not touched by it."""
    from dataclasses import replace

    from gpuprobe.predict.stepcost import Batch
    from gpuprobe.predict.system import system_from_results
    from gpuprobe.results.io import load_results

    sysp = system_from_results(load_results(H200 / "probe-machine3.json"), name="H200")
    b = Batch(tokens=1, seqs=1, context_tokens=512, sampled=1)
    cal = Calibration()
    for name, fp8 in (("qwen3-8b-fp8", True), ("qwen3-8b", False)):
        cost = step_cost(name, sysp, cal)
        with_term = cost.step_time(b).gpu_s
        without = step_cost(name, sysp, replace(cal, fp8_per_layer_us=0.0)).step_time(b).gpu_s
        extra = cost.spec.num_layers * cal.fp8_per_layer_us * 1e-6 if fp8 else 0.0
        assert with_term - without == pytest.approx(extra, abs=1e-9), name


H200_2 = ROOT / "tests" / "data" / "vllm-h200-2026-12-02"


def _h200(probe: str) -> SystemProfile:
    """The system of one of the 2026-12-02 H200 probes (``probe-machineN.json``)."""
    from gpuprobe.predict.system import system_from_results
    from gpuprobe.results.io import load_results

    return system_from_results(load_results(H200_2 / probe), name="H200")


def _by_tokens(rows: list[dict]) -> dict[int, list[dict]]:
    """A microbenchmark's rows (one per linear layer and token count) grouped by token count."""
    by: dict[int, list[dict]] = {}
    for r in rows:
        by.setdefault(r["tokens"], []).append(r)
    return by


def _fp8_peak(device_name: str) -> float:
    from gpuprobe.predict.gpu_specs import spec_for_device_name

    spec = spec_for_device_name(device_name)
    assert spec is not None and spec.fp8_tflops is not None
    return spec.fp8_tflops * 1e12


def test_unaligned_fp8_gemm_rate_is_the_measured_one() -> None:
    """fp8_unaligned_gemm_efficiency and fp8_unaligned_short_gemm_efficiency are the microbenchmark's figures:
    vLLM's block-scaled CUTLASS GEMM at token counts not divisible by 4 (Qwen3-8B's four linear layers together),
    over the FP8 peak, above and up to FP8_SHORT_STEP_TOKENS; at those counts it is slower than BF16, while at
    multiples of 4 it is faster."""
    from gpuprobe.predict.stepcost import FP8_SHORT_STEP_TOKENS

    doc = json.loads((H200_2 / "fp8-block-gemm-machine10.json").read_text())
    assert doc["problems"] == [] and doc["vllm_version"] == "0.26.0"
    peak = _fp8_peak(doc["device_name"])
    assert all(r["rel_error"] < 0.01 for r in doc["rows"])  # every GEMM checked against the dequantized product
    short, long, slower, faster = [], [], [], []
    for m, rows in _by_tokens(doc["rows"]).items():
        flops = sum(2 * m * r["n"] * r["k"] for r in rows)
        fp8 = sum(r["fp8_gemm_ms"] for r in rows) * 1e-3
        bf16 = sum(r["bf16_gemm_ms"] for r in rows) * 1e-3
        if m < 1023:
            continue
        if m % 4:
            (short if m <= FP8_SHORT_STEP_TOKENS else long).append(flops / fp8 / peak)
            slower.append(fp8 > bf16)
        else:
            faster.append(fp8 < bf16)
    assert len(short) >= 6 and len(long) >= 10
    cal = Calibration()
    assert statistics.median(short) == pytest.approx(cal.fp8_unaligned_short_gemm_efficiency, abs=0.01)
    assert statistics.median(long) == pytest.approx(cal.fp8_unaligned_gemm_efficiency, abs=0.01)
    assert all(slower) and all(faster)


def test_unaligned_fp8_rate_holds_inside_the_engine() -> None:
    """In vLLM's engine (one prompt per step, Qwen3-8B-FP8 and Qwen3-14B-FP8, another H200), a prompt of N + 1
    tokens takes longer than one of N (a multiple of 4) by what the unaligned rate says: the extra time plus the
    aligned GEMMs' time (at the rate the isolated benchmark measured) is the dense FLOPs at the unaligned
    efficiency. The medians of the short and of the long steps are the shipped figures; every count is within
    25 % of its figure (where the slower regime begins depends on the shape: 3,073 tokens for Qwen3-8B, 6,145
    for Qwen3-14B, whose 3,073 and 4,097 run at the short rate; one threshold is the simplification)."""
    from gpuprobe.predict.model_spec import load_model_spec
    from gpuprobe.predict.params import layer_shard
    from gpuprobe.predict.stepcost import FP8_SHORT_STEP_TOKENS

    gemm = json.loads((H200_2 / "fp8-block-gemm-machine10.json").read_text())
    by = _by_tokens(gemm["rows"])
    aligned_rate = statistics.median(  # isolated aligned FLOP/s over 1,024-12,288 tokens, Qwen3-8B's layers
        sum(2 * m * r["n"] * r["k"] for r in by[m]) / (sum(r["fp8_gemm_ms"] for r in by[m]) * 1e-3)
        for m in (1024, 2048, 3072, 4096, 6144, 8192, 12288))
    cal = Calibration()
    effs: dict[bool, list[float]] = {}
    for name in ("qwen3-8b", "qwen3-14b"):
        doc = json.loads((H200_2 / f"fp8-prompt-step-{name}.json").read_text())
        assert doc["vllm_version"] == "0.26.0"
        spec = load_model_spec(ROOT / "tests" / "data" / "configs" / f"{name}-fp8.json")
        flops_per_token = 2 * sum(layer_shard(spec, j, 1).linear for j in range(spec.num_layers))
        ms = {r["tokens"]: r["ms_median"] for r in doc["rows"]}
        for m in sorted(ms):
            if m % 4 or m + 1 not in ms:
                continue
            extra_s = (ms[m + 1] - ms[m]) * 1e-3
            eff = flops_per_token * (m + 1) / (extra_s + flops_per_token * m / aligned_rate) / _fp8_peak(
                doc["device_name"])
            short = m + 1 <= FP8_SHORT_STEP_TOKENS
            want = cal.fp8_unaligned_short_gemm_efficiency if short else cal.fp8_unaligned_gemm_efficiency
            assert eff == pytest.approx(want, rel=0.25), (name, m)
            effs.setdefault(short, []).append(eff)
    assert len(effs[True]) >= 6 and len(effs[False]) >= 8
    assert statistics.median(effs[True]) == pytest.approx(cal.fp8_unaligned_short_gemm_efficiency, abs=0.01)
    assert statistics.median(effs[False]) == pytest.approx(cal.fp8_unaligned_gemm_efficiency, abs=0.01)


@pytest.mark.xfail(strict=True, reason=(
    "the host cost of a prompt step without CUDA graphs is fitted to served engines (a ~1 ms a layer excess over "
    "decode steps, prompt_launch_per_layer_us), but an idle offline engine ran one 1,024-token prompt of "
    "Qwen3-8B-FP8 in 23 ms, generate() included, where the step cost says 39 ms (host-bound at 33 ms); dropping "
    "the excess fixes served Llama-3.1-8B's Poisson TPOT (+25 % to +8 %) and breaks the host-bound Llama-3.2-1B "
    "served on machine 9 (-8 % to -38 %): the fit set's machines differ in host speed, which no probe measures"))
def test_an_idle_engines_prompt_step_costs_what_vllm_took() -> None:
    """One prompt of 1,024 or 1,536 tokens through an idle offline Qwen3-8B-FP8 engine (another H200): the step
    cost (plus nothing for generate()'s own overhead) within 15 %."""
    doc = json.loads((H200_2 / "fp8-prompt-step-qwen3-8b.json").read_text())
    ms = {r["tokens"]: r["ms_median"] for r in doc["rows"]}
    h200 = _h200("probe-machine12.json")
    cost = step_cost("qwen3-8b-fp8", h200, Calibration(), serve=ServeOptions(
        max_model_len=doc["max_num_batched_tokens"], max_num_seqs=8,
        max_num_batched_tokens=doc["max_num_batched_tokens"]))
    for m in (1024, 1536):
        assert _prompt_ms(cost, m) == pytest.approx(ms[m], rel=0.15), m


def test_fp8_weights_stream_at_the_measured_rates() -> None:
    """fp8_aligned_weight_rate and fp8_unaligned_weight_rate are the CUDA-graph microbenchmark's figures: at
    decode sizes a block-scaled FP8 linear reads its weights at about half the rate a BF16 one does when the
    token count is a multiple of 4 and three quarters when it is not (Qwen3-8B's and Qwen3-14B's linears, each
    checked against the dequantized product)."""
    aligned, unaligned = [], []
    for name in ("qwen3-8b", "qwen3-14b"):
        doc = json.loads((H200_2 / f"fp8-block-gemm-graph-{name}-machine12.json").read_text())
        assert doc["problems"] == [] and doc["vllm_version"] == "0.26.0"
        assert all(r["rel_error"] < 0.01 for r in doc["graph_rows"])
        for m, rows in _by_tokens(doc["graph_rows"]).items():
            if m <= 128:  # weight-bound sizes
                ratio = sum(r["bf16_gemm_ms"] for r in rows) / (2 * sum(r["fp8_gemm_ms"] for r in rows))
                (unaligned if m % 4 else aligned).append(ratio)
    cal = Calibration()
    assert statistics.median(aligned) == pytest.approx(cal.fp8_aligned_weight_rate, abs=0.02)
    assert statistics.median(unaligned) == pytest.approx(cal.fp8_unaligned_weight_rate, abs=0.02)
    assert max(aligned) < min(unaligned) + 0.05  # the two sides of the alignment do not overlap


def test_fp8_decode_steps_cost_what_the_served_engine_logged() -> None:
    """Machine 10's served Qwen3-8B-FP8 engine logged decode steps of 1-2 requests about 4 ms apart and of 4-15
    requests (graphs padded to 4, 8 or 16 tokens: aligned) about 6 ms apart. The step cost, which never saw the
    log, puts the second about 1.5 times the first; BF16 Qwen3-8B shows no such jump."""

    from gpuprobe.predict.stepcost import Batch
    from gpuprobe.validate.logparse import parse_iterations

    log = gzip.decompress((H200_2 / "qwen3-8b-fp8-serve-align-iterations.log.gz").read_bytes()).decode()
    gaps: dict[str, list[float]] = {"small": [], "aligned": []}
    for a, b in itertools.pairwise(parse_iterations(log)):
        assert a.time_s is not None and b.time_s is not None
        if a.prompt_requests == b.prompt_requests == 0 and a.decode_requests == b.decode_requests \
                and b.time_s - a.time_s < 0.2:
            if a.decode_requests <= 2:
                gaps["small"].append(b.time_s - a.time_s)
            elif a.decode_requests <= 15:
                gaps["aligned"].append(b.time_s - a.time_s)
    measured = statistics.median(gaps["aligned"]) / statistics.median(gaps["small"])
    assert 1.3 < measured < 1.7 and len(gaps["aligned"]) > 1000

    h200 = _h200("probe-machine10.json")

    def ratio(name: str) -> float:
        def step_ms(n: int) -> float:
            b = Batch(tokens=n, seqs=n, context_tokens=1100.0 * n, sampled=n)
            return step_cost(name, h200, Calibration(), serve=ServeOptions(max_model_len=8192)).step_time(
                b).total_s * 1e3
        return step_ms(8) / step_ms(1)

    assert ratio("qwen3-8b-fp8") == pytest.approx(measured, rel=0.2)
    assert ratio("qwen3-8b") < 1.1


def test_unaligned_fp8_step_costs_what_the_served_engine_logged() -> None:
    """On machine 10's H200, a served Qwen3-8B-FP8 step of 7 prompts of 1,024 tokens + 1 decode (7,169 tokens)
    took 442 ms and one of 7 x 1,025 + 1 (7,176) 108 ms (medians of 32 steps each, both engine starts). The step
    cost predicts the two within 25 %; the BF16 Qwen3-8B and an FP8 model on a GPU of another kind see no
    difference between the two counts."""
    from gpuprobe.predict.stepcost import Batch
    from gpuprobe.predict.system import system_from_spec

    cal = Calibration()
    h200 = _h200("probe-machine10.json")

    def step_ms(name: str, sysp: SystemProfile, prompt: int) -> float:
        b = Batch(tokens=7 * prompt + 1, seqs=8, context_tokens=1100.0, prompt_tokens=7 * prompt,
                  attn_work=7 * prompt * prompt / 2.0, sampled=8)
        return step_cost(name, sysp, cal, serve=ServeOptions(max_model_len=8192)).step_time(b).total_s * 1e3

    assert step_ms("qwen3-8b-fp8", h200, 1024) == pytest.approx(442, rel=0.25)
    assert step_ms("qwen3-8b-fp8", h200, 1025) == pytest.approx(108, rel=0.25)
    assert step_ms("qwen3-8b", h200, 1024) == pytest.approx(step_ms("qwen3-8b", h200, 1025), rel=0.02)
    l40s = system_from_spec("L40S", 1)
    assert step_ms("qwen3-8b-fp8", l40s, 1024) == pytest.approx(step_ms("qwen3-8b-fp8", l40s, 1025), rel=0.02)


def test_served_fp8_engine_ranks_prompt_lengths_as_measured() -> None:
    """Machine 10's served Qwen3-8B-FP8 engine at 8 clients: 1,025-token prompts (waves of 7 x 1,025 + 1 decode:
    a multiple of 4) gave TTFT about 180 ms and 1,075 tok/s; 1,024-token prompts (7 x 1,024 + 1) about 515 ms and
    795 tok/s. The prediction, which never saw this engine, shows the same order and the same size of gap."""
    runs = load_runs(H200_2 / "qwen3-8b-fp8-serve-align.json")
    system = str(H200_2 / "probe-machine10.json")
    fig: dict[str, dict[str, list[float]]] = {}
    for run in runs.layouts:
        for c in compare.compare_run(runs, run, system).figures:
            if c.figure in ("ttft_ms", "output_tokens_per_s") and c.measured is not None and c.predicted is not None:
                fig.setdefault(c.workload, {}).setdefault(c.figure, []).append(c.measured)
                fig[c.workload].setdefault("pred_" + c.figure, []).append(c.predicted)
    slow, fast = fig["n=64,in=1024,out=128,c=8"], fig["n=64,in=1025,out=128,c=8"]
    for f in ("ttft_ms", "pred_ttft_ms"):
        assert statistics.median(slow[f]) > 2.0 * statistics.median(fast[f]), f
    for f in ("output_tokens_per_s", "pred_output_tokens_per_s"):
        assert statistics.median(fast[f]) > 1.2 * statistics.median(slow[f]), f
    for wl in (slow, fast):
        assert statistics.median(wl["pred_ttft_ms"]) == pytest.approx(statistics.median(wl["ttft_ms"]), rel=0.15)


def _prompt_waves(steps: list[tuple[int, int]], prompt_tokens: int) -> list[list[int]]:
    """The waves of ``prompt_tokens`` prompt tokens in all in a run's steps, (prompt tokens, all tokens) each: the
    token counts of the steps from one after a step without prompts up to the next step without prompts."""
    waves: list[list[int]] = []
    cur: list[tuple[int, int]] = []
    for prompt, total in steps:
        if prompt:
            cur.append((prompt, total))
            continue
        if cur and sum(p for p, _ in cur) == prompt_tokens:
            waves.append([t for _, t in cur])
        cur = []
    return waves


USUAL_WAVE = [8192, 8192, 8192, 7217]
"""A wave of 32 prompts of 1,024 tokens under an 8,192-token budget after its first step (the first prompt alone,
with the decodes of the wave before it, if any): three steps filled to the budget, then the rest."""


def _logged_waves(name: str) -> list[list[int]]:
    """The waves of 32 x 1,024 prompt tokens in a served run's step log (``NAME-iterations.log.gz``)."""
    from gpuprobe.validate.logparse import parse_iterations

    log = gzip.decompress((H200_2 / f"{name}-iterations.log.gz").read_bytes()).decode()
    return _prompt_waves([(i.prompt_tokens, i.prompt_tokens + i.decode_tokens) for i in parse_iterations(log)],
                         32 * 1024)


def _simulated_steps(name: str, probe: str, label: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[
        list[tuple[int, int, float]], WorkloadResult, dict[str, float]]]:
    """Per start of served run ``name``: the simulation's steps of load ``label`` as (prompt tokens, all tokens,
    milliseconds), the measured load and the predicted figures."""
    from gpuprobe.predict import perf
    from gpuprobe.validate import adapter

    steps: list[tuple[int, int, float]] = []

    class Recorded(StepCost):
        def step_time(self, b, micro: int = 1):  # type: ignore[no-untyped-def]
            st = super().step_time(b, micro)
            steps.append((b.prompt_tokens, b.tokens, st.total_s * 1e3))
            return st

    monkeypatch.setattr(perf, "StepCost", Recorded)
    runs = load_runs(H200_2 / f"{name}.json")
    out = []
    for run in runs.layouts:
        assert run.measured is not None
        (wl,) = [w for w in run.measured.workloads if w.workload.label == label]
        steps.clear()
        req = compare.predict_request(runs, run, str(H200_2 / probe))
        pred = adapter.predict_run(dataclasses.replace(req, workloads=[wl.workload]))
        out.append((list(steps), wl, pred.workloads[label]))
    return out


def _simulated_waves(name: str, probe: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[list[int]], float,
                                                                                          float]]:
    """Per start of served run ``name``'s 32-client load: (the simulation's waves, measured and predicted median
    TTFT in ms)."""
    out = []
    for steps, wl, pred in _simulated_steps(name, probe, "n=128,in=1024,out=128,c=32", monkeypatch):
        assert wl.ttft is not None
        out.append((_prompt_waves([(p, t) for p, t, _ in steps], 32 * 1024), wl.ttft.median_ms, pred["ttft_ms"]))
    return out


def test_a_wave_of_32_clients_fills_its_second_step_as_the_served_engine_did(monkeypatch: pytest.MonkeyPatch) -> None:
    """Machine 10's served Qwen3-8B-FP8 engine at 32 clients (1,024-token prompts, an 8,192-token budget) logged 12
    of its 15 waves (both starts) alike: the first send's prompt alone, then three steps filled to the budget
    (8,192 tokens, a multiple of 4: the fast FP8 GEMMs) and last the rest, 7,217 tokens (not a multiple of 4:
    about 450 ms); in the other 3 the second step held 3 or 6 prompts. vLLM launches a step before it schedules
    the next (the model runner works in the engine's process), and launching a prompt above the capture sizes
    takes tens of milliseconds, in which most of the wave's requests come in. The simulation,
    which never saw this engine, makes the same steps in the same order; its median TTFT lies within the two
    starts' (368 and 473 ms), 12 % below their mean (it was 64 % above while the scheduler did not wait for the
    launch)."""
    logged = _logged_waves("qwen3-8b-fp8-serve-align")
    usual = [w for w in logged if w[0] in (1024, 1032) and w[1:] == USUAL_WAVE]
    assert len(logged) == 15 and len(usual) == 12
    measured, predicted = [], []
    for simulated, meas, pred in _simulated_waves("qwen3-8b-fp8-serve-align", "probe-machine10.json", monkeypatch):
        assert len(simulated) >= 3
        for w in simulated[1:]:
            assert w[0] in (1024, 1032) and w[1:] == USUAL_WAVE
        measured.append(meas)
        predicted.append(pred)
    assert len(measured) == 2 and min(measured) * 0.95 <= min(predicted) <= max(predicted) <= max(measured)
    assert statistics.mean(predicted) == pytest.approx(statistics.mean(measured), rel=0.15)


@pytest.mark.parametrize(("name", "probe"), [("qwen3-4b-serve-machine14", "probe-machine14.json"),
                                           ("qwen2.5-7b-serve-machine14", "probe-machine14.json"),
                                           ("qwen3-8b-serve-machine15", "probe-machine15.json")])
def test_bf16_engines_wave_as_the_simulation_does(name: str, probe: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Machines 14 and 15 (never fitted on): Qwen3-4B, Qwen2.5-7B and Qwen3-8B in BF16 (two shapes never served
    before) behind `vllm serve` at its defaults logged their waves of 32 clients as the FP8 engine did most of
    its own: all 8 of Qwen3-4B's (the load's 4 and its warm-up pass's 4), 7 of Qwen2.5-7B's and of Qwen3-8B's (the
    eighth held 5 or 6 prompts in its second step). The simulation makes the usual steps and its median TTFT is
    within 10 %. (Llama-3.1-8B on machine 15 filled its second step in only 3 of 8 waves: the wave's arrivals race
    the first prompt's launch.)"""
    logged = _logged_waves(name)
    usual = [w for w in logged if w[0] in (1024, 1032) and w[1:] == USUAL_WAVE]
    assert len(logged) == 8 and len(usual) >= 7
    ((simulated, measured, predicted),) = _simulated_waves(name, probe, monkeypatch)
    assert len(simulated) >= 3 and all(w[0] in (1024, 1032) and w[1:] == USUAL_WAVE for w in simulated)
    assert predicted == pytest.approx(measured, rel=0.10)


POISSON_FIRST_TOKEN = (
    "Qwen3-4B at 20 req/s on machine 14: median TTFT 106 ms, predicted 72, while the prompt steps and TPOT are "
    "priced right (test below). vLLM hands out a step's output only after it has launched the next step, so a "
    "first token waits for the launch of the next prompt (about 34 ms here) when one follows at once, as under "
    "Poisson load it often does; the simulation hands the output out when the step ends. Modelled (held until the "
    "next launch ends), Poisson TTFT improved (18.5 to 15.3 % median on 29 points) but FP8 waves and the served "
    "median moved the wrong way (8.6 to 9.2 %), so it is not in")


def _log_segments(name: str, gap_s: float = 0.5) -> list[list[Iteration]]:
    """A served run's logged steps cut where the engine sat idle for more than ``gap_s`` (between loads)."""
    from gpuprobe.validate.logparse import parse_iterations

    its = parse_iterations(gzip.decompress((H200_2 / f"{name}-iterations.log.gz").read_bytes()).decode())
    segs: list[list[Iteration]] = [[its[0]]]
    for a, b in itertools.pairwise(its):
        assert a.time_s is not None and b.time_s is not None
        if b.time_s - a.time_s > gap_s:
            segs.append([])
        segs[-1].append(b)
    return segs


def test_poisson_prompt_steps_cost_what_the_log_says(monkeypatch: pytest.MonkeyPatch) -> None:
    """Machine 14 (never fitted on), Qwen3-4B behind `vllm serve` at 20 req/s, 400 requests (its last load): the
    300 steps that carried a prompt came 41 ms after the step before (median of the logged times), and the
    simulation's prompt steps cost 40 ms at the median; TPOT is within 2 % and tokens/s within 1 %."""
    label = "n=400,in=1024,out=128,rate=20"
    last = _log_segments("qwen3-4b-serve-machine14")[-1]
    assert sum(i.prompt_requests for i in last) >= 400
    logged = statistics.median((b.time_s - a.time_s) * 1e3 for a, b in itertools.pairwise(last)  # type: ignore[operator]
                               if b.prompt_tokens)
    ((steps, wl, pred),) = _simulated_steps("qwen3-4b-serve-machine14", "probe-machine14.json", label, monkeypatch)
    simulated = statistics.median(ms for p, _, ms in steps if p)
    assert 38 < logged < 44 and simulated == pytest.approx(logged, rel=0.10)
    assert wl.tpot is not None and pred["tpot_ms"] == pytest.approx(wl.tpot.median_ms, rel=0.02)
    assert wl.output_tokens_per_s is not None
    assert pred["output_tokens_per_s"] == pytest.approx(wl.output_tokens_per_s, rel=0.01)


@pytest.mark.xfail(strict=True, reason=POISSON_FIRST_TOKEN)
def test_poisson_first_tokens_wait_for_the_next_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    ((_, wl, pred),) = _simulated_steps("qwen3-4b-serve-machine14", "probe-machine14.json",
                                        "n=400,in=1024,out=128,rate=20", monkeypatch)
    assert wl.ttft is not None and pred["ttft_ms"] == pytest.approx(wl.ttft.median_ms, rel=0.15)


def test_refit_on_one_engine_lowers_its_error() -> None:
    """The calibration fit (Levenberg-Marquardt on log errors) pulls a deliberately wrong start back."""
    from dataclasses import replace

    from gpuprobe.validate import adapter, calibrate

    runs = load_runs(H200 / "llama-3.1-8b-graphs.json")
    system = str(H200 / "probe-machine1.json")
    start = replace(Calibration(), hbm_efficiency=0.6, prefill_compute_efficiency=0.35)
    cases = calibrate._cases([runs], system)

    def loss(cal: Calibration) -> float:
        pred = calibrate._predict(cases, cal, adapter.predict_run)
        return sum(calibrate._soft_l1(math.log(pred[(c.key, lab, f)] / v))
                   for c in cases for (f, lab), v in c.measured.items())

    fitted = calibrate.fit_factors([runs], system, start, names=["hbm_efficiency", "prefill_compute_efficiency"])
    assert loss(fitted) < 0.5 * loss(start)
    assert 0.75 < fitted.hbm_efficiency <= 1.0 and 0.4 < fitted.prefill_compute_efficiency <= 1.0
    assert fitted.band_output_tokens_per_s[0] <= 1.0 <= fitted.band_output_tokens_per_s[1]


def test_heldout_band_is_what_a_run_never_fitted_on_can_expect() -> None:
    """Fitted to two engines, the band set leave-one-run-out (each engine predicted by the factors fitted to the
    other) is wider than the in-sample band, and is the 2.5th-97.5th percentile of those held-out ratios."""
    from gpuprobe.validate import adapter, calibrate

    runs = [load_runs(H200 / "llama-3.1-8b-graphs.json"), load_runs(H200 / "llama-3.2-1b-graphs.json")]
    systems = [str(H200 / "probe-machine1.json")] * 2
    names = ["hbm_efficiency", "prefill_compute_efficiency", "step_overhead_ms"]
    inside = calibrate.fit_factors(runs, systems, Calibration(), names=names)
    held = calibrate.fit_factors(runs, systems, Calibration(), names=names, heldout_band=True)
    for fig in calibrate.BAND_FIGURES:
        lo_in, hi_in = getattr(inside, f"band_{fig}")
        lo, hi = getattr(held, f"band_{fig}")
        assert hi - lo > hi_in - lo_in, fig
    cases = calibrate._cases(runs, systems)
    pred = calibrate.heldout_predictions(cases, Calibration(), names, adapter.predict_run, "run")
    ratios = [v / pred[(c.key, lab, f)] for c in cases for (f, lab), v in c.measured.items()
              if f == "output_tokens_per_s"]
    lo, hi = held.band_output_tokens_per_s
    assert min(ratios) <= lo <= hi <= max(ratios)
    assert sum(lo <= r <= hi for r in ratios) >= 0.9 * len(ratios)


@pytest.mark.parametrize(("name", "tp", "rate"), [
    ("qwen3-30b-a3b", 1, (0.68, 0.8)),  # 128 experts of intermediate 768: small tiles
    ("qwen3-30b-a3b", 2, (0.52, 0.65)),  # each rank holds half of every expert: narrower still
    ("mixtral-8x7b-v0.1", 1, (0.97, 1.0)),  # 8 experts of 14,336: about a dense GEMM
    ("llama-3.1-8b", 1, (1.0, 1.0)),  # dense: the term does not apply
])
def test_expert_gemms_run_at_the_rate_their_width_allows(name: str, tp: int, rate: tuple[float, float]) -> None:
    """The routed experts' FLOPs of a prefill step cost 1 / rate of a dense GEMM's, rate = i / (i +
    moe_half_intermediate) with i the expert intermediate size per TP rank; nothing else of the step moves."""
    from dataclasses import replace

    from gpuprobe.predict.stepcost import Batch
    from gpuprobe.predict.system import system_from_spec

    sysp = system_from_spec("H100-SXM", 8)
    cal = Calibration()
    cost = step_cost(name, sysp, cal, tp=tp)
    spec = cost.spec
    assert rate[0] <= cost.moe_gemm_rate <= rate[1]
    b = Batch(tokens=8192, seqs=8, context_tokens=0, prompt_tokens=8192, attn_work=8 * 1024 * 512, sampled=8)
    slow = cost.step_time(b).compute_s
    fast = step_cost(name, sysp, replace(cal, moe_half_intermediate=1e-9), tp=tp).step_time(b).compute_s
    st = cost.stages[0]
    assert (spec.num_experts > 0) == (st.expert_flops_per_token > 0)
    extra = b.tokens * st.expert_flops_per_token * (1 / cost.moe_gemm_rate - 1) / (
        cal.prefill_compute_efficiency * cost.gemm_peak)
    assert slow - fast == pytest.approx(extra, rel=1e-6, abs=1e-12)
    assert (slow > 1.02 * fast) == (cost.moe_gemm_rate < 0.98)


def test_recommend_carries_what_the_runs_say_of_fp8_and_moe() -> None:
    """The measured weak spots reach the user: a block-FP8 model's recommendation says which kernels its figures
    are for and how much a step's token count matters there (the served runs here), an MoE model's that its
    figures are a warm server's; a dense BF16 model gets neither."""
    from gpuprobe.predict.model_spec import load_model_spec
    from gpuprobe.predict.recommend import model_caveats

    def caveats(name: str) -> list[str]:
        return model_caveats(load_model_spec(ROOT / "tests" / "data" / "configs" / f"{name}.json"))

    (fp8,) = caveats("qwen3-8b-fp8")
    assert "block-scaled FP8" in fp8 and "DeepGEMM" in fp8 and "multiple of 4" in fp8
    (moe,) = caveats("qwen3-30b-a3b")
    assert "MoE" in moe and "warm server" in moe
    assert caveats("llama-3.1-8b") == []
    # the step times the FP8 note quotes are machine 10's served engine's own (both starts): 7 prompts of 1,024 or
    # of 1,025 tokens beside 1 decode
    from gpuprobe.validate.logparse import parse_iterations

    log = gzip.decompress((H200_2 / "qwen3-8b-fp8-serve-align-iterations.log.gz").read_bytes()).decode()
    its = parse_iterations(log)
    ms = {p: [i.elapsed_ms for i in its if i.prompt_tokens == p and i.decode_requests == 1] for p in (7168, 7175)}
    assert len(ms[7168]) >= 30 and len(ms[7175]) >= 30
    slow, fast = statistics.median(ms[7168]), statistics.median(ms[7175])
    assert f"+ 1 decode: {round(slow, -1):.0f} ms; 7,175 + 1: {round(fast, -1):.0f} ms" in fp8
    assert f"about {round(slow / fast):.0f}x slower" in fp8
    # and the decode claim is the CUDA-graph microbenchmark's: at 4 to 128 tokens (multiples of 4) a Qwen3-8B or
    # Qwen3-14B layer's FP8 GEMMs and their quantization take about as long as its BF16 GEMMs
    ratios = []
    for name in ("qwen3-8b", "qwen3-14b"):
        doc = json.loads((H200_2 / f"fp8-block-gemm-graph-{name}-machine12.json").read_text())
        for m, rows in _by_tokens(doc["graph_rows"]).items():
            if m % 4 == 0 and 4 <= m <= 128:
                quantized = sum(r["fp8_gemm_ms"] + r["quant_ms"] for r in rows)
                ratios.append(quantized / sum(r["bf16_gemm_ms"] for r in rows))
    assert len(ratios) >= 16 and 0.85 < statistics.median(ratios) < 1.25
    assert "about half the BF16 rate" in fp8 and "about as long as BF16's" in fp8


def _idle_steps(name: str) -> tuple[dict, dict[int, float], StepCost]:
    """Machine 13's idle-engine timings of ``name`` (``scripts/prompt_step.py``) and the step cost of that engine."""
    doc = json.loads((H200_2 / f"prompt-step-{name}-machine13.json").read_text())
    assert doc["vllm_version"] == "0.26.0" and doc["max_num_seqs"] == 256
    cost = step_cost(name, _h200("probe-machine13.json"), Calibration(), serve=ServeOptions(
        max_model_len=doc["max_num_batched_tokens"], max_num_seqs=doc["max_num_seqs"],
        max_num_batched_tokens=doc["max_num_batched_tokens"]))
    return doc, {r["tokens"]: r["ms_median"] for r in doc["rows"]}, cost


def _prompt_ms(cost: StepCost, m: int) -> float:
    from gpuprobe.predict.stepcost import Batch

    return cost.step_time(Batch(tokens=m, seqs=1, context_tokens=0.0, prompt_tokens=m, attn_work=m * m / 2.0,
                                sampled=1)).total_s * 1e3


def test_an_idle_engines_decode_steps_and_long_prompts_cost_what_vllm_took() -> None:
    """Idle offline engines at vLLM's capture sizes (machine 13, an H200 never fitted on): one request's decode
    step (a full CUDA graph) of Qwen3-4B and Llama-3.1-8B within 5 %, and what an 8,192-token prompt adds to a
    128-token one (GPU-bound; generate()'s own cost cancels) within 10 % for those two and Llama-3.2-1B."""
    from gpuprobe.predict.stepcost import Batch

    for name in ("llama-3.2-1b", "qwen3-4b", "llama-3.1-8b"):
        doc, ms, cost = _idle_steps(name)
        if name != "llama-3.2-1b":  # the 1B decode step is host-bound: 2.06 ms measured, 2.42 predicted
            dec = cost.step_time(Batch(tokens=1, seqs=1, context_tokens=128.0, sampled=1)).total_s * 1e3
            assert dec == pytest.approx(doc["decode"]["ms_per_step"], rel=0.05), name
        added = _prompt_ms(cost, 8192) - _prompt_ms(cost, 128)
        assert added == pytest.approx(ms[8192] - ms[128], rel=0.10), name


@pytest.mark.xfail(strict=True, reason=(
    "prompt steps above the largest capture size run vLLM's compiled model without graphs, launched from "
    "Python; the step cost charges that 0.86 ms a layer (compiled_launch_ratio x eager_launch_per_layer_us + "
    "prompt_launch_per_layer_us, fitted to served engines), while idle offline engines on machine 13 took about "
    "0.6-0.7 ms a layer (Llama-3.2-1B, Qwen3-4B, Llama-3.1-8B); the same machine's served Qwen3-4B answered one "
    "client in 56 ms where the simulation says 46: the served path costs more than the idle engine and the fit "
    "puts that in the step"))
def test_an_idle_engines_graphless_prompt_steps_cost_what_vllm_took() -> None:
    """What 513 to 2,048 prompt tokens (no CUDA graph) add to a 512-token prompt (a piecewise graph) in an idle
    engine, within 15 %, for three shapes of 16 to 36 layers."""
    for name in ("llama-3.2-1b", "qwen3-4b", "llama-3.1-8b"):
        _, ms, cost = _idle_steps(name)
        for m in (513, 1024, 2048):
            added = _prompt_ms(cost, m) - _prompt_ms(cost, 512)
            assert added == pytest.approx(ms[m] - ms[512], rel=0.15), (name, m)


def test_recommend_says_when_the_first_layout_is_host_bound() -> None:
    """Llama-3.2-1B at one client on machine 13's probe is host-bound: the note says so, with the probe's own host
    figure; the ranges it quotes are the recorded ones (one Qwen3-4B client's median TTFT on every H200 machine
    that served it, and every host-loop figure recorded on H200 hosts). Llama-3.1-8B at 64 clients gets no note."""
    import glob

    from gpuprobe.predict.model_spec import load_model_spec
    from gpuprobe.predict.recommend import recommend
    from gpuprobe.predict.traffic import Traffic

    sysp = _h200("probe-machine13.json")
    assert sysp.host_python_loop_ns == 200.0

    def notes(name: str, c: int) -> list[str]:
        spec = load_model_spec(ROOT / "tests" / "data" / "configs" / f"{name}.json")
        return recommend(spec, sysp, ServeOptions(), Traffic("closed", 4 * c, 1024, 128, c), Calibration()).notes

    (host,) = [n for n in notes("llama-3.2-1b", 1) if n.startswith("host-bound")]
    assert "Python loop at 200 ns" in host and "validate --serve --starts 3" in host
    assert not [n for n in notes("llama-3.1-8b", 64) if n.startswith("host-bound")]
    ttft = []
    for path in glob.glob(str(ROOT / "tests" / "data" / "vllm-h200-2026-12-0*" / "qwen3-4b-serve*.json")):
        for run in load_runs(Path(path)).layouts:
            assert run.measured is not None
            ttft += [w.ttft.median_ms for w in run.measured.workloads
                     if w.workload.concurrency == 1 and w.workload.input_len == 1024 and w.ttft]
    assert len(ttft) >= 8 and f"{min(ttft):.0f}-{max(ttft):.0f} ms on H200 hosts" in host
    loops = json.loads((H200_2 / "host-loop-samples.json").read_text())["ns_per_iteration"]
    loops += [json.loads((H200_2 / f"prompt-step-{m}-machine13.json").read_text())["host_python_loop_ns"]
              for m in ("llama-3.2-1b", "qwen3-4b", "llama-3.1-8b")]
    assert f"{min(loops):.0f}-{max(loops):.0f} ns" in host
