"""What one engine step costs: GPU time from the batch's work on the measured system, host time from the
engine's per-step bookkeeping and kernel launches, and which CUDA-graph mode vLLM 0.26 runs the step in.

A step is described by ``Batch``: the tokens computed (prompt chunks + one per decoding request), the
requests in it, the context tokens their attention reads, the attention work of the prompt chunks, and
whether every request is decoding (a uniform decode batch). Per pipeline stage and step:

  GEMM FLOPs   = 2 x tokens x linear parameters of the stage's layers (MoE: dense part + top-k experts)
                 + 2 x sampled rows x vocab / tp x hidden (LM head, last stage)
  attention    = 4 x layers x heads / tp x head_dim x sum over prompt chunks of new x (context + new / 2)
  HBM bytes    = weights of the stage (MoE: the experts the step touches; not the tables a step only indexes:
                 the input embedding unless it is also the LM head, the rotary cache) + context tokens x KV
                 bytes per token
  GPU time     = roofline of (GEMM / (compute efficiency x peak) + attention / (attention efficiency x peak),
                 bytes / (HBM efficiency x measured HBM bandwidth)) joined smoothly (``roofline_sharpness``:
                 (a^k + b^k)^(1/k), the max as k grows), + layers x ``gpu_per_layer_us`` (launch gaps and
                 tails of small kernels, also inside a graph; per kernel of the layer over a Llama-style
                 layer's ten: ``layer_kernels``) + tensor-parallel all-reduces (2 per layer + 1,
                 of tokens x hidden x 2 bytes, each on the measured curve of the backend vLLM picks)
  host time    = ``step_overhead_ms`` + ``seq_overhead_us`` x requests + ``prompt_token_overhead_us`` x
                 prompt tokens + the launch cost of the mode the step runs in: a full graph replay
                 (``graph_launch_us``), piecewise graphs with attention launched eagerly between them
                 (``piecewise_launch_per_layer_us`` x layers), or every kernel from the host
                 (``eager_launch_per_layer_us`` x layers, + ``moe_launch_per_layer_us`` x MoE layers for the
                 fused-MoE dispatch: ``--enforce-eager``; steps above the largest capture size run vLLM's
                 torch.compile'd code without graphs, at ``compiled_launch_ratio`` of that), +
                 ``prompt_launch_per_layer_us`` x layers when a step without graphs carries prompt tokens (the
                 prefill attention path)
Step time (``step_time``) = max(GPU time, host time) + ``step_serial_ms`` (+ ``prompt_step_serial_ms`` when
the step carries prompt tokens): with asynchronous scheduling the host prepares and launches the next step
while the GPU runs this one, and kernels launched eagerly overlap the kernels already queued; the serial part
(the sampled tokens handed back, inputs that wait on the GPU) never overlaps. GEMM efficiency is scaled by
h / (h + ``gemm_half_hidden``): a small model's GEMMs reach less of the peak. FP8 weights on a GPU with FP8
tensor cores run at the FP8 peak times ``fp8_gemm_efficiency`` and add ``fp8_per_layer_us`` of GPU time per
layer (block-scaled FP8 GEMMs quantize their activations per group of 128 in kernels of their own and rescale
per block, which the BF16 terms do not cover); on Hopper a block-scaled FP8 step whose token count (after graph
padding) is not a multiple of 4 runs its dense GEMMs at ``fp8_unaligned_gemm_efficiency`` of the FP8 peak
(``fp8_unaligned_short_gemm_efficiency`` up to ``FP8_SHORT_STEP_TOKENS`` tokens), and its FP8 weights stream at
``fp8_unaligned_weight_rate`` (``fp8_aligned_weight_rate`` when aligned) of the rate BF16 weights stream at; MoE
layers add ``moe_per_layer_us`` (routing, token alignment and combine kernels; grouped GEMMs that reach little of
the roofline at small batches).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

from gpuprobe.predict.calibration import Calibration
from gpuprobe.predict.layouts import CUSTOM_AR_WORLD_SIZES, Layout
from gpuprobe.predict.memory import (
    MemoryPrediction,
    cudagraph_capture_sizes,
    kv_bytes_per_token_per_layer,
    pp_layer_ranges,
)
from gpuprobe.predict.model_spec import ModelSpec
from gpuprobe.predict.params import (
    embedding_params_per_rank,
    layer_shard,
    padded_vocab,
    quantized_bytes_per_param,
    rope_cache_bytes,
)
from gpuprobe.predict.system import CUSTOM_AR_ALPHA_US, SystemProfile

CUSTOM_AR_MAX_BYTES = 8 << 20
"""vLLM custom all-reduce size cap (8 MiB default); larger messages go to NCCL."""
CUSTOM_AR_ONE_SHOT_BYTES = 512 << 10
"""Below this (or at tp 2) vLLM's custom all-reduce uses the one-shot kernel, above it two-shot."""

GRAPH_FULL, GRAPH_PIECEWISE, GRAPH_NONE = "full", "piecewise", "none"

FP8_SHORT_STEP_TOKENS = 2560
"""Unaligned block-FP8 steps up to this many tokens run their GEMMs a little faster (measured: 1,023-2,050 tokens
against 3,073 and more; ``Calibration.fp8_unaligned_short_gemm_efficiency``)."""

BASE_LAYER_KERNELS = 10
"""GPU kernels of a Llama-style decoder layer in vLLM: two fused residual-add + RMSNorms, the QKV, output,
gate/up and down GEMMs, rotary embedding, the KV-cache write, attention, and SiLU-and-mul."""


def layer_kernels(spec: ModelSpec) -> int:
    """GPU kernels of one decoder layer of ``spec``: a Llama-style layer's, + one per extra normalization
    (Qwen3's and Gemma3's per-head q and k norms; Gemma2/3's norms after attention and around the MLP)."""
    return BASE_LAYER_KERNELS + (2 if spec.qk_norm else 0) + (spec.norms_per_layer - 2)


@dataclass(slots=True)
class Batch:
    """The work of one step (over all requests of the step; a pipeline micro-batch is a share of it)."""

    tokens: int
    seqs: int
    context_tokens: float
    """Tokens of KV cache the step's attention reads (every request's context before this step)."""
    prompt_tokens: int = 0
    """Prompt tokens among ``tokens`` (chunked prefill)."""
    attn_work: float = 0.0
    """Sum over prompt chunks of new x (context + new / 2): the causal attention FLOPs' shape."""
    sampled: int = 0
    """Rows that go through the LM head and the sampler (requests that produce a token)."""

    @property
    def uniform_decode(self) -> bool:
        return self.prompt_tokens == 0


@dataclass(slots=True)
class StepTime:
    total_s: float
    gpu_s: float
    host_s: float
    graph: str
    compute_s: float = 0.0
    hbm_s: float = 0.0
    comm_s: float = 0.0


@dataclass
class _Stage:
    layers: int
    first: bool
    last: bool
    gemm_flops_per_token: float
    head_flops_per_row: float
    attn_flops_coef: float
    dense_weight_bytes: float
    """Weights a step reads in full: the stage's, less the tables it only indexes (input embedding, rotary cache)."""
    expert_bytes_per_expert: float
    """Bytes of one routed expert over all the stage's MoE layers (0 for dense models)."""
    expert_flops_per_token: float
    """The part of ``gemm_flops_per_token`` spent in routed experts (grouped GEMMs; 0 for dense models)."""
    moe_layers: int
    kv_bytes_per_token: float
    group: tuple[int, ...]
    fp8_linear_bytes: float = 0.0
    """Bytes of the stage's block-scaled FP8 dense linears on Hopper (0 otherwise): they stream slower than
    their size says (``Calibration.fp8_aligned_weight_rate``)."""


def indexed_bytes(spec: ModelSpec, tp: int, first: bool, last: bool) -> int:
    """Weight bytes of a stage that a step reads only a few rows of: the rotary cos/sin cache, and on the first stage
    the input embedding table (unless it is also the LM head a single-stage tied model reads in full)."""
    emb = embedding_params_per_rank(spec, tp) * spec.dtype_bytes if first and not (last and spec.tie_word_embeddings) \
        else 0
    return emb + rope_cache_bytes(spec)


class StepCost:
    """Step times of one replica of ``layout`` (every stage, every TP group) under ``cal``."""

    def __init__(self, spec: ModelSpec, system: SystemProfile, layout: Layout, replica: int, mem: MemoryPrediction,
                 cal: Calibration) -> None:
        self.spec, self.system, self.cal = spec, system, cal
        self.tp, self.pp = layout.tp, layout.pp
        self.groups = layout.groups[replica]
        gpu = system.gpus[self.groups[0][0]]
        use_fp8 = spec.weights.kind == "fp8" and gpu.fp8_tflops is not None
        peak_fig = gpu.fp8_tflops if use_fp8 and gpu.fp8_tflops else gpu.bf16_tflops
        size = spec.hidden_size / (spec.hidden_size + cal.gemm_half_hidden)
        self.gemm_peak = peak_fig.value * 1e12 * size * (cal.fp8_gemm_efficiency if use_fp8 else 1.0)
        # the fitted per-layer GPU time is a Llama-style layer's; each extra kernel (q/k norms) adds its share. The
        # host's launch terms are not scaled: per layer they are Python and dispatch, not kernel count (scaling them
        # too, or them alone, worsened the fit set: 3.9 % -> 4.6-4.7 % tok/s median error)
        self.per_layer_s = (cal.gpu_per_layer_us * layer_kernels(spec) / BASE_LAYER_KERNELS
                            + (cal.fp8_per_layer_us if use_fp8 else 0.0)) * 1e-6
        # vLLM 0.26 runs block-scaled FP8 linears on Hopper with a CUTLASS kernel that runs about four times slower
        # when the step's token count is not a multiple of 4 (measured; likely the column-major 1 x 128 activation
        # scales, whose column stride is then not 16-byte aligned)
        block_fp8_hopper = use_fp8 and spec.weights.block_size is not None and gpu.spec is not None \
            and gpu.spec.sm.startswith("9.")
        self.fp8_unaligned_rates = (cal.fp8_unaligned_short_gemm_efficiency * peak_fig.value * 1e12,
                                    cal.fp8_unaligned_gemm_efficiency * peak_fig.value * 1e12) \
            if block_fp8_hopper else None
        """Dense GEMM FLOP/s of an unaligned step of at most FP8_SHORT_STEP_TOKENS tokens, and of a longer one."""
        # and its FP8 weights stream at a fraction of the rate BF16 weights do: a different fraction on each side
        # of the same alignment (aligned, unaligned)
        self.fp8_weight_extra = (1.0 / cal.fp8_aligned_weight_rate - 1.0, 1.0 / cal.fp8_unaligned_weight_rate - 1.0) \
            if block_fp8_hopper else (0.0, 0.0)
        self.attn_peak = gpu.bf16_tflops.value * 1e12
        self.peak_source = peak_fig.source
        self.hbm = min(system.gpus[g].hbm_gbps.value for st in self.groups for g in st) * 1e9
        self.hbm_source = gpu.hbm_gbps.source
        s = mem.settings
        self.eager = s.enforce_eager
        self.capture_sizes = [] if s.enforce_eager else cudagraph_capture_sizes(s)
        self.max_capture = self.capture_sizes[-1] if self.capture_sizes else 0
        bpp = quantized_bytes_per_param(spec.weights)
        vocab_rank = padded_vocab(spec) / self.tp
        d = spec.head_dim if spec.mla is None else (spec.mla.qk_nope_head_dim + spec.mla.qk_rope_head_dim)
        self.stages: list[_Stage] = []
        for i, rng in enumerate(pp_layer_ranges(spec.num_layers, self.pp)):
            active = 0.0
            linear = 0
            expert_bytes = 0.0
            expert_active = 0.0
            moe_layers = 0
            for j in rng:
                sh = layer_shard(spec, j, self.tp)
                active += sh.active_linear
                linear += sh.linear
                if sh.expert_linear:
                    expert_bytes += sh.expert_linear * bpp / spec.num_experts
                    expert_active += sh.expert_linear / spec.num_experts * spec.experts_per_token
                    moe_layers += 1
            last = i == self.pp - 1
            weights = mem.stages[i].weights_bytes
            self.stages.append(_Stage(
                layers=len(rng), first=i == 0, last=last, gemm_flops_per_token=2 * active,
                head_flops_per_row=2 * vocab_rank * spec.hidden_size if last else 0.0,
                attn_flops_coef=4 * len(rng) * (spec.num_heads / self.tp) * d,
                dense_weight_bytes=weights - expert_bytes * spec.num_experts
                - indexed_bytes(spec, self.tp, i == 0, last),
                expert_bytes_per_expert=expert_bytes, expert_flops_per_token=2 * expert_active, moe_layers=moe_layers,
                kv_bytes_per_token=kv_bytes_per_token_per_layer(spec, self.tp, s.kv_cache_bytes_per_element) * len(rng),
                group=self.groups[i], fp8_linear_bytes=linear * bpp if block_fp8_hopper else 0.0,
            ))  # fmt: skip
        self.moe_layers_per_stage = sum(st.moe_layers for st in self.stages) / self.pp
        self.moe_layer_s = cal.moe_per_layer_us * 1e-6
        inter = spec.moe_intermediate_size / self.tp if spec.num_experts else 0.0
        self.moe_gemm_rate = inter / (inter + cal.moe_half_intermediate) if inter else 1.0
        """Expert GEMMs' FLOP/s over a dense GEMM's: narrow experts (intermediate size per rank) reach less."""
        self.backends_used: set[str] = set()
        self.ar_sources: set[str] = set()
        self._ar_cache: dict[tuple[tuple[int, ...], int], float] = {}
        self._step_cache: dict[tuple[int, ...], StepTime] = {}
        """Step times by shape; context and attention work kept to their 8 leading bits."""
        self._p2p_bw = [self.system.p2p(self.groups[i][0], self.groups[i + 1][0]).value * 1e9
                        for i in range(self.pp - 1)]

    # --- graphs ------------------------------------------------------------------------------------------
    def graph_mode(self, b: Batch) -> tuple[str, int]:
        """(mode, tokens the GPU computes) for a step: vLLM pads a graphed step to the next capture size."""
        if self.eager or b.tokens > self.max_capture:
            return GRAPH_NONE, b.tokens
        padded = self.capture_sizes[bisect_left(self.capture_sizes, b.tokens)]
        return (GRAPH_FULL if b.uniform_decode else GRAPH_PIECEWISE), padded

    # --- GPU ---------------------------------------------------------------------------------------------
    def allreduce_us(self, group: tuple[int, ...], size: int) -> float:
        """One all-reduce of ``size`` bytes in ``group`` on the backend vLLM 0.26 would use (cached)."""
        key = (group, size)
        hit = self._ar_cache.get(key)
        if hit is not None:
            return hit
        n = len(group)
        s = self.system
        if n <= 1:
            t = 0.0
        elif (n in CUSTOM_AR_WORLD_SIZES and s.all_p2p(group) and (n == 2 or s.all_nvlink(group))
              and size < CUSTOM_AR_MAX_BYTES):
            self.backends_used.add("custom")
            self.ar_sources.add("derived")
            bw = min(s.p2p(a, b).value for a in group for b in group if a < b) * 1e3  # bytes per us
            kind = "nvlink" if s.all_nvlink(group) else "pcie"
            moved = (n - 1) * size if (n == 2 or size < CUSTOM_AR_ONE_SHOT_BYTES) else 2 * (n - 1) / n * size
            t = (CUSTOM_AR_ALPHA_US[kind] + moved / bw) * self.cal.allreduce_efficiency
        else:
            self.backends_used.add("nccl")
            curve = s.allreduce_curve(group)
            self.ar_sources.add(curve.source)
            t = curve.time_us(size) * self.cal.allreduce_efficiency
        self._ar_cache[key] = t
        return t

    def stage_gpu(self, st: _Stage, tokens: float, b: Batch, share: float) -> tuple[float, float, float, float]:
        """(total, compute, HBM, comm) seconds of one stage for ``share`` of batch ``b`` at ``tokens`` tokens."""
        cal, spec = self.cal, self.spec
        rows = b.sampled * share
        # routed experts run as grouped GEMMs (fused-MoE kernels) at self.moe_gemm_rate of a dense GEMM's rate
        dense = tokens * (st.gemm_flops_per_token - st.expert_flops_per_token)
        unaligned = 0.0
        misaligned = bool(round(tokens) % 4)
        if self.fp8_unaligned_rates and misaligned:
            dense, unaligned = 0.0, dense / self.fp8_unaligned_rates[0 if tokens <= FP8_SHORT_STEP_TOKENS else 1]
        gemm = dense + tokens * st.expert_flops_per_token / self.moe_gemm_rate + rows * st.head_flops_per_row
        attn = st.attn_flops_coef * b.attn_work * share
        t_c = gemm / (cal.decode_compute_efficiency if b.uniform_decode else cal.prefill_compute_efficiency) \
            / self.gemm_peak + unaligned + attn / (cal.attention_efficiency * self.attn_peak)
        weights = st.dense_weight_bytes
        if st.fp8_linear_bytes:
            weights += st.fp8_linear_bytes * self.fp8_weight_extra[1 if misaligned else 0]
        if st.expert_bytes_per_expert:
            topk, e = spec.experts_per_token, spec.num_experts
            touched = e * (1.0 - (1.0 - topk / e) ** max(tokens, 1.0))
            weights += touched * st.expert_bytes_per_expert
        t_m = (weights + b.context_tokens * share * st.kv_bytes_per_token) / (cal.hbm_efficiency * self.hbm)
        k = cal.roofline_sharpness
        t = (t_c**k + t_m**k) ** (1.0 / k) + st.layers * self.per_layer_s + st.moe_layers * self.moe_layer_s
        comm = 0.0
        if self.tp > 1:
            msg = int(tokens) * spec.hidden_size * spec.dtype_bytes
            comm = (2 * st.layers + (1 if st.first else 0)) * self.allreduce_us(st.group, msg) * 1e-6
            if st.last:  # logits all-gather: about half the traffic of an all-reduce of [rows, vocab]
                comm += self.allreduce_us(st.group, int(rows * padded_vocab(spec) * spec.dtype_bytes / 2)) * 1e-6
        return t + comm, t_c, t_m, comm

    def p2p_s(self, i: int, tokens: float) -> float:
        """Send hidden_states + residual from stage i to i + 1 (each TP rank sends 1/tp of it)."""
        size = 2 * tokens * self.spec.hidden_size * self.spec.dtype_bytes / self.tp
        return self.cal.p2p_alpha_us * 1e-6 + size / (self._p2p_bw[i] * self.cal.p2p_efficiency)

    # --- host --------------------------------------------------------------------------------------------
    def host_s(self, b: Batch, graph: str) -> float:
        cal = self.cal
        layers = self.spec.num_layers / self.pp
        t = cal.step_overhead_ms * 1e-3 + b.seqs * cal.seq_overhead_us * 1e-6 \
            + b.prompt_tokens * cal.prompt_token_overhead_us * 1e-6
        if graph == GRAPH_FULL:
            t += cal.graph_launch_us * 1e-6
        elif graph == GRAPH_PIECEWISE:
            t += layers * cal.piecewise_launch_per_layer_us * 1e-6
        else:
            moe = self.moe_layers_per_stage * cal.moe_launch_per_layer_us
            ratio = 1.0 if self.eager else cal.compiled_launch_ratio  # torch.compile'd code above the capture sizes
            t += (layers * cal.eager_launch_per_layer_us + moe) * ratio * 1e-6
            if b.prompt_tokens:
                t += layers * cal.prompt_launch_per_layer_us * 1e-6
        return t

    # --- the step ----------------------------------------------------------------------------------------
    def step_time(self, b: Batch, micro: int = 1) -> StepTime:
        """Time of one engine step over batch ``b`` split into ``micro`` pipeline micro-batches.

        With pp > 1 vLLM keeps up to pp micro-batches in flight: a round of ``micro`` micro-batches takes
        max(one pass through every stage, micro x the slowest stage). Results are reused for steps of the
        same shape whose context and attention work agree to 8 significant bits (within 0.8 %; time is close to
        linear in both)."""
        c, a = int(b.context_tokens), int(b.attn_work)
        cs, as_ = max(c.bit_length() - 8, 0), max(a.bit_length() - 8, 0)
        key = (b.tokens, b.seqs, b.prompt_tokens, b.sampled, micro, cs, c >> cs, as_, a >> as_)
        hit = self._step_cache.get(key)
        if hit is None:
            hit = self._step_cache[key] = self._step_time(b, micro)
        return hit

    def _step_time(self, b: Batch, micro: int) -> StepTime:
        graph, padded = self.graph_mode(b)
        share = 1.0 / micro
        tok = padded * share  # graph_mode gives the unpadded count when nothing is graphed
        comp = hbm = comm = 0.0
        stage_times = []
        for st in self.stages:
            t, c, m, x = self.stage_gpu(st, tok, b, share)
            stage_times.append(t)
            comp, hbm, comm = comp + c, hbm + m, comm + x
        if self.pp == 1:
            gpu = stage_times[0]
        else:
            hops = [self.p2p_s(i, tok) for i in range(self.pp - 1)]
            latency = sum(stage_times) + sum(hops)
            slowest = max(t + (hops[i] if i < len(hops) else 0.0) for i, t in enumerate(stage_times))
            gpu = max(latency, micro * slowest)
            comm += sum(hops)
        host = self.host_s(b, graph)
        serial = self.cal.step_serial_ms + (self.cal.prompt_step_serial_ms if b.prompt_tokens else 0.0)
        total = max(gpu, host) + serial * 1e-3
        return StepTime(total, gpu, host, graph, comp, hbm, comm)
