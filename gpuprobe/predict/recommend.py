"""Rank every layout of a model on a system: memory (can vLLM start it, how much KV) then speed.

Entry points: ``predict_layout`` (one layout, what the validation runs compare against) and ``recommend``
(all layouts, ranked). ``fits_nowhere_message`` words the error when no layout can start.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime
from typing import Literal

from gpuprobe import __version__
from gpuprobe.errors import UsageError
from gpuprobe.predict.calibration import Calibration
from gpuprobe.predict.fanout import fan_out
from gpuprobe.predict.layouts import Layout, assign_gpus, check_layout, enumerate_shapes
from gpuprobe.predict.memory import GiB, MemoryPrediction, kv_bytes_per_token_per_layer, predict_memory
from gpuprobe.predict.model_spec import ModelSpec
from gpuprobe.predict.options import VLLM_VERSION, ServeOptions, resolve_serve
from gpuprobe.predict.params import param_totals, stage_weight_bytes
from gpuprobe.predict.perf import PerfPrediction, Slo, predict_perf
from gpuprobe.predict.system import SystemProfile
from gpuprobe.predict.traffic import Traffic
from gpuprobe.results.recommendation import LayoutResult, Predicted, Recommendation, StageMemoryInfo

Objective = Literal["throughput", "latency", "goodput"]
BASE_PORT = 8000
PARALLEL_MIN_REQUESTS = 4000
"""Simulated requests (layouts x requests per layout) from which the search runs in worker processes: below it,
forking costs more than it saves."""


def slo_met(slo: Slo, p: Predicted | None) -> bool | None:
    """Whether the median TTFT and TPOT meet the SLO (None: nothing predicted)."""
    if p is None or p.ttft_ms is None or p.tpot_ms is None:
        return None
    return (slo.max_ttft_ms is None or p.ttft_ms <= slo.max_ttft_ms) and (
        slo.max_tpot_ms is None or p.tpot_ms <= slo.max_tpot_ms
    )


def predict_layout_memory(spec: ModelSpec, system: SystemProfile, layout: Layout, serve: ServeOptions,
                          cal: Calibration) -> MemoryPrediction:
    """vLLM's KV accounting for one replica of ``layout`` on its GPUs (the smallest GPU of the replica)."""
    gpus = [system.gpus[g] for g in layout.replica_gpus(0)]
    total = min(g.memory_bytes.value for g in gpus)
    reserved = cal.memory.cuda_reserved_bytes
    if reserved is not None:
        total = min((g.reported_memory_bytes or (g.spec.nvml_memory_mib << 20 if g.spec else 0)) - reserved
                    for g in gpus)
    resolved = resolve_serve(serve, int(total), gpus[0].name, spec.max_position_embeddings, spec.mla is not None)
    return predict_memory(spec, layout.tp, layout.pp, int(total), resolved, cal.memory)


def predict_layout(spec: ModelSpec, system: SystemProfile, layout: Layout, traffic: Traffic,
                   serve: ServeOptions, cal: Calibration, model_ref: str | None = None,
                   slo: Slo | None = None) -> LayoutResult:
    """Everything gpuprobe predicts for one layout: startup failure or KV capacity, then the simulated run of
    ``traffic`` (served by ``vllm serve``, or offline ``LLM.generate`` when ``serve.usage_context`` is llm)."""
    reason = check_layout(spec, layout.tp, layout.pp)
    mem: MemoryPrediction | None = None
    perf: PerfPrediction | None = None
    if reason is None:
        mem = predict_layout_memory(spec, system, layout, serve, cal)
        reason = mem.reason
        if mem is not None and spec.max_position_embeddings < mem.settings.max_model_len:
            reason = (f"--max-model-len {mem.settings.max_model_len} exceeds the model's max_position_embeddings "
                      f"{spec.max_position_embeddings}")
        longest = max(p + o for p, o in set(traffic.lengths())) if reason is None else 0
        if reason is None and mem is not None and longest > mem.settings.max_model_len:
            reason = (f"requests of {longest} tokens exceed max_model_len {mem.settings.max_model_len} "
                      "(vLLM rejects them)")
        if reason is None and mem is not None and mem.fits:
            perf = predict_perf(spec, system, layout, mem, traffic, cal, served=serve.usage_context == "serve",
                                slo=slo)
    fits = reason is None
    predicted = None
    if perf is not None and fits:
        predicted = Predicted(
            ttft_ms=_r(perf.ttft_ms, 2), tpot_ms=_r(perf.tpot_ms, 3),
            output_tokens_per_s=_r(perf.output_tokens_per_s, 1), model_load_s=_r(perf.model_load_s, 2),
            ttft_ms_range=_rs(perf.ttft_ms_range, 2), tpot_ms_range=_rs(perf.tpot_ms_range, 3),
            output_tokens_per_s_range=_rs(perf.output_tokens_per_s_range, 1),
            running_per_replica=perf.running_per_replica, bottleneck=perf.bottleneck, shares=perf.shares,
            sources=perf.sources, ttft_p90_ms=_r(perf.ttft_p90_ms, 2), ttft_p99_ms=_r(perf.ttft_p99_ms, 2),
            tpot_p90_ms=_r(perf.tpot_p90_ms, 3), tpot_p99_ms=_r(perf.tpot_p99_ms, 3), itl_ms=_r(perf.itl_ms, 3),
            itl_p90_ms=_r(perf.itl_p90_ms, 3), itl_p99_ms=_r(perf.itl_p99_ms, 3), e2el_ms=_r(perf.e2el_ms, 1),
            request_throughput=_r(perf.request_throughput, 3), goodput_rps=_r(perf.goodput_rps, 3),
            goodput_fraction=_r(perf.goodput_fraction, 4), peak_kv_fraction=_r(perf.peak_kv_fraction, 4),
            preemptions=perf.preemptions,
        )  # fmt: skip
    notes = list(mem.notes if mem else []) + list(perf.notes if perf else [])
    return LayoutResult(
        tp=layout.tp, pp=layout.pp, replicas=layout.replicas, gpus=layout.gpus,
        replica_gpus=[layout.replica_gpus(r) for r in range(layout.replicas)],
        fits=fits, reason=reason,
        kv_cache_tokens=mem.kv_cache_tokens if mem and fits else None,
        max_concurrency=round(mem.max_concurrency, 2) if mem and fits else None,
        allreduce_backend=perf.allreduce_backend if perf else ("none" if layout.tp == 1 else "unknown"),
        predicted=predicted,
        vllm_command=vllm_commands(layout, model_ref or spec.name, serve) if fits else [],
        kv_heads_per_rank=mem.kv_heads_per_rank if mem else None,
        kv_replication=mem.kv_replication if mem else None,
        memory=[StageMemoryInfo(**{f.name: getattr(s, f.name) for f in fields(StageMemoryInfo)})
                for s in (mem.stages if mem else [])],
        notes=notes,
    )


def _rs(xs: list[float], digits: int) -> list[float]:
    """A range rounded for the document (empty when a bound is missing)."""
    out = [r for x in xs if (r := _r(x, digits)) is not None]
    return out if len(out) == len(xs) else []


def _r(x: float | None, digits: int) -> float | None:
    """Rounded for the document; None for no value (NaN: nothing completed)."""
    if x is None or x != x:
        return None
    return round(x, digits)


def vllm_commands(layout: Layout, model_ref: str, serve: ServeOptions) -> list[str]:
    """One ``vllm serve`` line per replica: its own GPUs (vLLM rank order) and its own port. Separate servers
    rather than ``--data-parallel-size`` so each replica lands exactly on the GPUs chosen for it."""
    flags = [f"--tensor-parallel-size {layout.tp}", f"--pipeline-parallel-size {layout.pp}"]
    if serve.max_model_len:
        flags.append(f"--max-model-len {serve.max_model_len}")
    if serve.gpu_memory_utilization:
        flags.append(f"--gpu-memory-utilization {serve.gpu_memory_utilization}")
    if serve.max_num_seqs:
        flags.append(f"--max-num-seqs {serve.max_num_seqs}")
    if serve.max_num_batched_tokens:
        flags.append(f"--max-num-batched-tokens {serve.max_num_batched_tokens}")
    if serve.kv_cache_dtype != "auto":
        flags.append(f"--kv-cache-dtype {serve.kv_cache_dtype}")
    if serve.quantization:
        flags.append(f"--quantization {serve.quantization}")
    if serve.enforce_eager:
        flags.append("--enforce-eager")
    out = []
    for r in range(layout.replicas):
        devices = ",".join(str(g) for g in layout.replica_gpus(r))
        port = f" --port {BASE_PORT + r}" if layout.replicas > 1 else ""
        out.append(f"CUDA_VISIBLE_DEVICES={devices} vllm serve {shlex.quote(model_ref)} {' '.join(flags)}{port}")
    return out


def _sort_key(objective: Objective, slo: Slo, t: Traffic):
    def key(r: LayoutResult) -> tuple:
        p = r.predicted
        n = r.tp * r.pp * r.replicas
        if not r.fits or p is None:
            return (2, n, r.tp, r.pp)
        miss = 0 if slo_met(slo, p) in (True, None) else 1
        if objective == "throughput":
            return (miss, -(p.output_tokens_per_s or 0), n, r.pp, r.tp)
        if objective == "goodput":
            return (0, -(p.goodput_rps or 0), -(p.output_tokens_per_s or 0), n, r.pp, r.tp)
        return (miss, p.e2el_ms or math.inf, n, r.pp)

    return key


def recommend(spec: ModelSpec, system: SystemProfile, serve: ServeOptions, traffic: Traffic, cal: Calibration,
              objective: Objective = "throughput", slo: Slo | None = None,
              model_ref: str | None = None, keep: Callable[[Layout], bool] | None = None) -> Recommendation:
    """Predict and rank every tp x pp x replicas layout of ``spec`` on ``system`` (those ``keep`` accepts)."""
    if objective not in ("throughput", "latency", "goodput"):
        raise UsageError(f"--objective must be throughput, latency or goodput, not {objective!r}")
    slo = slo or Slo()
    if objective == "goodput" and not slo.any:
        raise UsageError("--objective goodput needs an SLO: --max-ttft-ms and/or --max-tpot-ms")
    layouts = [assign_gpus(system, tp, pp, rep) for tp, pp, rep in enumerate_shapes(system.gpu_count)]
    layouts = [lay for lay in layouts if keep is None or keep(lay)]
    results = fan_out(lambda lay: predict_layout(spec, system, lay, traffic, serve, cal, model_ref, slo=slo),
                      layouts, work_units=traffic.num_requests * len(layouts), min_work=PARALLEL_MIN_REQUESTS)
    results.sort(key=_sort_key(objective, slo, traffic))
    for r in results:
        r.meets_slo = slo_met(slo, r.predicted) if r.fits and slo.any else None
    for i, r in enumerate(results):
        r.rank = i + 1 if r.fits else None
    totals = param_totals(spec)
    first = system.gpus[0]
    return Recommendation(
        model={
            "name": spec.name, "architecture": spec.architecture, "family": spec.family,
            "parameters": totals.total, "active_parameters_per_token": totals.active_per_token,
            "weight_format": spec.weights.kind, "weights_bytes": stage_weight_bytes(
                spec, 1, range(spec.num_layers), True, True),
            "layers": spec.num_layers, "attention_heads": spec.num_heads, "kv_heads": spec.num_kv_heads,
            "head_dim": spec.head_dim, "vocab_size": spec.vocab_size, "mla": spec.mla is not None,
            "experts": spec.num_experts, "max_position_embeddings": spec.max_position_embeddings,
            "kv_bytes_per_token": kv_bytes_per_token_per_layer(
                spec, 1, 1 if serve.kv_cache_dtype == "fp8" else 2) * spec.num_layers,
        },
        system={
            "name": system.name, "source": system.source, "gpu_count": system.gpu_count,
            "gpu": first.name, "memory_bytes": int(first.memory_bytes.value),
            "memory_source": first.memory_bytes.source, "hbm_gbps": round(first.hbm_gbps.value, 1),
            "hbm_source": first.hbm_gbps.source,
        },
        settings={
            "gpu_memory_utilization": serve.gpu_memory_utilization, "max_model_len": serve.max_model_len,
            "max_num_seqs": serve.max_num_seqs, "max_num_batched_tokens": serve.max_num_batched_tokens,
            "kv_cache_dtype": serve.kv_cache_dtype, "enforce_eager": serve.enforce_eager,
            "quantization": serve.quantization, "input_len": traffic.input_len,
            "output_len": traffic.output_len, "concurrency": traffic.concurrency, "traffic": traffic.mode,
            "request_rate": traffic.request_rate, "num_requests": traffic.num_requests,
            "range_ratio": traffic.range_ratio, "length_rows": [list(r) for r in traffic.histogram],
            "load": traffic.describe(), "max_ttft_ms": slo.max_ttft_ms, "max_tpot_ms": slo.max_tpot_ms,
        },
        objective=objective, layouts=results, vllm_version=VLLM_VERSION, gpuprobe_version=__version__,
        created_utc=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), calibration=cal.source,
        notes=list(dict.fromkeys([*system.notes, *model_caveats(spec), *host_caveats(results, system)])),
    )


def model_caveats(spec: ModelSpec) -> list[str]:
    """What the measurements behind the predictor say about this kind of model (README, reports/h200-2026-12-01)."""
    out = []
    if spec.weights.kind == "fp8" and spec.weights.block_size:
        out.append("block-scaled FP8: modelled on vLLM's CUTLASS kernels as measured on an H200 "
                   "(VLLM_USE_DEEP_GEMM=0): a step whose token count is not a multiple of 4 runs its GEMMs about "
                   "4x slower (7,168 prompt tokens + 1 decode: 440 ms; 7,175 + 1: 110 ms), so TTFT swings with "
                   "prompt lengths; and a decode batch of 4 to 128 requests (graphs pad it to a multiple of 4) "
                   "reads its FP8 weights at about half the BF16 rate, so its GEMMs take about as long as BF16's "
                   "(FP8 gains memory, not decode speed); vLLM's default DeepGEMM path was not measured: check "
                   "with 'gpuprobe validate --serve --warm-each'")
    if spec.num_experts:
        out.append("MoE: vLLM compiles fused-MoE kernels the first time it sees a batch size (a cold server was "
                   "measured at under half the warm speed); the figures are for a warm server")
    return out


HOST_BOUND_SHARE = 0.5
"""A layout whose host work (scheduling, launches, the API server) is at least this share of its step time is
host-bound."""


def host_caveats(results: list[LayoutResult], system: SystemProfile) -> list[str]:
    """When the first-ranked layout is host-bound: its TTFT and TPOT follow the host's single-core speed, which
    the measurements behind the predictor show varying between machines of one GPU kind and over time on one."""
    best = next((r for r in results if r.rank == 1 and r.predicted is not None), None)
    if best is None or best.predicted is None:
        return []
    share = best.predicted.shares.get("overhead", 0.0)
    if share < HOST_BOUND_SHARE:
        return []
    here = (f"; this probe's host ran gpuprobe's Python loop at {system.host_python_loop_ns:.0f} ns an iteration "
            "(H200 hosts measured: 93-223 ns, lower is faster)" if system.host_python_loop_ns else "")
    return [f"host-bound: host work is {share:.0%} of the first layout's step time, so its TTFT and TPOT follow "
            "the host CPU's single-core speed, which differs between machines of one GPU kind and, on shared "
            "virtual machines, over minutes (one client's TTFT of a Qwen3-4B server: 33-58 ms on H200 hosts)"
            f"{here}; 'gpuprobe validate --serve --starts 3' measures this server"]


def fits_nowhere_message(rec: Recommendation) -> str:
    """One line naming what the model needs and what the largest layout here offers."""
    biggest = max(rec.layouts, key=lambda r: (r.tp * r.pp, -r.replicas, r.tp))
    budget = sum(m.budget_bytes for m in biggest.memory) * biggest.tp
    weights = rec.model["weights_bytes"]
    offer = f"{budget / GiB:.1f} GiB under vLLM's memory budget" if budget else "no usable layout"
    return (
        f"{rec.model['name']} fits no layout on {rec.system['name']}: it needs at least {weights / GiB:.1f} GiB "
        f"for its weights plus KV cache for one {rec.settings.get('max_model_len') or 'max-length'}-token request; "
        f"the largest layout here (TP{biggest.tp} PP{biggest.pp}, {biggest.tp * biggest.pp} GPUs) has {offer} "
        f"and fails with: {biggest.reason}"
    )
