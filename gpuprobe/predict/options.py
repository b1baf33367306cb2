"""What the predictor is asked: the vLLM serve settings (ServeOptions); the load is ``traffic.Traffic``.

Defaults are vLLM 0.26.0's own (``vllm/config/cache.py`` gpu_memory_utilization 0.92;
``EngineArgs.get_batch_defaults``: GPUs with >= 70 GiB that are not A100 get max_num_batched_tokens 8192
(``vllm serve``) / 16384 (offline ``LLM``) and max_num_seqs 1024; other GPUs 2048 / 8192 and 256).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gpuprobe.errors import UsageError

VLLM_VERSION = "0.26.0"
"""The vLLM release whose startup accounting the memory model follows."""
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92
"""0.92 since vLLM 0.22 (0.90 before)."""
DEFAULT_BLOCK_SIZE = 16
MLA_BLOCK_SIZE = 64
"""FlashMLA (DeepSeek MLA on Hopper) requires 64-token blocks."""
_GiB = 1 << 30


KvCacheDtype = Literal["auto", "fp8"]

@dataclass
class ServeOptions:
    """vLLM flags that change memory or speed; None means "vLLM's default for this GPU and model"."""

    gpu_memory_utilization: float | None = None
    """Fraction of the GPU's total memory vLLM may use (``--gpu-memory-utilization``)."""
    max_model_len: int | None = None
    """Longest request (prompt + output) in tokens; default: the model's max_position_embeddings."""
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    block_size: int | None = None
    kv_cache_dtype: KvCacheDtype = "auto"
    enforce_eager: bool = False
    quantization: str | None = None
    usage_context: Literal["serve", "llm"] = "serve"
    """``serve`` (``vllm serve``) or ``llm`` (offline ``vllm.LLM``): they get different batch defaults."""

    def __post_init__(self) -> None:
        u = self.gpu_memory_utilization
        if u is not None and not 0 < u <= 1:
            raise UsageError(f"--gpu-memory-utilization must be in (0, 1], not {u}")
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "block_size"):
            v = getattr(self, name)
            if v is not None and not 1 <= v <= 1 << 24:
                raise UsageError(f"--{name.replace('_', '-')} must be between 1 and {1 << 24}, not {v}")
        if self.kv_cache_dtype not in ("auto", "fp8"):
            raise UsageError(f"--kv-cache-dtype must be auto or fp8, not {self.kv_cache_dtype!r}")


@dataclass(frozen=True)
class ResolvedServe:
    """ServeOptions with every default filled in for one GPU type and model."""

    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    kv_cache_bytes_per_element: int
    enforce_eager: bool


def resolve_serve(
    opts: ServeOptions, gpu_total_bytes: int, gpu_name: str, model_max_len: int, mla: bool
) -> ResolvedServe:
    """Fill in vLLM's defaults (see the module docstring) for a GPU of ``gpu_total_bytes`` named ``gpu_name``."""
    big = gpu_total_bytes >= 70 * _GiB and "a100" not in gpu_name.lower()
    if big:
        tokens = 8192 if opts.usage_context == "serve" else 16384
        seqs = 1024
    else:
        tokens = 2048 if opts.usage_context == "serve" else 8192
        seqs = 256
    max_num_seqs = opts.max_num_seqs or seqs
    max_num_batched_tokens = opts.max_num_batched_tokens or max(tokens, max_num_seqs)
    if max_num_batched_tokens < max_num_seqs:
        raise UsageError(
            f"--max-num-batched-tokens ({max_num_batched_tokens}) must be >= --max-num-seqs ({max_num_seqs}), "
            "as vLLM requires"
        )
    return ResolvedServe(
        gpu_memory_utilization=opts.gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION,
        max_model_len=opts.max_model_len or model_max_len,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        block_size=opts.block_size or (MLA_BLOCK_SIZE if mla else DEFAULT_BLOCK_SIZE),
        kv_cache_bytes_per_element=1 if opts.kv_cache_dtype == "fp8" else 2,
        enforce_eager=opts.enforce_eager,
    )
