"""ModelSpec from the published config.json files in tests/data/configs (see the README there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuprobe.errors import BadModelConfig
from gpuprobe.predict.model_spec import load_model_spec, model_spec_from_dict
from gpuprobe.predict.params import param_totals, stage_weight_bytes

# Totals as the model cards / papers quote them (billions of parameters).
KNOWN_TOTALS = {
    "llama-3.2-1b.json": 1.24,
    "llama-3.1-8b.json": 8.03,
    "llama-3.1-70b.json": 70.55,
    "mistral-7b-v0.3.json": 7.25,
    "qwen2.5-7b-instruct.json": 7.62,
    "qwen3-8b.json": 8.19,
    "gemma-2-9b.json": 9.24,
    "mixtral-8x7b-v0.1.json": 46.70,
    "qwen3-30b-a3b.json": 30.53,
    "deepseek-v3.json": 671.03,
}


@pytest.mark.parametrize("name,billions", sorted(KNOWN_TOTALS.items()))
def test_parameter_totals_match_published(configs: Path, name: str, billions: float) -> None:
    spec = load_model_spec(configs / name)
    assert param_totals(spec).total / 1e9 == pytest.approx(billions, abs=0.01)


def test_llama_8b_weights_match_vllm_log(configs: Path) -> None:
    # vLLM on H100: "Model loading took 14.99 GiB" for Llama-3.1-8B (llm-d config_explorer empirical results).
    spec = load_model_spec(configs / "llama-3.1-8b.json")
    assert stage_weight_bytes(spec, 1, range(32), True, True) / 2**30 == pytest.approx(14.99, abs=0.01)


def test_families_and_features(configs: Path) -> None:
    assert load_model_spec(configs / "llama-3.2-1b.json").tie_word_embeddings
    assert load_model_spec(configs / "qwen2.5-7b-instruct.json").qkv_bias
    assert load_model_spec(configs / "qwen3-8b.json").qk_norm
    gemma = load_model_spec(configs / "gemma-2-9b.json")
    assert gemma.head_dim == 256 and gemma.norms_per_layer == 4 and gemma.dtype == "bfloat16"
    mix = load_model_spec(configs / "mixtral-8x7b-v0.1.json")
    assert (mix.num_experts, mix.experts_per_token) == (8, 2)
    ds = load_model_spec(configs / "deepseek-v3.json")
    assert ds.mla is not None and ds.mla.kv_lora_rank == 512 and ds.dense_layers == (0, 1, 2)
    assert ds.weights.kind == "fp8" and ds.weights.block_size == (128, 128)


def test_quantized_formats(configs: Path) -> None:
    awq = load_model_spec(configs / "qwen2.5-7b-instruct-awq.json")
    gptq = load_model_spec(configs / "qwen2.5-7b-instruct-gptq-int4.json")
    fp8 = load_model_spec(configs / "qwen3-8b-fp8.json")
    assert (awq.weights.kind, awq.weights.group_size) == ("awq", 128)
    assert (gptq.weights.kind, gptq.weights.bits) == ("gptq", 4)
    assert fp8.weights.kind == "fp8"
    bf16 = load_model_spec(configs / "qwen2.5-7b-instruct.json")
    full = stage_weight_bytes(bf16, 1, range(28), True, True)
    q4 = stage_weight_bytes(awq, 1, range(28), True, True)
    assert 0.33 < q4 / full < 0.40  # 4-bit layers, 16-bit embeddings and LM head
    forced = load_model_spec(configs / "llama-3.1-8b.json", quantization="fp8")
    assert forced.weights.kind == "fp8"


@pytest.mark.parametrize(
    "content",
    [
        "[1, 2, 3]",
        "not json at all",
        '{"architectures": ["LlamaForCausalLM"], "hidden_size": "4096"}',
        '{"architectures": ["LlamaForCausalLM"], "hidden_size": -1, "num_hidden_layers": 2}',
        '{"architectures": ["LlamaForCausalLM"], "hidden_size": NaN}',
        '{"architectures": ["GPT2LMHeadModel"], "n_embd": 768}',
        '{"architectures": "LlamaForCausalLM"}',
        '{"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 1000000000}',
        '{"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 2, '
        '"num_attention_heads": 32, "num_key_value_heads": 7, "vocab_size": 10, "intermediate_size": 10}',
        "[" * 100000,
    ],
)
def test_hostile_configs_raise_one_line(tmp_path: Path, content: str) -> None:
    p = tmp_path / "config.json"
    p.write_text(content)
    with pytest.raises(BadModelConfig) as exc:
        load_model_spec(tmp_path)
    assert "\n" not in str(exc.value)


def test_unknown_architecture_lists_supported() -> None:
    with pytest.raises(BadModelConfig, match=r"supported: .*LlamaForCausalLM"):
        model_spec_from_dict({"architectures": ["FalconForCausalLM"]})


def test_huge_and_missing_files(tmp_path: Path) -> None:
    big = tmp_path / "config.json"
    big.write_text(json.dumps({"pad": "x" * (5 << 20)}))
    with pytest.raises(BadModelConfig, match="at most"):
        load_model_spec(big)
    with pytest.raises(BadModelConfig, match="does not exist"):
        load_model_spec(tmp_path / "nope")
