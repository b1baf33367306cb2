"""Speed of one layout under one traffic: the engine simulation run on every replica, summarised as a client
would measure it (``vllm bench serve``'s figures), with an uncertainty band.

Each replica is its own server behind a balancer (``Traffic.split``): it gets an even share of the clients
and the requests in proportion to them, or its turn of one Poisson stream of arrivals; a replica that would
get no client stays idle, so no replica runs more requests at once than the concurrency gives it. Replicas on
identically connected GPUs given the same requests run at the same speed, so the simulation runs once for
each distinct (requests, connection) pair. The run lasts from the first send on any replica to the last
token on any; latency percentiles are over every request of every replica.

The band around each figure is the spread of measured over predicted on the runs the calibration was fitted
to (``Calibration.band``: 2.5th to 97.5th percentile), so it says how far real runs strayed from the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gpuprobe.predict.calibration import Calibration
from gpuprobe.predict.layouts import Layout
from gpuprobe.predict.memory import MemoryPrediction
from gpuprobe.predict.model_spec import ModelSpec
from gpuprobe.predict.simresult import EngineLimits, SimResult, StepTotals
from gpuprobe.predict.simulate import simulate
from gpuprobe.predict.stepcost import StepCost
from gpuprobe.predict.system import SystemProfile
from gpuprobe.predict.traffic import Traffic


@dataclass
class Slo:
    max_ttft_ms: float | None = None
    max_tpot_ms: float | None = None

    @property
    def any(self) -> bool:
        return self.max_ttft_ms is not None or self.max_tpot_ms is not None


@dataclass
class PerfPrediction:
    output_tokens_per_s: float
    request_throughput: float
    ttft_ms: float
    ttft_p90_ms: float
    ttft_p99_ms: float
    tpot_ms: float
    tpot_p90_ms: float
    tpot_p99_ms: float
    itl_ms: float
    itl_p90_ms: float
    itl_p99_ms: float
    e2el_ms: float
    duration_s: float
    model_load_s: float
    running_per_replica: int
    """Most requests decoding together in a replica."""
    peak_kv_fraction: float
    """Highest share of the KV cache in use."""
    preemptions: int
    allreduce_backend: str
    """``custom``, ``nccl``, ``custom+nccl`` or ``none``."""
    bottleneck: str
    shares: dict[str, float]
    goodput_rps: float | None = None
    """Requests per second that met the SLO (None without an SLO)."""
    goodput_fraction: float | None = None
    output_tokens_per_s_range: list[float] = field(default_factory=list)
    ttft_ms_range: list[float] = field(default_factory=list)
    tpot_ms_range: list[float] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float, is_sorted: bool = False) -> float:
    """Linear-interpolation percentile (numpy's default); NaN for no values."""
    xs = values if is_sorted else sorted(v for v in values if not math.isnan(v))
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def weighted_percentile(pairs: list[tuple[float, int]], q: float) -> float:
    """Percentile of values given as (value, count), by the same rule as ``percentile``."""
    total = sum(c for _, c in pairs)
    if total == 0:
        return math.nan
    pos = (total - 1) * q / 100.0
    seen = 0
    ordered = sorted(pairs)
    for i, (v, c) in enumerate(ordered):
        if pos < seen + c:
            if pos <= seen + c - 1 or i + 1 == len(ordered):
                return v
            nxt = ordered[i + 1][0]
            return v + (nxt - v) * (pos - (seen + c - 1))
        seen += c
    return ordered[-1][0]


def _limits(mem: MemoryPrediction, tp: int, pp: int, async_scheduling: bool = True) -> EngineLimits:
    s = mem.settings
    return EngineLimits(s.max_num_seqs, s.max_num_batched_tokens, s.block_size, mem.num_blocks, pp, async_scheduling,
                        launch_in_engine=tp * pp == 1)


def _signature(system: SystemProfile, layout: Layout, replica: int) -> tuple:
    """Replicas with the same signature run at the same speed (same GPU models, links, all-reduce curves)."""
    groups = layout.groups[replica]
    sig = []
    for st in groups:
        names = tuple(system.gpus[g].name for g in st)
        links = tuple(system.path_class.get((min(a, b), max(a, b)), "") for a in st for b in st if a < b)
        curve = system.allreduce_curve(st) if len(st) > 1 else None
        sig.append((names, links, tuple(curve.times_us) if curve else (), curve.busbw_gbps if curve else 0.0))
    return tuple(sig)


def _run(spec: ModelSpec, system: SystemProfile, layout: Layout, mem: MemoryPrediction, traffic: Traffic,
         cal: Calibration, served: bool) -> tuple[list[SimResult], StepCost]:
    results = []
    cache: dict[tuple, SimResult] = {}
    first_cost: StepCost | None = None
    for r, share in enumerate(traffic.split(layout.replicas)):
        if share is None:
            continue
        key = (_signature(system, layout, r), share.concurrency, tuple(share.requests), tuple(share.arrivals_s))
        if key not in cache:
            cost = StepCost(spec, system, layout, r, mem, cal)
            first_cost = first_cost or cost
            cache[key] = simulate(cost, _limits(mem, layout.tp, layout.pp, system.async_scheduling), share, served)
        results.append(cache[key])
    if first_cost is None:  # no replica got work (cannot happen with >= 1 request): cost of replica 0
        first_cost = StepCost(spec, system, layout, 0, mem, cal)
    return results, first_cost


def _duration(results: list[SimResult]) -> float:
    """The whole run, as its client times it: the first send on any replica to the last token seen on any."""
    ran = [r for r in results if r.end_s > r.start_s]
    return max(r.end_s for r in ran) - min(r.start_s for r in ran) if ran else 0.0


def _sorted(values: list[float]) -> list[float]:
    return sorted(v for v in values if not math.isnan(v))


@dataclass(frozen=True)
class ClientFigures:
    """What the clients of every replica measure over a run: rates over its duration, and the median (and 90th,
    99th percentiles) of each latency over every request, in seconds."""

    output_tokens_per_s: float
    requests_per_s: float
    ttft_s: float
    ttft_p90_s: float
    ttft_p99_s: float
    tpot_s: float
    tpot_p90_s: float
    tpot_p99_s: float
    itl_s: float
    itl_p90_s: float
    itl_p99_s: float
    e2el_s: float
    duration_s: float


def _summary(results: list[SimResult]) -> ClientFigures:
    ttft = _sorted([x for r in results for x in r.ttft_s])
    tpot = _sorted([x for r in results for x in r.tpot_s])
    e2el = _sorted([x for r in results for x in r.e2el_s])
    itl = [p for r in results for p in r.itl]
    out_tokens = sum(sum(o for o, e in zip(r.output_tokens, r.e2el_s, strict=True) if not math.isnan(e))
                     for r in results)
    completed = sum(r.completed for r in results)
    duration = _duration(results)
    return ClientFigures(
        output_tokens_per_s=out_tokens / duration if duration > 0 else 0.0,
        requests_per_s=completed / duration if duration > 0 else 0.0,
        ttft_s=percentile(ttft, 50, True), ttft_p90_s=percentile(ttft, 90, True),
        ttft_p99_s=percentile(ttft, 99, True), tpot_s=percentile(tpot, 50, True),
        tpot_p90_s=percentile(tpot, 90, True), tpot_p99_s=percentile(tpot, 99, True),
        itl_s=weighted_percentile(itl, 50), itl_p90_s=weighted_percentile(itl, 90),
        itl_p99_s=weighted_percentile(itl, 99), e2el_s=percentile(e2el, 50, True), duration_s=duration,
    )  # fmt: skip


def _totals(results: list[SimResult]) -> StepTotals:
    """The step sums of every replica's run, added up."""
    total = StepTotals()
    for r in results:
        total.add(r.breakdown)
    return total


def _goodput(results: list[SimResult], slo: Slo) -> tuple[float, float]:
    good = total = 0
    duration = _duration(results)
    for r in results:
        for ttft, e2el, out in zip(r.ttft_s, r.e2el_s, r.output_tokens, strict=True):
            total += 1
            if math.isnan(e2el):
                continue
            tpot = (e2el - ttft) / (out - 1) if out > 1 else 0.0
            if (slo.max_ttft_ms is None or ttft * 1e3 <= slo.max_ttft_ms) and (
                    slo.max_tpot_ms is None or tpot * 1e3 <= slo.max_tpot_ms):
                good += 1
    return (good / duration if duration > 0 else 0.0), (good / total if total else 0.0)


def predict_perf(spec: ModelSpec, system: SystemProfile, layout: Layout, mem: MemoryPrediction, traffic: Traffic,
                 cal: Calibration, served: bool = True, slo: Slo | None = None) -> PerfPrediction:
    """Simulate ``traffic`` on every replica of ``layout`` (``mem`` must fit); ``served``: behind ``vllm
    serve`` (else offline ``LLM.generate``)."""
    results, cost = _run(spec, system, layout, mem, traffic, cal, served)
    m = _summary(results)
    br = _totals(results)
    gpu_parts = {"compute": br.compute_s, "hbm": br.hbm_s}
    bound = max(gpu_parts.values())
    parts = {
        "compute": bound if gpu_parts["compute"] >= gpu_parts["hbm"] else 0.0,
        "hbm": bound if gpu_parts["hbm"] > gpu_parts["compute"] else 0.0,
        "interconnect": br.comm_s,
        "overhead": br.host_s,
    }
    total = sum(parts.values()) or 1.0
    shares = {k: round(v / total, 3) for k, v in parts.items()}
    backend = "+".join(sorted(cost.backends_used, key=lambda b: b != "custom")) or "none"
    h2d = min(system.gpus[g].h2d_gbps.value for g in layout.gpus)
    load = max(st.weights_bytes for st in mem.stages) / (h2d * 1e9)
    notes = []
    if "derived" in cost.ar_sources:
        notes.append("custom all-reduce time derived from measured P2P bandwidth + a fixed latency (not measured)")
    if "fitted" in cost.ar_sources:
        notes.append("NCCL all-reduce curve of this TP group fitted from other measured groups")
    preempt = sum(r.preemptions for r in results)
    if preempt:
        notes.append(f"{preempt} preemptions: the KV cache ran out at this load (requests were recomputed)")
    idle = layout.replicas - len(results)
    if idle:
        notes.append(f"{idle} of {layout.replicas} replicas get no request at this concurrency")
    peak = max((r.peak_kv_blocks for r in results), default=0) / max(mem.num_blocks, 1)
    good = _goodput(results, slo) if slo is not None and slo.any else (None, None)
    return PerfPrediction(
        output_tokens_per_s=m.output_tokens_per_s, request_throughput=m.requests_per_s,
        ttft_ms=m.ttft_s * 1e3, ttft_p90_ms=m.ttft_p90_s * 1e3, ttft_p99_ms=m.ttft_p99_s * 1e3,
        tpot_ms=m.tpot_s * 1e3, tpot_p90_ms=m.tpot_p90_s * 1e3, tpot_p99_ms=m.tpot_p99_s * 1e3,
        itl_ms=m.itl_s * 1e3, itl_p90_ms=m.itl_p90_s * 1e3, itl_p99_ms=m.itl_p99_s * 1e3, e2el_ms=m.e2el_s * 1e3,
        duration_s=m.duration_s, model_load_s=load,
        running_per_replica=max((r.running_max for r in results), default=0), peak_kv_fraction=peak,
        preemptions=preempt, allreduce_backend=backend, bottleneck=max(shares, key=lambda k: shares[k]),
        shares=shares, goodput_rps=good[0], goodput_fraction=good[1],
        output_tokens_per_s_range=cal.band("output_tokens_per_s", m.output_tokens_per_s),
        ttft_ms_range=cal.band("ttft_ms", m.ttft_s * 1e3), tpot_ms_range=cal.band("tpot_ms", m.tpot_s * 1e3),
        sources={"compute": cost.peak_source, "hbm": cost.hbm_source,
                 "allreduce": "/".join(sorted(cost.ar_sources)) or "none",
                 "model_load_s": system.gpus[layout.gpus[0]].h2d_gbps.source, "efficiencies": cal.source},
        notes=notes,
    )  # fmt: skip
