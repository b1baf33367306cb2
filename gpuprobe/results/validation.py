"""The validation file: short real vLLM runs per layout, what they measured, and how the prediction compared.

A validation file (``kind: "gpuprobe.validation"``) is written by ``gpuprobe validate`` after every layout, so
nothing measured is lost to a later crash. It keeps the model's ``config.json`` contents, so the comparison
with the predictor can be recomputed offline (``gpuprobe validate --compare RUNS.json``).

Units are in the field names (``_s``, ``_ms``, ``_bytes``, ``_gib`` with GiB = 2**30 bytes). A figure that
could not be measured is ``None``, with a note or reason saying why.

This module imports nothing else from gpuprobe but ``results.run_info`` (the run header's shared fields).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from gpuprobe.results.run_info import RunInfoBase

VALIDATION_KIND = "gpuprobe.validation"
VALIDATION_SCHEMA_VERSION = 1

RunStatus = Literal["ok", "failed", "timeout", "skipped"]
"""ok: the engine started and every workload ran; failed: vLLM (or the run) failed, ``reason`` says how;
timeout: killed after ``timeout_s``; skipped: not run (e.g. needs more GPUs than present)."""


@dataclass
class Workload:
    """``num_requests`` prompts of ``input_len`` tokens, each generating ``output_len`` tokens.

    Offline (an ``LLM`` engine): one batch submitted at once, as ``LLM.generate``. Served (a ``vllm serve``
    process): sent over the OpenAI completions API as ``vllm bench serve`` sends them, keeping at most
    ``concurrency`` requests in flight (closed loop), or arriving as a Poisson process of ``request_rate``
    requests per second (open loop, capped by ``concurrency`` when both are given).
    """

    num_requests: int
    input_len: int
    output_len: int
    concurrency: int | None = None
    """Served only: requests in flight at most (``--max-concurrency``); None: no cap."""
    request_rate: float | None = None
    """Served only: Poisson arrivals per second; None: all requests ready at t = 0 (``--request-rate inf``)."""
    range_ratio: float = 0.0
    """Lengths drawn uniformly from [L x (1 - r), L x (1 + r)] per request (``--random-range-ratio``)."""

    @property
    def served(self) -> bool:
        return self.concurrency is not None or self.request_rate is not None

    @property
    def label(self) -> str:
        out = f"n={self.num_requests},in={self.input_len},out={self.output_len}"
        if self.concurrency is not None:
            out += f",c={self.concurrency}"
        if self.request_rate is not None:
            out += f",rate={self.request_rate:g}"
        if self.range_ratio:
            out += f",range={self.range_ratio:g}"
        return out


@dataclass
class ValidationLayout:
    """What one engine start runs: the parallel layout and the vLLM settings that change memory or speed."""

    tp: int
    pp: int = 1
    replicas: int = 1
    """Data-parallel copies in the recommended layout; a validation run starts one of them."""
    gpus: list[int] | None = None
    """Physical GPU indices (PCI bus order) for the run; None: the first tp × pp GPUs."""
    enforce_eager: bool = True
    """True: no torch.compile and no CUDA graphs; False: vLLM's default compile + CUDA graphs."""
    max_model_len: int | None = None
    """None: vLLM's default (the model's max_position_embeddings)."""
    gpu_memory_utilization: float | None = None
    """None: vLLM's default."""
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    kv_cache_dtype: str = "auto"
    dtype: str = "auto"
    extra_engine_args: dict[str, Any] = field(default_factory=dict)
    """Further ``LLM(...)`` keyword arguments, passed through unchanged."""
    start: int = 1
    """Which engine start of this layout (``validate --starts N`` starts each layout N times: host-bound speed
    moves between engine starts by more than a prediction can be held to)."""
    serve: bool = False
    """True: a ``vllm serve`` process driven over HTTP; False: an offline ``LLM`` engine."""

    @property
    def gpu_count(self) -> int:
        return self.tp * self.pp

    @property
    def name(self) -> str:
        """Stable key of the layout (also the log file name): ``tp2-pp1-eager``, ``tp1-pp1-graphs-g3``."""
        name = f"tp{self.tp}-pp{self.pp}"
        if self.replicas > 1:
            name += f"-r{self.replicas}"
        name += "-eager" if self.enforce_eager else "-graphs"
        if self.serve:
            name += "-serve"
        if self.gpus:
            name += "-g" + "-".join(str(g) for g in self.gpus)
        if self.start > 1:
            name += f"-s{self.start}"
        return name

    @property
    def config_name(self) -> str:
        """The name without the start number: the same engine configuration."""
        return self.name if self.start == 1 else self.name.rsplit("-s", 1)[0]


@dataclass
class KvCacheCapacity:
    """KV cache size as the engine set it (read from ``vllm_config.cache_config`` after start-up)."""

    num_blocks: int | None
    block_size: int | None
    tokens: int | None
    """num_blocks × block_size."""
    engine_tokens: int | None = None
    """``cache_config.kv_cache_size_tokens`` where the version has it (hybrid-aware figure)."""
    max_concurrency: float | None = None
    """``cache_config.kv_cache_max_concurrency``: requests of max_model_len that fit at once."""
    source: str = "cache_config"


@dataclass
class MemoryProfile:
    """vLLM's start-up memory accounting, parsed from its log (supplementary: for calibrating the memory model)."""

    SIGNED: ClassVar[tuple[str, ...]] = ("activation_peak_gib", "non_torch_gib", "cuda_graph_estimate_gib",
                                         "cuda_graph_actual_gib", "available_kv_gib")
    """Differences vLLM logs as it measured them: negative ones occur (memory freed during profiling or capture)."""

    model_weights_gib: float | None = None
    model_load_s: float | None = None
    activation_peak_gib: float | None = None
    non_torch_gib: float | None = None
    cuda_graph_estimate_gib: float | None = None
    cuda_graph_actual_gib: float | None = None
    available_kv_gib: float | None = None
    kv_cache_tokens: int | None = None
    """From the ``KV cache size: N tokens`` line."""
    kv_cache_device: str | None = None
    """The prefix of that line: ``GPU``, ``CPU``, ..."""
    max_concurrency: float | None = None
    max_concurrency_tokens_per_request: int | None = None
    torch_compile_s: float | None = None
    graph_capture_s: float | None = None
    init_engine_s: float | None = None
    lines: list[str] = field(default_factory=list)
    """The log lines the figures were read from, verbatim (without timestamps)."""


@dataclass
class GpuMemory:
    """GPU memory seen through NVML by the parent process while the run was alive (all processes on the GPUs)."""

    gpus: list[int]
    baseline_used_bytes: int
    """Memory used on those GPUs before the run started (other processes)."""
    peak_used_bytes: int
    """Highest total used during the run."""
    peak_run_bytes: int
    """peak_used_bytes − baseline_used_bytes: what the run itself took at its peak."""
    after_used_bytes: int | None = None
    released: bool | None = None
    """True when usage went back to the baseline (±256 MiB) after the run ended."""
    samples: int = 0
    interval_s: float = 0.2


@dataclass
class LatencyStat:
    """Per-request latencies of one workload, in milliseconds."""

    n: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    p99_ms: float | None = None


@dataclass
class RequestTimes:
    """Per-request figures of a served workload, one list entry per request in the order they were sent."""

    start_s: list[float] = field(default_factory=list)
    """Send time, seconds after the workload's first request was sent."""
    ttft_ms: list[float] = field(default_factory=list)
    e2el_ms: list[float] = field(default_factory=list)
    """End-to-end latency: send to last token."""
    input_tokens: list[int] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)


@dataclass
class WorkloadResult:
    """One batch shape run on the started engine."""

    workload: Workload
    status: Literal["ok", "failed"] = "ok"
    reason: str | None = None
    concurrency: int | None = None
    """Requests in flight at once: min(num_requests, max_num_seqs)."""
    elapsed_s: float | None = None
    """Wall time of ``LLM.generate`` for the whole batch."""
    input_tokens: int | None = None
    output_tokens: int | None = None
    output_tokens_per_s: float | None = None
    total_tokens_per_s: float | None = None
    """(input + output tokens) / elapsed_s."""
    ttft: LatencyStat | None = None
    tpot: LatencyStat | None = None
    itl: LatencyStat | None = None
    """Served: gaps between streamed tokens of every request (``vllm bench serve``'s ITL)."""
    e2el: LatencyStat | None = None
    """Served: send to last token, per request."""
    latency_source: str | None = None
    """Where TTFT/TPOT come from (e.g. ``RequestOutput.metrics``) or why they are missing."""
    failed_requests: int = 0
    """Served: requests that got an error or no token (left out of every figure)."""
    request_throughput: float | None = None
    """Served: completed requests per second over the workload's duration."""
    requests: RequestTimes | None = None
    """Served: each request's own figures (for fitting queueing and front-end costs)."""
    host_python_loop_ns: float | None = None
    """The host's single-core speed just before this load (``ValidationRunInfo.host_python_loop_ns``'s loop):
    on a shared or virtual host it moves from load to load, and host-bound figures with it."""
    notes: list[str] = field(default_factory=list)


@dataclass
class Measured:
    """Everything one engine start measured."""

    vllm_version: str | None = None
    torch_version: str | None = None
    platform: str | None = None
    """``cuda`` or ``cpu`` (vLLM's platform)."""
    device_name: str | None = None
    import_s: float | None = None
    """Time to ``import vllm`` in the run's process."""
    engine_start_s: float | None = None
    """Wall time of the ``LLM(...)`` constructor: process start-up of the engine, weights, profile, KV, graphs."""
    max_model_len: int | None = None
    """As the engine set it (it may lower the requested value)."""
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    kv_cache: KvCacheCapacity | None = None
    memory_profile: MemoryProfile | None = None
    gpu_memory: GpuMemory | None = None
    gpu_memory_reason: str | None = None
    """Why ``gpu_memory`` is None (e.g. a CPU run)."""
    allreduce_backends: list[str] | None = None
    """What vLLM's log said it dispatches all-reduces to, in order (e.g. ``['CUSTOM', 'PYNCCL']``)."""
    allreduce_source: str | None = None
    """The log line (or the reason there is none: TP=1, CPU shared-memory communicator, ...)."""
    workloads: list[WorkloadResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class FigureComparison:
    """One predicted figure against the measured one. ``rel_error`` = (predicted − measured) / measured."""

    figure: str
    """``kv_cache_tokens``, ``output_tokens_per_s``, ``ttft_ms``, ``tpot_ms``."""
    workload: str | None
    """Workload label, or None for per-engine figures (KV tokens)."""
    predicted: float | None
    measured: float | None
    rel_error: float | None
    reason: str | None = None


@dataclass
class Comparison:
    """The predictor's figures for a run and their errors (recomputable from the file: see ``compare``)."""

    predictor: str
    """Which predictor produced it (module and version) — or ``unavailable``."""
    calibration: str | None = None
    """Calibration file applied, if any."""
    system: str | None = None
    """Results file (or spec) the prediction used."""
    figures: list[FigureComparison] = field(default_factory=list)
    prediction: dict[str, Any] = field(default_factory=dict)
    """The predictor's own output for this layout, as plain data."""
    reason: str | None = None
    """Why no comparison could be made."""


@dataclass
class LayoutRun:
    """One layout: how it ran, what it measured, and how the prediction compared."""

    layout: ValidationLayout
    status: RunStatus
    reason: str | None = None
    """One readable line: the vLLM exception, the timeout, why it was skipped."""
    workloads: list[Workload] = field(default_factory=list)
    timeout_s: float | None = None
    started_utc: str | None = None
    duration_s: float | None = None
    """Wall time of the whole run's process (start-up, workloads, shutdown)."""
    returncode: int | None = None
    log_path: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables the run set (vLLM's and gpuprobe's own), for reproducing it."""
    measured: Measured | None = None
    comparison: Comparison | None = None


@dataclass
class ValidationRunInfo(RunInfoBase):
    """Where, when and with what a validation file was made (the shared fields first: ``RunInfoBase``)."""

    device: str | None = None
    """E.g. ``NVIDIA H100 80GB HBM3 x1`` or ``cpu: AMD EPYC ... (2 cores)``."""
    gpu_count: int = 0
    vllm_version: str | None = None
    torch_version: str | None = None
    command: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    host_gflops: float | None = None
    """CPU runs: this machine's float32 matrix-multiply rate (numpy, all cores), measured at the start."""
    host_memory_gbps: float | None = None
    """CPU runs: this machine's memory copy bandwidth (read + write, numpy), measured at the start."""


@dataclass
class ValidationRuns:
    """A validation file: the model, the layouts tried and their results (in the order they ran)."""

    run: ValidationRunInfo
    model_name: str
    model_config: dict[str, Any]
    """The model's ``config.json`` contents (what the runs and any recomputed prediction use)."""
    layouts: list[LayoutRun] = field(default_factory=list)
    status: Literal["running", "complete", "partial", "interrupted"] = "running"
    problems: list[str] = field(default_factory=list)
    kind: str = VALIDATION_KIND
    schema_version: int = VALIDATION_SCHEMA_VERSION

    def find(self, name: str) -> LayoutRun | None:
        """The layout run whose layout name is ``name``."""
        return next((r for r in self.layouts if r.layout.name == name), None)

    def upsert(self, run: LayoutRun) -> None:
        """Replace the run of the same layout name, or append."""
        for i, old in enumerate(self.layouts):
            if old.layout.name == run.layout.name:
                self.layouts[i] = run
                return
        self.layouts.append(run)
