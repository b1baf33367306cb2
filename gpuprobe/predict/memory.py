"""vLLM-faithful startup memory accounting (vLLM 0.26 semantics) -> KV cache blocks, tokens, concurrency.

What vLLM 0.26 does on each worker (``Worker.determine_available_memory``, ``vllm/utils/mem_utils.py``,
``vllm/v1/core/kv_cache_utils.py``):

1. Init the device and NCCL, snapshot memory; ``requested = ceil(total x gpu_memory_utilization)``, and fail
   if free memory is below it (the CUDA context, NCCL, other processes must fit in the rest).
2. Load weights (``Model loading took X GiB``).
3. Profile run: one dummy forward of ``max_num_batched_tokens`` tokens, then a dummy sampler pass over
   ``min(max_num_seqs, max_num_batched_tokens)`` rows of full-vocabulary logits (last PP stage). The torch
   allocator's peak growth is the activation peak; memory that appeared outside torch is ``non_torch``.
4. The V1 model runner (vLLM 0.26 keeps it for most MoE models: ``model_runner``) also subtracts an estimate
   of the CUDA-graph pool unless eager; the V2 runner (dense models) subtracts none.
5. ``available = requested - weights - activation_peak - non_torch [- cudagraph_estimate]``.
6. ``num_blocks = available // page_bytes // layers_on_rank``; the engine takes the minimum over all workers.
   KV tokens = num_blocks x block_size; "Maximum concurrency for L tokens per request" =
   num_blocks / ceil(L / block_size). Startup fails if available <= 0 or if one max_model_len request
   (ceil(L / block_size) blocks on every layer of the rank) needs more than ``available``.

The terms vLLM measures rather than derives (activation peak, non-torch, graph pool) are functions below
driven by ``MemoryCalibration`` so real vLLM logs can set them.

Newer versions differ: 0.33 adds tp 16 to custom all-reduce and can size blocks per attention backend;
hybrid (sliding-window) models are given several KV groups, which this model treats as full attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gpuprobe.predict.calibration import MemoryCalibration
from gpuprobe.predict.model_spec import ModelSpec
from gpuprobe.predict.options import VLLM_VERSION, ResolvedServe
from gpuprobe.predict.params import kv_heads_per_rank, padded_vocab, stage_weight_bytes
from gpuprobe.results.recommendation import StageMemoryInfo

GiB = 1 << 30

STARTUP_USED_BYTES = int(0.61 * GiB)
"""Memory in use before vLLM's baseline snapshot, tp = pp = 1 (CUDA context, cuBLAS): H100 log "Free memory on
device (78.57/79.18 GiB) on startup" (llm-d config_explorer empirical results)."""
STARTUP_USED_PARALLEL_BYTES = int(0.93 * GiB)
"""Extra memory in use before the snapshot on a TP/PP rank (NCCL communicators, custom all-reduce
buffers): 77.64/79.18 GiB free at TP2 in the same source."""


@dataclass
class StageMemory(StageMemoryInfo):
    """One rank of a pipeline stage (all TP ranks of a stage hold the same amounts): the accounting the
    recommendation reports, plus what the KV arithmetic needs."""

    kv_bytes_per_token: int = 0
    """KV bytes one token needs on this rank, all its layers together."""
    page_bytes: int = 0
    """One block of one layer."""


@dataclass
class MemoryPrediction:
    fits: bool
    reason: str | None
    stages: list[StageMemory]
    num_blocks: int
    block_size: int
    kv_cache_tokens: int
    max_concurrency: float
    max_model_len: int
    kv_heads_per_rank: int
    kv_replication: int
    """How many ranks hold a copy of each KV head (1 unless tp > num_kv_heads, or MLA with tp > 1)."""
    settings: ResolvedServe
    vllm_version: str = VLLM_VERSION
    notes: list[str] = field(default_factory=list)


def pp_layer_ranges(num_layers: int, pp: int) -> list[range]:
    """vLLM's ``get_pp_indices``: L // pp layers each, the remainder going one each to the stages just before
    the last (the last stage keeps the LM head, so it gets no extra layer)."""
    base = num_layers // pp
    parts = [base] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    out, start = [], 0
    for n in parts:
        out.append(range(start, start + n))
        start += n
    return out


def kv_bytes_per_token_per_layer(spec: ModelSpec, tp: int, kv_bytes: int) -> int:
    """K and V (or MLA's one latent) of one token in one layer on one rank."""
    if spec.mla is not None:
        return (spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim) * kv_bytes
    return 2 * kv_heads_per_rank(spec, tp) * spec.head_dim * kv_bytes


def forward_activation_bytes(spec: ModelSpec, tp: int, tokens: int, cal: MemoryCalibration) -> int:
    """Peak of live intermediate tensors in one forward over ``tokens`` tokens on one rank.

    Per token, 16-bit: the hidden state, the residual and the normed input of the block (3h) plus the
    largest block's own intermediates - attention: q, k, v and its output ((2 n_q + 2 n_kv_rank) d); dense
    MLP: the gate_up output (2I/tp) and the activation (I/tp); fused MoE: top-k copies of gate_up, activation
    and down outputs, plus fp32 router logits. The intermediates of one layer are freed before the next, so
    the peak is one layer's largest block. Measured on an H200 with vLLM 0.26 (profile run, eager):
    Llama-3.1-8B 110 KB per token (this rule: 110.6), Llama-3.2-1B 61 KB (61.4), Qwen2.5-14B 118-126 KB (113.7).
    """
    h = spec.hidden_size
    if spec.mla is None:
        attn = (2 * spec.num_heads // tp + 2 * kv_heads_per_rank(spec, tp)) * spec.head_dim
    else:
        m = spec.mla
        nh = spec.num_heads // tp
        attn = nh * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.qk_nope_head_dim + 2 * m.v_head_dim)
    mlp = 3 * spec.intermediate_size // tp
    if spec.is_moe:
        k = spec.experts_per_token
        moe = k * (3 * spec.moe_intermediate_size // tp + h) + 3 * spec.shared_expert_intermediate_size // tp
        mlp = max(mlp, moe + 2 * spec.num_experts)  # router logits in fp32 = 2 bf16 slots per expert
    per_token = 3 * h + max(attn, mlp)
    return int(tokens * per_token * spec.dtype_bytes * cal.forward_bytes_per_token_factor)


V2_MOE_ARCHITECTURES = frozenset({"DeepseekV2ForCausalLM", "Qwen2MoeForCausalLM"})
"""MoE architectures vLLM 0.26 runs on its V2 GPU model runner (``DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES``)."""


def model_runner(spec: ModelSpec) -> str:
    """Which GPU model runner vLLM 0.26 picks (``VllmConfig._is_default_v2_model_runner_model``): ``v2`` for
    dense models and a few MoE architectures, ``v1`` for the other MoE models. They account memory differently."""
    return "v2" if not spec.is_moe or spec.architecture in V2_MOE_ARCHITECTURES else "v1"


def sampler_activation_bytes(spec: ModelSpec, rows: int, cal: MemoryCalibration) -> int:
    """Peak of the profile run's dummy sampler over ``rows`` x vocabulary logits."""
    per = cal.sampler_bytes_per_logit if model_runner(spec) == "v2" else cal.sampler_bytes_per_logit_v1
    return int(per * rows * padded_vocab(spec))


def activation_peak_bytes(
    spec: ModelSpec, tp: int, last_stage: bool, first_stage: bool, s: ResolvedServe, cal: MemoryCalibration
) -> int:
    """torch_peak_increase of the profile run on one rank."""
    t = s.max_num_batched_tokens
    fwd = forward_activation_bytes(spec, tp, t, cal)
    if not first_stage:
        fwd += 2 * t * spec.hidden_size * spec.dtype_bytes  # received hidden_states + residual
    peak = fwd
    if last_stage:
        hidden = t * spec.hidden_size * spec.dtype_bytes
        peak = max(fwd, hidden + sampler_activation_bytes(spec, min(s.max_num_seqs, t), cal))
    return peak + cal.activation_fixed_bytes


def non_torch_bytes(tp: int, pp: int, cal: MemoryCalibration) -> int:
    return cal.non_torch_bytes + (cal.non_torch_parallel_bytes if tp * pp > 1 else 0)


def cudagraph_capture_sizes(s: ResolvedServe) -> list[int]:
    """vLLM's default capture sizes: [1, 2, 4] + 8..248 step 8 + 256..max step 16, where
    max = min(2 x max_num_seqs, 512, max_num_batched_tokens)."""
    top = min(2 * s.max_num_seqs, 512, s.max_num_batched_tokens)
    sizes = [i for i in (1, 2, 4) if i <= top]
    sizes += list(range(8, min(top + 1, 256), 8))
    sizes += list(range(256, top + 1, 16))
    return sizes


def cudagraph_estimate_bytes(spec: ModelSpec, s: ResolvedServe, cal: MemoryCalibration) -> int:
    """The CUDA-graph pool estimate vLLM subtracts from the KV budget: the V1 model runner's unless eager; the V2
    runner subtracts none."""
    if s.enforce_eager or model_runner(spec) == "v2":
        return 0
    return cal.cudagraph_fixed_bytes + len(cudagraph_capture_sizes(s)) * cal.cudagraph_bytes_per_capture_size


def predict_memory(
    spec: ModelSpec, tp: int, pp: int, gpu_total_bytes: int, s: ResolvedServe, cal: MemoryCalibration
) -> MemoryPrediction:
    """KV cache capacity of one replica (tp x pp GPUs of ``gpu_total_bytes`` each), or why it cannot start.

    Structural checks (head divisibility, pp > layers, quantized alignment) are in ``layouts.check_layout``.
    """
    ranges = pp_layer_ranges(spec.num_layers, pp)
    requested = math.ceil(gpu_total_bytes * s.gpu_memory_utilization)
    graph = cudagraph_estimate_bytes(spec, s, cal)
    nt = non_torch_bytes(tp, pp, cal)
    per_layer_tok = kv_bytes_per_token_per_layer(spec, tp, s.kv_cache_bytes_per_element)
    page = per_layer_tok * s.block_size
    stages = []
    for i, layers in enumerate(ranges):
        first, last = i == 0, i == pp - 1
        weights = stage_weight_bytes(spec, tp, layers, first, last)
        act = activation_peak_bytes(spec, tp, last, first, s, cal)
        avail = requested - weights - act - nt - graph
        n = len(layers)
        blocks = max(0, avail // page // n) if n else 0
        stages.append(StageMemory(stage=i, first_layer=layers.start, num_layers=n, budget_bytes=requested,
                                  weights_bytes=weights, activation_bytes=act, non_torch_bytes=nt,
                                  cudagraph_bytes=graph, kv_available_bytes=avail, num_blocks=blocks,
                                  kv_bytes_per_token=per_layer_tok * n, page_bytes=page))
    num_blocks = min(st.num_blocks for st in stages)
    blocks_per_req = -(-s.max_model_len // s.block_size)
    kv_heads = kv_heads_per_rank(spec, tp)
    replication = tp if spec.mla is not None else max(1, tp // spec.num_kv_heads)
    pred = MemoryPrediction(
        fits=True, reason=None, stages=stages, num_blocks=num_blocks, block_size=s.block_size,
        kv_cache_tokens=num_blocks * s.block_size, max_concurrency=num_blocks / blocks_per_req,
        max_model_len=s.max_model_len, kv_heads_per_rank=kv_heads, kv_replication=replication, settings=s,
    )
    if spec.sliding_window:
        pred.notes.append(
            f"sliding-window layers (window {spec.sliding_window}) counted as full attention; vLLM's hybrid "
            "KV manager may admit more concurrent requests"
        )
    pred.reason = _startup_failure(spec, tp, pp, gpu_total_bytes, s, stages, blocks_per_req)
    pred.fits = pred.reason is None
    if not pred.fits:
        pred.kv_cache_tokens = 0
        pred.num_blocks = 0
        pred.max_concurrency = 0.0
    return pred


def _startup_failure(
    spec: ModelSpec, tp: int, pp: int, total: int, s: ResolvedServe, stages: list[StageMemory], blocks_per_req: int
) -> str | None:
    used_before = STARTUP_USED_BYTES + (STARTUP_USED_PARALLEL_BYTES if tp * pp > 1 else 0)
    requested = math.ceil(total * s.gpu_memory_utilization)
    if total - used_before < requested:
        return (
            f"free memory at startup ({_gib(total - used_before)} GiB) is below gpu_memory_utilization "
            f"{s.gpu_memory_utilization} x {_gib(total)} GiB; lower --gpu-memory-utilization"
        )
    worst = max(stages, key=lambda st: st.weights_bytes)
    if worst.weights_bytes > total - used_before:
        return f"weights need {_gib(worst.weights_bytes)} GiB per GPU (stage {worst.stage}); CUDA OOM while loading"
    for st in stages:
        if st.kv_available_bytes <= 0:
            return (
                f"no memory left for the KV cache on stage {st.stage}: weights {_gib(st.weights_bytes)} + "
                f"activations {_gib(st.activation_bytes)} + other {_gib(st.non_torch_bytes + st.cudagraph_bytes)} "
                f"GiB exceed {_gib(st.budget_bytes)} GiB"
            )
    for st in stages:
        need = blocks_per_req * st.page_bytes * st.num_layers
        if need > st.kv_available_bytes:
            fit_len = (st.kv_available_bytes // (st.page_bytes * max(st.num_layers, 1))) * s.block_size
            return (
                f"one {s.max_model_len}-token request needs {_gib(need)} GiB of KV cache but only "
                f"{_gib(st.kv_available_bytes)} GiB is available (stage {st.stage}); vLLM's estimated maximum "
                f"model length is {fit_len}: lower --max-model-len"
            )
    return None


def _gib(n: float) -> str:
    return f"{n / GiB:.2f}"
