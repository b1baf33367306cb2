"""The vLLM 0.26 memory model: budget, weights per rank, KV per token, blocks, startup failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprobe.predict.calibration import MemoryCalibration
from gpuprobe.predict.memory import pp_layer_ranges, predict_memory
from gpuprobe.predict.model_spec import load_model_spec
from gpuprobe.predict.options import ServeOptions, resolve_serve

GiB = 1 << 30
H100_CUDA_TOTAL = int(79.18 * GiB)  # what vLLM reports as total on an H100 80GB HBM3


def _predict(configs: Path, name: str, tp: int = 1, pp: int = 1, **serve):
    spec = load_model_spec(configs / name)
    s = resolve_serve(ServeOptions(**serve), H100_CUDA_TOTAL, "NVIDIA H100 80GB HBM3", spec.max_position_embeddings,
                      spec.mla is not None)
    return predict_memory(spec, tp, pp, H100_CUDA_TOTAL, s, MemoryCalibration())


def test_llama_8b_h100_matches_the_real_vllm_log(configs: Path) -> None:
    # vLLM 0.26.0 on the H100 used here (tests/data/vllm-h100-2026-11-25/logs/llama-8b-tp1-eager.log):
    # utilization 0.9, max_model_len 4096, max_num_seqs 64: weights 15.0 GiB, 55.9 GiB available, 457,904 tokens.
    m = _predict(configs, "llama-3.1-8b.json", gpu_memory_utilization=0.9, max_model_len=4096, max_num_seqs=64,
                 max_num_batched_tokens=4096, enforce_eager=True)
    st = m.stages[0]
    assert st.weights_bytes / GiB == pytest.approx(14.99, abs=0.01)
    assert st.kv_available_bytes / GiB == pytest.approx(55.9, rel=0.01)
    assert m.kv_cache_tokens == pytest.approx(457_904, rel=0.01)
    assert m.kv_cache_tokens == m.num_blocks * 16
    assert m.max_concurrency == pytest.approx(m.num_blocks / 256)  # ceil(4096 / 16) blocks per request


def test_defaults_are_vllm_026(configs: Path) -> None:
    m = _predict(configs, "llama-3.1-8b.json")
    assert m.settings.gpu_memory_utilization == 0.92
    assert (m.settings.max_num_seqs, m.settings.max_num_batched_tokens) == (1024, 8192)
    assert m.settings.max_model_len == 131072 and m.block_size == 16
    # The V2 model runner (dense models) subtracts no CUDA-graph estimate: eager and graphs get the same KV.
    eager = _predict(configs, "llama-3.1-8b.json", enforce_eager=True)
    assert eager.stages[0].cudagraph_bytes == 0 == m.stages[0].cudagraph_bytes
    assert eager.kv_cache_tokens == m.kv_cache_tokens
    # MoE models stay on the V1 runner in vLLM 0.26: it subtracts one unless eager.
    moe = _predict(configs, "qwen3-30b-a3b.json")
    moe_eager = _predict(configs, "qwen3-30b-a3b.json", enforce_eager=True)
    assert moe_eager.stages[0].cudagraph_bytes == 0 < moe.stages[0].cudagraph_bytes
    assert moe_eager.kv_cache_tokens > moe.kv_cache_tokens


def test_kv_per_token_and_replication(configs: Path) -> None:
    m1 = _predict(configs, "llama-3.1-8b.json", max_model_len=8192)
    assert m1.stages[0].kv_bytes_per_token == 2 * 32 * 8 * 128 * 2  # 128 KiB per token
    # Qwen2.5-7B has 4 KV heads: at tp 8 each head is held by 2 ranks and capacity stops growing.
    m4 = _predict(configs, "qwen2.5-7b-instruct.json", tp=4, max_model_len=8192)
    m8 = _predict(configs, "qwen2.5-7b-instruct.json", tp=8, max_model_len=8192)
    assert (m4.kv_heads_per_rank, m4.kv_replication) == (1, 1)
    assert (m8.kv_heads_per_rank, m8.kv_replication) == (1, 2)
    assert m8.stages[0].kv_bytes_per_token == m4.stages[0].kv_bytes_per_token
    fp8 = _predict(configs, "qwen2.5-7b-instruct.json", tp=4, max_model_len=8192, kv_cache_dtype="fp8")
    assert fp8.stages[0].kv_bytes_per_token * 2 == m4.stages[0].kv_bytes_per_token


def test_mla_latent_is_replicated(configs: Path) -> None:
    spec = load_model_spec(configs / "deepseek-v3.json")
    s = resolve_serve(ServeOptions(max_model_len=4096), 141 * GiB, "NVIDIA H200", 163840, True)
    m = predict_memory(spec, 8, 2, 141 * GiB, s, MemoryCalibration())
    assert m.block_size == 64 and m.kv_replication == 8
    assert m.stages[0].kv_bytes_per_token == (512 + 64) * 2 * m.stages[0].num_layers


def test_pp_split_follows_get_pp_indices() -> None:
    assert [len(r) for r in pp_layer_ranges(32, 3)] == [11, 11, 10]
    assert [len(r) for r in pp_layer_ranges(80, 3)] == [27, 27, 26]
    assert [len(r) for r in pp_layer_ranges(61, 4)] == [15, 15, 16, 15]


def test_startup_failures(configs: Path) -> None:
    oom = _predict(configs, "llama-3.1-70b.json")
    assert not oom.fits and "weights need" in oom.reason
    too_long = _predict(configs, "llama-3.1-70b.json", tp=2)
    assert not too_long.fits and "131072-token request" in too_long.reason and "estimated maximum" in too_long.reason
    ok = _predict(configs, "llama-3.1-70b.json", tp=2, max_model_len=4096)
    assert ok.fits and ok.kv_cache_tokens > 0
    greedy = _predict(configs, "llama-3.2-1b.json", gpu_memory_utilization=0.999)
    assert not greedy.fits and "free memory at startup" in greedy.reason
