"""A model's ``config.json`` -> ModelSpec: the shapes the memory and performance models need.

Supported: dense decoders (Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma2, Gemma3 text), MoE (Mixtral,
Qwen2-MoE, Qwen3-MoE) and DeepSeek-V2/V3 (MLA attention + MoE). Weight formats: 16-bit, FP8 and 4-bit
AWQ/GPTQ, read from ``quantization_config`` or forced with ``quantization=``.

Anything odd in the file (not JSON, not an object, wrong types, negative or absurd sizes, NaN, a file
over 4 MiB) raises ``BadModelConfig`` with one line. Parameter counts are exact per tensor (see
``gpuprobe.predict.params``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gpuprobe.errors import BadModelConfig
from gpuprobe.results.io import parse_json, read_input

MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""config.json files are a few KiB; anything larger is refused before parsing."""

_LIMIT = 1 << 24
"""Upper bound for any single dimension (16 M); real models are far below (largest vocab ~ 262 k)."""
MAX_LAYERS = 1024
"""Physically sensible maxima of the dimensions the predictions loop or multiply over (the largest released
models: 126 layers, hidden 16,384 / 18,432, 128 heads, vocab 262 k, 256 experts); a config beyond them is damaged
and refused in one line instead of making ``recommend`` run for hours."""
MAX_HIDDEN = 1 << 17
MAX_HEADS = 4096
MAX_HEAD_DIM = 8192
MAX_VOCAB = 1 << 22
MAX_INTERMEDIATE = 1 << 20
MAX_EXPERTS = 4096

DENSE_ARCHS: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "GemmaForCausalLM": "gemma",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
}
MOE_ARCHS: dict[str, str] = {
    "MixtralForCausalLM": "mixtral",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe",
}
MLA_ARCHS: dict[str, str] = {
    "DeepseekV2ForCausalLM": "deepseek_v2",
    "DeepseekV3ForCausalLM": "deepseek_v3",
}
SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(sorted({**DENSE_ARCHS, **MOE_ARCHS, **MLA_ARCHS}))

QUANT_FORMATS = ("fp8", "awq", "gptq")
"""Weight formats accepted by ``quantization=`` (None: 16-bit or whatever config.json says)."""


@dataclass(frozen=True)
class MlaDims:
    """Multi-head latent attention (DeepSeek-V2/V3) projection sizes."""

    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class WeightFormat:
    """How linear-layer weights are stored. Embeddings, LM head, norms and routers stay 16-bit."""

    kind: str
    """``bf16``, ``fp16``, ``fp8``, ``awq`` or ``gptq``."""
    bits: int = 16
    group_size: int | None = None
    """Quantization group (AWQ/GPTQ) along the input dimension."""
    block_size: tuple[int, int] | None = None
    """FP8 block scaling [n, k] (e.g. DeepSeek-V3 and Qwen3-FP8: 128 x 128); None for per-tensor/channel."""

    @property
    def quantized(self) -> bool:
        return self.kind in QUANT_FORMATS

    @property
    def vllm_quantization(self) -> str | None:
        """The ``--quantization`` value vLLM would pick itself (None for 16-bit)."""
        return self.kind if self.quantized else None


@dataclass(frozen=True)
class ModelSpec:
    """Shapes of a decoder-only model, as vLLM builds it."""

    name: str
    architecture: str
    family: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    """Dense MLP width (for MoE models: the width of dense layers, if any)."""
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    dtype: str
    """Activation/KV dtype vLLM uses with ``--dtype auto``: ``bfloat16`` or ``float16``."""
    weights: WeightFormat
    qkv_bias: bool = False
    qk_norm: bool = False
    norms_per_layer: int = 2
    rotary_dim: int = 0
    """Width of the cached rotary table (head_dim, or qk_rope_head_dim for MLA)."""
    sliding_window: int | None = None
    # MoE
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    """Total width of the always-on shared expert(s) (0 if none)."""
    shared_expert_gate: bool = False
    dense_layers: tuple[int, ...] = ()
    """Indices of layers that use the dense MLP in an MoE model."""
    mla: MlaDims | None = None

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def dtype_bytes(self) -> int:
        return 2

    def layer_is_moe(self, index: int) -> bool:
        return self.is_moe and index not in self.dense_layers

    def with_quantization(self, quantization: str | None) -> ModelSpec:
        """The same model stored in another weight format (``--quantization``)."""
        if quantization is None:
            return self
        return replace(self, weights=_forced_format(quantization))


def load_model_spec(path: str | Path, quantization: str | None = None) -> ModelSpec:
    """Read ``config.json`` (a path to the file or to a model directory) into a ModelSpec."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.exists():
        hint = "pass a model directory or its config.json"
        raise BadModelConfig(f"model config {p} does not exist", hint=hint)
    if p.is_file() and p.stat().st_size > MAX_CONFIG_BYTES:
        raise BadModelConfig(f"model config {p} is {p.stat().st_size} bytes; a config.json is at most "
                             f"{MAX_CONFIG_BYTES >> 20} MiB")
    data = parse_json(read_input(p, "model config", BadModelConfig), f"model config {p}", BadModelConfig)
    default_name = p.parent.name if p.name == "config.json" else p.stem
    return model_spec_from_dict(data, name=default_name, quantization=quantization)


def model_spec_from_dict(data: Any, name: str = "model", quantization: str | None = None) -> ModelSpec:
    """Build a ModelSpec from parsed config.json contents (validating every field used)."""
    if not isinstance(data, dict):
        raise BadModelConfig(f"config.json must hold a JSON object, not {type(data).__name__}")
    cfg = _Reader(data)
    if isinstance(data.get("text_config"), dict) and "hidden_size" not in data:
        cfg = _Reader(data["text_config"])  # Gemma3-style wrapper; architectures stay on the outer object
    arch = _architecture(data)
    family = {**DENSE_ARCHS, **MOE_ARCHS, **MLA_ARCHS}[arch]

    hidden = cfg.integer("hidden_size", maximum=MAX_HIDDEN)
    layers = cfg.integer("num_hidden_layers", maximum=MAX_LAYERS)
    heads = cfg.integer("num_attention_heads", maximum=MAX_HEADS)
    kv_heads = cfg.integer("num_key_value_heads", default=heads, maximum=MAX_HEADS)
    if kv_heads > heads or heads % kv_heads:
        raise BadModelConfig(f"num_key_value_heads={kv_heads} must divide num_attention_heads={heads}")
    head_dim = cfg.integer("head_dim", default=0, maximum=MAX_HEAD_DIM) or (hidden // heads)
    if hidden % heads and not cfg.has("head_dim"):
        raise BadModelConfig(f"hidden_size={hidden} is not divisible by num_attention_heads={heads}")
    vocab = cfg.integer("vocab_size", maximum=MAX_VOCAB)
    max_pos = cfg.integer("max_position_embeddings", default=cfg.integer("max_seq_len", default=4096))
    tie = cfg.flag("tie_word_embeddings", default=family in ("gemma", "gemma2", "gemma3"))
    intermediate = cfg.integer("intermediate_size", default=0, minimum=0, maximum=MAX_INTERMEDIATE)
    dtype = _dtype(cfg.text("torch_dtype", default=None) or cfg.text("dtype", default=None), family)
    weights = _weight_format(data.get("quantization_config"), dtype) if quantization is None else None
    if quantization is not None:
        weights = _forced_format(quantization)
    assert weights is not None

    kw: dict[str, Any] = {}
    if family in ("qwen2", "qwen2_moe"):
        kw["qkv_bias"] = True
    if family in ("qwen3", "qwen3_moe", "gemma3"):
        kw["qk_norm"] = True
    if family in ("gemma2", "gemma3"):
        kw["norms_per_layer"] = 4
    if cfg.flag("attention_bias", default=False):
        kw["qkv_bias"] = True
    window = cfg.integer("sliding_window", default=0, minimum=0) if cfg.get("sliding_window") is not None else 0
    if window and (family in ("gemma2", "gemma3") or cfg.flag("use_sliding_window", default=family == "llama")):
        kw["sliding_window"] = window

    if family in MOE_ARCHS.values():
        kw.update(_moe_fields(cfg, family, layers))
        if family != "mixtral" and not intermediate:
            intermediate = kw["moe_intermediate_size"]
    mla = None
    if family in MLA_ARCHS.values():
        mla = MlaDims(
            q_lora_rank=cfg.integer("q_lora_rank", default=0, minimum=0) or None,
            kv_lora_rank=cfg.integer("kv_lora_rank"),
            qk_nope_head_dim=cfg.integer("qk_nope_head_dim"),
            qk_rope_head_dim=cfg.integer("qk_rope_head_dim"),
            v_head_dim=cfg.integer("v_head_dim"),
        )
        kw.update(_deepseek_moe_fields(cfg, layers))
        head_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        kv_heads = heads
    if intermediate <= 0:
        raise BadModelConfig("config.json has no intermediate_size (the MLP width)")
    rotary = mla.qk_rope_head_dim if mla else int(head_dim * cfg.number("partial_rotary_factor", default=1.0))
    return ModelSpec(
        name=str(cfg.get("_name_or_path") or name)[:200] or name,
        architecture=arch,
        family=family,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
        tie_word_embeddings=tie,
        dtype=dtype,
        weights=weights,
        rotary_dim=rotary,
        mla=mla,
        **kw,
    )


def _architecture(data: dict[str, Any]) -> str:
    archs = data.get("architectures")
    supported = ", ".join(SUPPORTED_ARCHITECTURES)
    if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
        raise BadModelConfig(f"config.json has no 'architectures' list; supported: {supported}")
    for a in archs:
        if a in DENSE_ARCHS or a in MOE_ARCHS or a in MLA_ARCHS:
            return a
    shown = ", ".join(a[:60] for a in archs[:3])
    raise BadModelConfig(f"unsupported architecture {shown}; supported: {supported}")


def _moe_fields(cfg: _Reader, family: str, layers: int) -> dict[str, Any]:
    if family == "mixtral":
        experts = cfg.integer("num_local_experts", maximum=MAX_EXPERTS)
        return {
            "num_experts": experts,
            "experts_per_token": cfg.integer("num_experts_per_tok", maximum=experts),
            "moe_intermediate_size": cfg.integer("intermediate_size", maximum=MAX_INTERMEDIATE),
        }
    experts = cfg.integer("num_experts", maximum=MAX_EXPERTS)
    out: dict[str, Any] = {
        "num_experts": experts,
        "experts_per_token": cfg.integer("num_experts_per_tok", maximum=experts),
        "moe_intermediate_size": cfg.integer("moe_intermediate_size", maximum=MAX_INTERMEDIATE),
    }
    if family == "qwen2_moe":
        out["shared_expert_intermediate_size"] = cfg.integer("shared_expert_intermediate_size", default=0, minimum=0)
        out["shared_expert_gate"] = out["shared_expert_intermediate_size"] > 0
    dense = set(cfg.int_list("mlp_only_layers", default=[]))
    step = cfg.integer("decoder_sparse_step", default=1)
    dense |= {i for i in range(layers) if (i + 1) % step != 0}
    out["dense_layers"] = tuple(sorted(i for i in dense if 0 <= i < layers))
    return out


def _deepseek_moe_fields(cfg: _Reader, layers: int) -> dict[str, Any]:
    experts = cfg.integer("n_routed_experts", default=0, minimum=0, maximum=MAX_EXPERTS)
    if not experts:
        return {}
    first_dense = cfg.integer("first_k_dense_replace", default=0, minimum=0)
    freq = cfg.integer("moe_layer_freq", default=1)
    dense = tuple(i for i in range(layers) if i < first_dense or i % freq != 0)
    moe_inter = cfg.integer("moe_intermediate_size", maximum=MAX_INTERMEDIATE)
    return {
        "num_experts": experts,
        "experts_per_token": cfg.integer("num_experts_per_tok", maximum=experts),
        "moe_intermediate_size": moe_inter,
        "shared_expert_intermediate_size": cfg.integer("n_shared_experts", default=0, minimum=0) * moe_inter,
        "dense_layers": dense,
    }


def _dtype(value: str | None, family: str) -> str:
    if value in (None, "bfloat16", "bf16"):
        return "bfloat16"
    if value in ("float16", "fp16", "half"):
        return "float16"
    if value in ("float32", "fp32", "float"):
        # vLLM runs float32 checkpoints in 16 bits: bfloat16 for Gemma2/3, float16 otherwise.
        return "bfloat16" if family in ("gemma2", "gemma3") else "float16"
    raise BadModelConfig(f"torch_dtype {str(value)[:40]!r} is not supported (bfloat16, float16 or float32)")


def _weight_format(qc: Any, dtype: str) -> WeightFormat:
    base = WeightFormat("bf16" if dtype == "bfloat16" else "fp16")
    if qc is None:
        return base
    if not isinstance(qc, dict):
        raise BadModelConfig("quantization_config must be an object")
    q = _Reader(qc, where="quantization_config.")
    method = (q.text("quant_method", default="") or "").lower()
    if method == "fp8":
        block = q.int_list("weight_block_size", default=[])
        if len(block) == 2 and not all(block):
            raise BadModelConfig(f"quantization_config.weight_block_size={block} must be two sizes >= 1")
        return WeightFormat("fp8", 8, block_size=(block[0], block[1]) if len(block) == 2 else None)
    if method in ("awq", "gptq"):
        bits = q.integer("bits", default=q.integer("w_bit", default=4))
        if bits != 4:
            raise BadModelConfig(f"{method} with {bits} bits is not supported (4-bit AWQ/GPTQ only)")
        group = q.integer("group_size", default=q.integer("q_group_size", default=128, minimum=-1), minimum=-1)
        if group == 0:
            raise BadModelConfig("quantization_config.group_size=0 must be -1 (per channel) or a size >= 1")
        return WeightFormat(method, 4, group_size=group if group > 0 else None)
    if method == "compressed-tensors":
        return _compressed_tensors(qc)
    raise BadModelConfig(
        f"quantization method {method[:40]!r} is not supported; supported: fp8, awq, gptq, compressed-tensors fp8"
    )


def _compressed_tensors(qc: dict[str, Any]) -> WeightFormat:
    groups = qc.get("config_groups")
    if isinstance(groups, dict):
        for group in groups.values():
            w = group.get("weights") if isinstance(group, dict) else None
            if isinstance(w, dict) and w.get("type") == "float" and w.get("num_bits") == 8:
                return WeightFormat("fp8", 8)
            if isinstance(w, dict) and w.get("type") == "int" and w.get("num_bits") == 4:
                gs = w.get("group_size")
                return WeightFormat("gptq", 4, group_size=gs if isinstance(gs, int) and gs > 0 else None)
    raise BadModelConfig("compressed-tensors quantization_config is not FP8 or 4-bit integer; not supported")


def _forced_format(quantization: str) -> WeightFormat:
    q = quantization.lower()
    if q == "fp8":
        return WeightFormat("fp8", 8)
    if q in ("awq", "gptq", "awq_marlin", "gptq_marlin"):
        return WeightFormat(q.split("_")[0], 4, group_size=128)
    supported = ", ".join(QUANT_FORMATS)
    raise BadModelConfig(f"--quantization {quantization[:40]!r} is not supported; use one of {supported}")


class _Reader:
    """Typed, bounded access to a config dict; every failure is one BadModelConfig line."""

    def __init__(self, data: dict[str, Any], where: str = "") -> None:
        self.data = data
        self.where = where

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def integer(self, key: str, default: int | None = None, minimum: int = 1, maximum: int = _LIMIT) -> int:
        v = self.data.get(key)
        if v is None:
            if default is None:
                raise BadModelConfig(f"config.json has no {self.where}{key}")
            return default
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise BadModelConfig(f"{self.where}{key} must be an integer, not {str(v)[:40]!r}")
        if not minimum <= v <= maximum:
            raise BadModelConfig(f"{self.where}{key}={v} is out of range ({minimum}..{maximum})")
        return v

    def number(self, key: str, default: float) -> float:
        v = self.data.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not 0 < v <= 1e6:
            raise BadModelConfig(f"{self.where}{key} must be a positive number, not {str(v)[:40]!r}")
        return float(v)

    def flag(self, key: str, default: bool) -> bool:
        v = self.data.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise BadModelConfig(f"{self.where}{key} must be true or false, not {str(v)[:40]!r}")
        return v

    def text(self, key: str, default: str | None) -> str | None:
        v = self.data.get(key)
        if v is None:
            return default
        if not isinstance(v, str):
            raise BadModelConfig(f"{self.where}{key} must be a string, not {str(v)[:40]!r}")
        return v

    def int_list(self, key: str, default: list[int]) -> list[int]:
        v = self.data.get(key)
        if v is None:
            return default
        if not isinstance(v, list) or len(v) > 4096:
            raise BadModelConfig(f"{self.where}{key} must be a list of integers")
        out = []
        for x in v:
            if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= _LIMIT:
                raise BadModelConfig(f"{self.where}{key} must be a list of integers")
            out.append(x)
        return out
