"""Step-time model: TTFT, TPOT and throughput of one layout under one workload.

Per pipeline stage and step (``_stage_time``):
  compute = (2 x tokens x active linear params on the rank + attention FLOPs) / (efficiency x peak)
  memory  = (weights read + KV read) / (efficiency x HBM bandwidth)      (MoE: only experts touched)
            (both plus ``gpu_per_layer_us`` x layers: the fixed cost of a layer's kernels, even in a graph)
  comm    = (2 x layers + 1 on the first stage) all-reduces of tokens x hidden x 2 bytes, each timed on the
            curve of the backend vLLM picks for that TP group and size (``allreduce_time``)
  step    = max(compute, memory) + comm + host overhead (eager); max(that GPU time, host overhead) + the
            host's serial part with CUDA graphs, where the rest of the host work overlaps the forward
            (``_stage_total``)
Steady state with B requests running: every step decodes B tokens and carries B x input/output prompt
tokens of chunked prefill (the prefill work amortised over the outputs). With pp > 1, vLLM keeps pp
micro-batches in flight: a token round takes max(pp x slowest stage, sum of stages + transfers).
TTFT = the prompt's prefill chunks (with the running decodes) + queueing when more requests are offered
than fit (KV cache or max_num_seqs). Load time = weights per GPU / measured H2D bandwidth.

One-shot batch (``batch=True``, what ``gpuprobe validate`` runs): ``concurrency`` requests arrive at once.
vLLM's scheduler fills each step with the decode tokens of requests already past prefill, then prompt
chunks in arrival order up to max_num_batched_tokens; a request's first token comes out of the step that
finishes its prompt. Median TTFT = end of the step that finishes the median request's prompt (the upper
median: requests reach the engine one by one, so the first step is short and most of the batch lands in
the last prompt chunk), plus ``request_overhead_ms`` and the host time of the next step (it is launched
before the token is handed back). Then every
request decodes one token per step at batch n. A request's TPOT counts the mixed prefill steps it decoded
through (the median request's is reported). Output tokens/s = n x output_len / (prefill steps + decode steps).
With more requests than fit at once (max_num_seqs or KV room) the batch runs in waves.
Host overhead per step: ``step_overhead_ms`` + ``seq_overhead_us`` x sequences in the step (overlaps the forward
with CUDA graphs) + ``step_serial_ms`` (never overlaps), plus ``eager_overhead_per_layer_us`` x layers when the
step runs without CUDA graphs (--enforce-eager, or prefill steps above the largest captured size).

Uncertainty: the same prediction with the calibration's pessimistic and optimistic efficiency ends
(``Calibration.variant``), reported as [low, high].
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpuprobe.predict.calibration import Calibration
from gpuprobe.predict.layouts import CUSTOM_AR_WORLD_SIZES, Layout
from gpuprobe.predict.memory import MemoryPrediction, kv_bytes_per_token_per_layer, pp_layer_ranges
from gpuprobe.predict.model_spec import ModelSpec
from gpuprobe.predict.options import Workload
from gpuprobe.predict.params import layer_shard, padded_vocab, quantized_bytes_per_param
from gpuprobe.predict.system import CUSTOM_AR_ALPHA_US, SystemProfile

CUSTOM_AR_MAX_BYTES = 8 << 20
"""vLLM custom all-reduce size cap (8 MiB default); larger messages go to NCCL."""
CUSTOM_AR_ONE_SHOT_BYTES = 512 << 10
"""Below this (or at tp 2) vLLM's custom all-reduce uses the one-shot kernel, above it two-shot."""
MAX_CAPTURE_TOKENS = 512


@dataclass
class PerfPrediction:
    ttft_ms: float
    tpot_ms: float
    output_tokens_per_s: float
    model_load_s: float
    running_per_replica: int
    """Requests decoding at once in each replica (min of concurrency share, max_num_seqs, KV room)."""
    allreduce_backend: str
    """``custom``, ``nccl``, ``custom+nccl`` (decode on custom, large prefill chunks on NCCL) or ``none``."""
    bottleneck: str
    shares: dict[str, float]
    ttft_ms_range: list[float] = field(default_factory=list)
    tpot_ms_range: list[float] = field(default_factory=list)
    output_tokens_per_s_range: list[float] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Stage:
    layers: int
    first: bool
    last: bool
    active_params: float
    dense_weight_bytes: float
    expert_bytes_per_layer_expert: float
    weight_bytes: float
    kv_bytes_per_token: float
    group: tuple[int, ...]
    moe_layers: int = 0


class _Ctx:
    """Everything fixed for one replica: per-stage aggregates, GPU figures and backend choices."""

    def __init__(self, spec: ModelSpec, system: SystemProfile, layout: Layout, replica: int,
                 mem: MemoryPrediction) -> None:
        self.spec, self.system, self.layout = spec, system, layout
        self.tp, self.pp = layout.tp, layout.pp
        self.groups = layout.groups[replica]
        gpu = system.gpus[self.groups[0][0]]
        use_fp8 = spec.weights.kind == "fp8" and gpu.fp8_tflops is not None
        self.peak = (gpu.fp8_tflops if use_fp8 else gpu.bf16_tflops).value * 1e12  # type: ignore[union-attr]
        self.peak_source = (gpu.fp8_tflops if use_fp8 else gpu.bf16_tflops).source  # type: ignore[union-attr]
        self.hbm = min(system.gpus[g].hbm_gbps.value for st in self.groups for g in st) * 1e9
        self.hbm_source = gpu.hbm_gbps.source
        kv_elem = mem.settings.kv_cache_bytes_per_element
        self.eager = mem.settings.enforce_eager
        bpp = quantized_bytes_per_param(spec.weights)
        self.stages = []
        for i, rng in enumerate(pp_layer_ranges(spec.num_layers, self.pp)):
            active = 0.0
            expert_bytes = 0.0
            for j in rng:
                sh = layer_shard(spec, j, self.tp)
                active += sh.active_linear
                if sh.expert_linear:
                    expert_bytes += sh.expert_linear * bpp / spec.num_experts
            last = i == self.pp - 1
            if last:
                active += padded_vocab(spec) / self.tp * spec.hidden_size
            moe_layers = sum(1 for j in rng if spec.layer_is_moe(j))
            wb = mem.stages[i].weights_bytes
            self.stages.append(_Stage(
                layers=len(rng), first=i == 0, last=last, active_params=active,
                dense_weight_bytes=wb - expert_bytes * spec.num_experts,
                expert_bytes_per_layer_expert=expert_bytes / moe_layers if moe_layers else 0.0,
                weight_bytes=wb, kv_bytes_per_token=kv_bytes_per_token_per_layer(spec, self.tp, kv_elem) * len(rng),
                group=self.groups[i], moe_layers=moe_layers,
            ))
        self.backends_used: set[str] = set()
        self.ar_sources: set[str] = set()

    def allreduce_us(self, group: tuple[int, ...], size: float, cal: Calibration) -> float:
        """One all-reduce of ``size`` bytes in ``group`` on the backend vLLM 0.26 would use."""
        n = len(group)
        if n <= 1:
            return 0.0
        s = self.system
        custom_ok = n in CUSTOM_AR_WORLD_SIZES and s.all_p2p(group) and (n == 2 or s.all_nvlink(group))
        if custom_ok and size < CUSTOM_AR_MAX_BYTES:
            self.backends_used.add("custom")
            self.ar_sources.add("derived")
            bw = min(s.p2p(a, b).value for a in group for b in group if a < b) * 1e3  # bytes per us
            kind = "nvlink" if s.all_nvlink(group) else "pcie"
            moved = (n - 1) * size if (n == 2 or size < CUSTOM_AR_ONE_SHOT_BYTES) else 2 * (n - 1) / n * size
            return (CUSTOM_AR_ALPHA_US[kind] + moved / bw) * cal.allreduce_efficiency
        self.backends_used.add("nccl")
        curve = s.allreduce_curve(group)
        self.ar_sources.add(curve.source)
        return curve.time_us(size) * cal.allreduce_efficiency


def _stage_time(ctx: _Ctx, st: _Stage, new_tokens: float, seqs: float, ctx_tokens: float, attn_work: float,
                cal: Calibration, prefill: bool) -> dict[str, float]:
    """Seconds per component for one step of one stage. ``attn_work`` = sum over requests of new x (ctx + new/2)."""
    spec = ctx.spec
    flops = 2 * new_tokens * st.active_params
    if st.last:
        flops -= 2 * max(new_tokens - seqs, 0) * padded_vocab(spec) / ctx.tp * spec.hidden_size  # logits: sampled only
    d = spec.head_dim if spec.mla is None else (spec.mla.qk_nope_head_dim + spec.mla.qk_rope_head_dim)
    flops += 4 * st.layers * (spec.num_heads / ctx.tp) * d * attn_work
    eff = cal.prefill_compute_efficiency if prefill else cal.decode_compute_efficiency
    t_compute = flops / (eff * ctx.peak)
    weight_bytes = st.weight_bytes
    if spec.is_moe and st.expert_bytes_per_layer_expert:
        k, e = spec.experts_per_token, spec.num_experts
        touched = e * (1 - (1 - k / e) ** max(new_tokens, 1))
        weight_bytes = st.dense_weight_bytes + st.moe_layers * touched * st.expert_bytes_per_layer_expert
    bytes_read = weight_bytes + ctx_tokens * st.kv_bytes_per_token
    t_memory = bytes_read / (cal.hbm_efficiency * ctx.hbm)
    floor = st.layers * cal.gpu_per_layer_us * 1e-6  # kernels' fixed cost: launch gaps, tails of small kernels
    t_compute += floor
    t_memory += floor
    t_comm = 0.0
    if ctx.tp > 1:
        msg = new_tokens * spec.hidden_size * spec.dtype_bytes
        n_ar = 2 * st.layers + (1 if st.first else 0)
        t_comm = n_ar * ctx.allreduce_us(st.group, msg, cal) * 1e-6
        if st.last:  # logits all-gather: half the traffic of an all-reduce of the full [seqs, vocab] tensor
            t_comm += ctx.allreduce_us(st.group, seqs * padded_vocab(spec) * spec.dtype_bytes / 2, cal) * 1e-6
    # vLLM 0.26 captures full graphs for decode and piecewise graphs for mixed steps up to the largest
    # capture size; larger steps and --enforce-eager launch every kernel from the host.
    graphs = not ctx.eager and new_tokens <= MAX_CAPTURE_TOKENS
    host = (cal.step_overhead_ms * 1e-3 + seqs * cal.seq_overhead_us * 1e-6) / ctx.pp
    if not graphs:
        host += st.layers * cal.eager_overhead_per_layer_us * 1e-6
    if prefill:
        host += st.layers * cal.prefill_overhead_per_layer_ms * 1e-3
    serial = cal.step_serial_ms * 1e-3 / ctx.pp
    return {"compute": t_compute, "hbm": t_memory, "interconnect": t_comm, "overhead": host + serial,
            "serial": serial, "graphs": 1.0 if graphs else 0.0}


def _stage_total(p: dict[str, float]) -> float:
    """Step time of one stage. With CUDA graphs the host's per-step work (scheduling, input preparation)
    overlaps the GPU's forward, so the step takes the longer of the two plus the part that cannot overlap
    (``serial``: handing the sampled tokens back); without graphs the host launches every kernel of the forward
    and all of its time adds to the GPU's."""
    gpu = max(p["compute"], p["hbm"]) + p["interconnect"]
    if p["graphs"]:
        return max(gpu, p["overhead"] - p["serial"]) + p["serial"]
    return gpu + p["overhead"]


def _p2p_s(ctx: _Ctx, i: int, new_tokens: float, cal: Calibration) -> float:
    """Send hidden_states + residual from stage i to i+1 (each TP rank sends 1/tp of it)."""
    a, b = ctx.groups[i][0], ctx.groups[i + 1][0]
    size = 2 * new_tokens * ctx.spec.hidden_size * ctx.spec.dtype_bytes / ctx.tp
    bw = ctx.system.p2p(a, b).value * 1e9 * cal.p2p_efficiency
    return cal.p2p_alpha_us * 1e-6 + size / bw


def _round(ctx: _Ctx, tokens: float, seqs: float, ctx_tokens: float, attn: float, cal: Calibration,
           prefill: bool, micro: int) -> tuple[float, float, dict[str, float]]:
    """(latency of one pass through all stages, time per round with ``micro`` micro-batches, components)."""
    per = [_stage_time(ctx, st, tokens / micro, seqs / micro, ctx_tokens / micro, attn / micro, cal, prefill)
           for st in ctx.stages]
    totals = [_stage_total(p) for p in per]
    hops = [_p2p_s(ctx, i, tokens / micro, cal) for i in range(ctx.pp - 1)]
    latency = sum(totals) + sum(hops)
    round_time = max(latency, micro * max(t + (hops[i] if i < len(hops) else 0.0) for i, t in enumerate(totals)))
    comp = {k: sum(p[k] for p in per) for k in ("compute", "hbm", "interconnect", "overhead")}
    comp["interconnect"] += sum(hops)
    return latency, round_time, comp


def _predict_once(ctx: _Ctx, mem: MemoryPrediction, w: Workload, conc: int, cal: Calibration) -> dict:
    s = mem.settings
    bs = s.block_size
    blocks_per_req = -(-(w.input_len + w.output_len) // bs)
    kv_room = mem.num_blocks // blocks_per_req
    running = max(1, min(conc, s.max_num_seqs, kv_room))
    # Steady state: each step decodes `running` tokens and carries their amortised prefill.
    prefill_per_step = running * w.input_len / w.output_len
    budget = s.max_num_batched_tokens
    tokens = running + prefill_per_step
    steps_scale = 1.0
    if tokens > budget:  # prefill-limited: more steps than output tokens
        steps_scale = tokens / budget
        tokens = budget
    avg_ctx = w.input_len + w.output_len / 2
    ctx_tokens = running * avg_ctx
    attn = running * avg_ctx + prefill_per_step / steps_scale * (w.input_len / 2)
    micro = min(ctx.pp, running)
    _, round_t, comp = _round(ctx, tokens, running, ctx_tokens, attn, cal, prefill=tokens > MAX_CAPTURE_TOKENS,
                              micro=micro)
    tpot = round_t * steps_scale
    tput = running / tpot
    # TTFT: the prompt in chunks next to the running decodes, then queueing if requests wait for room.
    chunk = max(budget - running, 1)
    ttft = 0.0
    left = w.input_len
    while left > 0:
        c = min(left, chunk)
        done = w.input_len - left
        lat, _, _ = _round(ctx, c + running - 1, running, ctx_tokens, c * (done + c / 2) + running * avg_ctx, cal,
                           prefill=True, micro=1)
        ttft += lat
        left -= c
    ttft += 0.5 * tpot
    if conc > running:
        ttft += (conc / running - 1) * (ttft + w.output_len * tpot)
    return {"ttft": ttft, "tpot": tpot, "tput": tput, "running": running, "comp": comp}


def _predict_batch(ctx: _Ctx, mem: MemoryPrediction, w: Workload, n: int, cal: Calibration) -> dict:
    """A one-shot batch of ``n`` requests of input_len -> output_len (see the module docstring)."""
    s = mem.settings
    blocks_per_req = -(-(w.input_len + w.output_len) // s.block_size)
    running = max(1, min(n, s.max_num_seqs, mem.num_blocks // blocks_per_req))
    waves = -(-n // running)
    budget = s.max_num_batched_tokens
    # Prefill phase: steps of decode tokens (requests past prefill) + prompt chunks in arrival order.
    left = [w.input_len] * running
    first_step = [0] * running
    steps: list[float] = []
    decoding = 0
    nxt = 0
    comp: dict[str, float] = {}
    while nxt < running:
        room = max(budget - decoding, 1)
        new = 0
        attn = 0.0
        finished = []
        i = nxt
        while i < running and room > 0:
            c = min(left[i], room)
            done = w.input_len - left[i]
            attn += c * (done + c / 2)
            left[i] -= c
            room -= c
            new += c
            if left[i] == 0:
                finished.append(i)
            i += 1
        ctx_tokens = decoding * w.input_len
        tokens = new + decoding
        lat, _, _ = _round(ctx, tokens, decoding + (i - nxt), ctx_tokens, attn + decoding * w.input_len, cal,
                           prefill=True, micro=1)
        steps.append(lat)
        for j in finished:
            first_step[j] = len(steps)
        decoding += len(finished)
        nxt = finished[-1] + 1 if finished else nxt
    avg_ctx = w.input_len + w.output_len / 2
    micro = min(ctx.pp, running)
    _, t_dec, comp = _round(ctx, running, running, running * avg_ctx, running * avg_ctx, cal,
                            prefill=running > MAX_CAPTURE_TOKENS, micro=micro)
    t_prefill = sum(steps)
    n_dec = max(w.output_len - 1, 0)
    wave = cal.request_overhead_ms * 1e-3 + t_prefill + n_dec * t_dec
    ends = [sum(steps[:k]) for k in range(len(steps) + 1)]
    mid = first_step[running // 2]
    # The host launches the next step before it hands back this step's tokens (async scheduling).
    ttft = cal.request_overhead_ms * 1e-3 + ends[mid] + comp["overhead"] + (waves // 2) * wave
    mixed = min(len(steps) - mid, n_dec)  # steps the median request decodes through next to others' prompts
    tpot = (ends[-1] - ends[mid] + (n_dec - mixed) * t_dec) / n_dec if n_dec else t_dec
    tput = n * w.output_len / (waves * wave)
    return {"ttft": ttft, "tpot": tpot, "tput": tput, "running": running, "comp": comp}


def predict_perf(spec: ModelSpec, system: SystemProfile, layout: Layout, mem: MemoryPrediction, workload: Workload,
                 cal: Calibration, batch: bool = False) -> PerfPrediction:
    """Predict one layout (``mem`` must fit); replicas share the concurrency evenly and add their throughput.

    ``batch``: ``workload.concurrency`` requests submitted at once (one-shot batch, as ``gpuprobe validate``
    runs them) instead of a closed loop keeping that many in flight.
    """
    per_rep = -(-workload.concurrency // layout.replicas)
    one = _predict_batch if batch else _predict_once
    results = []
    ctx0 = None
    for r in range(layout.replicas):
        ctx = _Ctx(spec, system, layout, r, mem)
        ctx0 = ctx0 or ctx
        results.append([one(ctx, mem, workload, per_rep, c) for c in (cal, cal.variant("low"),
                                                                      cal.variant("high"))])
    assert ctx0 is not None
    mid = [r[0] for r in results]
    ttft = max(m["ttft"] for m in mid)
    tpot = max(m["tpot"] for m in mid)
    tput = sum(m["tput"] for m in mid)
    lo = [r[1] for r in results]
    hi = [r[2] for r in results]
    comp = mid[0]["comp"]
    bound = max(comp["compute"], comp["hbm"])
    parts = {
        "compute": bound if comp["compute"] >= comp["hbm"] else 0.0,
        "hbm": bound if comp["hbm"] > comp["compute"] else 0.0,
        "interconnect": comp["interconnect"],
        "overhead": comp["overhead"],
    }
    total = sum(parts.values()) or 1.0
    shares = {k: round(v / total, 3) for k, v in parts.items()}
    backend = "+".join(sorted(ctx0.backends_used, key=lambda b: b != "custom")) or "none"
    h2d = min(system.gpus[g].h2d_gbps.value for g in layout.gpus)
    load = max(st.weights_bytes for st in mem.stages) / (h2d * 1e9)
    ar_source = "/".join(sorted(ctx0.ar_sources)) or "none"
    sources = {
        "compute": ctx0.peak_source,
        "hbm": ctx0.hbm_source,
        "allreduce": ar_source,
        "model_load_s": system.gpus[layout.gpus[0]].h2d_gbps.source,
        "efficiencies": cal.source,
    }
    notes = []
    if "derived" in ctx0.ar_sources:
        notes.append("custom all-reduce time derived from measured P2P bandwidth + a fixed latency (not measured)")
    if "fitted" in ctx0.ar_sources:
        notes.append("NCCL all-reduce curve of this TP group fitted from other measured groups")
    return PerfPrediction(
        ttft_ms=ttft * 1e3, tpot_ms=tpot * 1e3, output_tokens_per_s=tput, model_load_s=load,
        running_per_replica=mid[0]["running"], allreduce_backend=backend,
        bottleneck=max(shares, key=lambda k: shares[k]), shares=shares,
        ttft_ms_range=[max(m["ttft"] for m in hi) * 1e3, max(m["ttft"] for m in lo) * 1e3],
        tpot_ms_range=[max(m["tpot"] for m in hi) * 1e3, max(m["tpot"] for m in lo) * 1e3],
        output_tokens_per_s_range=[sum(m["tput"] for m in lo), sum(m["tput"] for m in hi)],
        sources=sources, notes=notes,
    )
