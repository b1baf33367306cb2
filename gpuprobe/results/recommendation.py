"""The recommendation result: ranked vLLM layouts for one model on one system (``gpuprobe recommend``).

Plain dataclasses that round-trip through JSON (``gpuprobe.results.serde``). Sizes are bytes, times are in
the unit named by the field. A figure that could not be predicted is ``None`` and the layout's ``reason``
says why. This module imports nothing from gpuprobe outside ``gpuprobe.results``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gpuprobe.results.io import document_from_data, read_json

RECOMMENDATION_KIND = "gpuprobe.recommendation"
RECOMMENDATION_SCHEMA_VERSION = 1


@dataclass
class Predicted:
    """Predicted speed of one layout under the requested traffic, as ``vllm bench serve`` reports it: throughput
    over all replicas, latency percentiles over every request."""

    ttft_ms: float | None = None
    """Median time to first token."""
    tpot_ms: float | None = None
    """Median time per output token after the first."""
    output_tokens_per_s: float | None = None
    model_load_s: float | None = None
    """Lower bound: weights per GPU over the measured host-to-device bandwidth (disk not included)."""
    ttft_ms_range: list[float] = field(default_factory=list)
    """[optimistic, pessimistic] from the calibration's spread."""
    tpot_ms_range: list[float] = field(default_factory=list)
    output_tokens_per_s_range: list[float] = field(default_factory=list)
    running_per_replica: int | None = None
    """Most requests decoding together in one replica."""
    bottleneck: str | None = None
    """``compute``, ``hbm``, ``interconnect`` or ``overhead`` (host): the largest share of the run's steps."""
    shares: dict[str, float] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    """Where each input came from: ``measured``, ``spec``, ``fitted``, ``derived`` or ``assumed``."""
    ttft_p90_ms: float | None = None
    ttft_p99_ms: float | None = None
    tpot_p90_ms: float | None = None
    tpot_p99_ms: float | None = None
    itl_ms: float | None = None
    """Median inter-token latency (every gap between two streamed tokens)."""
    itl_p90_ms: float | None = None
    itl_p99_ms: float | None = None
    e2el_ms: float | None = None
    """Median end-to-end latency of a request."""
    request_throughput: float | None = None
    """Completed requests per second."""
    goodput_rps: float | None = None
    """Requests per second that met the SLO (None without one)."""
    goodput_fraction: float | None = None
    peak_kv_fraction: float | None = None
    """Highest share of the KV cache in use during the run."""
    preemptions: int | None = None
    """Requests preempted (KV cache ran out) during the run."""


@dataclass
class StageMemoryInfo:
    """vLLM's startup accounting for one rank of a pipeline stage."""

    stage: int
    first_layer: int
    num_layers: int
    budget_bytes: int
    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cudagraph_bytes: int
    kv_available_bytes: int
    """Negative when the weights and activations leave no room for the KV cache (the layout does not start)."""
    num_blocks: int

    SIGNED: ClassVar[tuple[str, ...]] = ("kv_available_bytes",)


@dataclass
class LayoutResult:
    tp: int
    pp: int
    replicas: int
    gpus: list[int]
    """Every GPU the layout uses."""
    replica_gpus: list[list[int]]
    """GPUs of each replica in vLLM rank order (stage 0's TP group first): the CUDA_VISIBLE_DEVICES order."""
    fits: bool
    reason: str | None
    """Why vLLM would not start this layout (None when it fits)."""
    kv_cache_tokens: int | None
    """"GPU KV cache size: N tokens" as vLLM logs it (per replica)."""
    max_concurrency: float | None
    """"Maximum concurrency for max_model_len tokens per request" as vLLM logs it (per replica)."""
    allreduce_backend: str
    predicted: Predicted | None
    vllm_command: list[str]
    """One ready command line per replica (each replica is its own server on its own port)."""
    rank: int | None = None
    meets_slo: bool | None = None
    kv_heads_per_rank: int | None = None
    kv_replication: int | None = None
    memory: list[StageMemoryInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Recommendation:
    model: dict[str, Any]
    """name, architecture, parameters, weight format, layers, KV heads ..."""
    system: dict[str, Any]
    """name, source (measured/spec), GPU count and names, memory per GPU."""
    settings: dict[str, Any]
    """The vLLM settings predicted for (defaults filled in) and the workload."""
    objective: str
    layouts: list[LayoutResult]
    """Ranked: layouts that fit (best first), then those that do not, each with its reason."""
    vllm_version: str
    """The vLLM release whose rules (memory accounting, defaults) the prediction follows."""
    gpuprobe_version: str
    created_utc: str
    calibration: str = "defaults"
    notes: list[str] = field(default_factory=list)
    vllm_installed: str | None = None
    """The vLLM version installed where the recommendation was made (None: not installed)."""
    kind: str = RECOMMENDATION_KIND
    schema_version: int = RECOMMENDATION_SCHEMA_VERSION


def load_recommendation(path: str | os.PathLike[str]) -> Recommendation:
    """A recommendation file (``gpuprobe recommend -o FILE``), its kind and schema version checked."""
    return document_from_data(Recommendation, read_json(path, what="recommendation file"), kind=RECOMMENDATION_KIND,
                              schema_version=RECOMMENDATION_SCHEMA_VERSION, what="recommendation file",
                              origin=str(path), hint="create it with 'gpuprobe recommend --model DIR -o FILE'")
