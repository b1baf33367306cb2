"""Exact parameter counts and weight bytes per rank, tensor by tensor, as vLLM shards them.

Sharding follows vLLM's parallel linear layers: column/row-parallel projections are split by tp; K/V
projections are split while ``num_kv_heads >= tp`` and otherwise hold one (replicated) KV head per rank;
MLA's ``q_a_proj``/``kv_a_proj_with_mqa`` are replicated; MoE experts are split along their intermediate
dimension (no expert parallelism); norms, routers and biases of row-parallel layers are replicated.
The vocabulary is padded to a multiple of 64 before it is split (``VocabParallelEmbedding``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuprobe.predict.model_spec import ModelSpec, WeightFormat

VOCAB_PADDING = 64
"""vLLM's DEFAULT_VOCAB_PADDING_SIZE."""


def padded_vocab(spec: ModelSpec) -> int:
    return -(-spec.vocab_size // VOCAB_PADDING) * VOCAB_PADDING


def kv_heads_per_rank(spec: ModelSpec, tp: int) -> int:
    """KV heads each rank holds (vLLM ``get_num_kv_heads``: at least one, replicated when tp > n_kv)."""
    if spec.mla is not None:
        return 1
    return max(1, spec.num_kv_heads // tp)


def quantized_bytes_per_param(fmt: WeightFormat) -> float:
    """Bytes per weight of a quantized linear layer, scales and zero points included.

    FP8: 1 byte (+ one fp32 scale per 128 x 128 block when block-scaled). AWQ/GPTQ 4-bit, group g:
    0.5 byte packed weight + a 16-bit scale and a 4-bit zero point per g inputs (GPTQ's g_idx, 4 bytes
    per input row, is below 0.1 % and left out).
    """
    if fmt.kind == "fp8":
        return 1.0 + (4.0 / (fmt.block_size[0] * fmt.block_size[1]) if fmt.block_size else 0.0)
    if fmt.kind in ("awq", "gptq"):
        g = fmt.group_size or 4096
        return 0.5 + 2.5 / g
    return 2.0


@dataclass(frozen=True)
class LayerShard:
    """Parameters of one decoder layer held by one TP rank, by storage class."""

    linear: int
    """Linear-layer weights (quantized when the model is)."""
    plain: int
    """Norms, biases, routers: always 16-bit."""
    expert_linear: int = 0
    """Routed-expert weights (quantized when the model is)."""
    active_linear: int = 0
    """Linear weights one token actually multiplies through (dense part + top-k experts)."""

    def bytes(self, fmt: WeightFormat) -> float:
        return (self.linear + self.expert_linear) * quantized_bytes_per_param(fmt) + self.plain * 2


def layer_shard(spec: ModelSpec, index: int, tp: int) -> LayerShard:
    """What one TP rank of decoder layer ``index`` holds."""
    h = spec.hidden_size
    linear = 0
    plain = spec.norms_per_layer * h
    if spec.mla is None:
        q_heads = spec.num_heads // tp
        kv = kv_heads_per_rank(spec, tp)
        d = spec.head_dim
        linear += h * q_heads * d + 2 * h * kv * d + q_heads * d * h
        if spec.qkv_bias:
            plain += (q_heads + 2 * kv) * d
        if spec.qk_norm:
            plain += 2 * d
    else:
        m = spec.mla
        nh = spec.num_heads // tp
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank:
            linear += h * m.q_lora_rank + m.q_lora_rank * nh * qk  # q_a_proj (replicated) + q_b_proj
            plain += m.q_lora_rank
        else:
            linear += h * nh * qk
        linear += h * (m.kv_lora_rank + m.qk_rope_head_dim)  # kv_a_proj_with_mqa (replicated)
        plain += m.kv_lora_rank
        linear += m.kv_lora_rank * nh * (m.qk_nope_head_dim + m.v_head_dim) + nh * m.v_head_dim * h
    active = linear
    expert_linear = 0
    if spec.layer_is_moe(index):
        per_expert = 3 * h * spec.moe_intermediate_size // tp
        expert_linear = spec.num_experts * per_expert
        plain += spec.num_experts * h  # router
        if spec.family == "deepseek_v3":
            plain += spec.num_experts  # e_score_correction_bias
        shared = 3 * h * spec.shared_expert_intermediate_size // tp
        linear += shared
        if spec.shared_expert_gate:
            plain += h
        active += shared + spec.experts_per_token * per_expert
    else:
        mlp = 3 * h * spec.intermediate_size // tp
        linear += mlp
        active += mlp
    return LayerShard(linear=linear, plain=plain, expert_linear=expert_linear, active_linear=active)


def embedding_params_per_rank(spec: ModelSpec, tp: int) -> int:
    return -(-padded_vocab(spec) // tp) * spec.hidden_size


@dataclass(frozen=True)
class ParamTotals:
    """Whole-model parameter counts (unpadded vocabulary, as model cards quote them)."""

    total: int
    embedding: int
    lm_head: int
    layers: int
    active_per_token: int
    """Parameters one token multiplies through in the decoder layers + LM head (MoE: top-k experts)."""


def param_totals(spec: ModelSpec) -> ParamTotals:
    layers = 0
    active = 0
    for i in range(spec.num_layers):
        s = layer_shard(spec, i, 1)
        layers += s.linear + s.plain + s.expert_linear
        active += s.active_linear
    emb = spec.vocab_size * spec.hidden_size
    head = 0 if spec.tie_word_embeddings else emb
    total = layers + emb + head + spec.hidden_size  # + final norm
    return ParamTotals(total=total, embedding=emb, lm_head=head, layers=layers, active_per_token=active + emb)


def rope_cache_bytes(spec: ModelSpec) -> int:
    """vLLM's cos/sin cache: max_position_embeddings x rotary_dim in the model dtype, one per rank."""
    return spec.max_position_embeddings * spec.rotary_dim * spec.dtype_bytes


def stage_weight_bytes(spec: ModelSpec, tp: int, layers: range, first: bool, last: bool) -> int:
    """Bytes of weights one rank of a pipeline stage holds (what vLLM logs as 'Model loading took')."""
    total = 0.0
    for i in layers:
        total += layer_shard(spec, i, tp).bytes(spec.weights)
    emb = embedding_params_per_rank(spec, tp) * spec.dtype_bytes
    if first:
        total += emb
    if last:
        # LM head (its own copy on the last stage even when tied, unless the stage is also the first) + norm.
        if not (first and spec.tie_word_embeddings):
            total += emb
        total += spec.hidden_size * spec.dtype_bytes
    return int(total) + rope_cache_bytes(spec)
