"""Served validation: start ``vllm serve`` for a layout and drive it as ``vllm bench serve`` would.

The server loads dummy weights from a directory holding the model's ``config.json`` and a synthetic
word-level tokenizer in its ``tokenizer/`` folder (token ``i`` is the word ``t{i}``, so a prompt of N random
words is exactly N tokens and every streamed token decodes to text). The prompt tokens the server counted are recorded
per request (``RequestTimes.input_tokens``), and predictions use those. Requests go through the OpenAI completions API
with streaming, so the figures include everything a client of a real server waits for: HTTP, tokenizing,
queueing in the engine, detokenizing and streaming back.
"""

from __future__ import annotations

import json
import math
import random
import socket
from pathlib import Path
from typing import Any

from gpuprobe.results.validation import RequestTimes, ValidationLayout, Workload, WorkloadResult
from gpuprobe.validate.loadgen import LoadResult
from gpuprobe.validate.worker import latency_stat

SERVED_NAME = "gpuprobe-model"
HOST = "127.0.0.1"
MAX_PROMPT_ID = 32000
"""Prompt words are drawn from token ids [1, min(vocab, 32000))."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
"""The tokenizer's special tokens: spelled unlike any word, so none is ever found inside a prompt word (a
special token named ``t1`` would split the word ``t17`` into two tokens)."""


def tokenizer_dir(model_dir: Path) -> Path:
    """Where the synthetic tokenizer lives: a folder of its own, because ``transformers`` picks a tokenizer
    class from the ``model_type`` of a ``config.json`` beside it (a Qwen2 config would load ``Qwen2Tokenizer``,
    which finds no merges in a word-level vocabulary and turns every prompt into 0 tokens)."""
    return model_dir / "tokenizer"


def write_tokenizer(model_dir: Path, vocab_size: int) -> Path:
    """A word-level tokenizer of ``vocab_size`` entries, split on whitespace, no special tokens added to prompts:
    word ``t{i}`` is token i for i < vocab_size - 3, and the last three ids are ``<unk>``, ``<s>`` and ``</s>``.
    What ``transformers``' fast tokenizer loads from ``tokenizer.json``; returns the folder."""
    out = tokenizer_dir(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    words = vocab_size - len(SPECIAL_TOKENS)
    vocab = {f"t{i}": i for i in range(words)}
    vocab.update({tok: words + k for k, tok in enumerate(SPECIAL_TOKENS)})
    unk, bos, eos = SPECIAL_TOKENS
    spec: dict[str, Any] = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None,
        "decoder": None, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": unk},
    }  # fmt: skip
    (out / "tokenizer.json").write_text(json.dumps(spec))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": unk, "bos_token": bos, "eos_token": eos,
        "model_max_length": 1 << 30, "add_bos_token": False, "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }  # fmt: skip
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    (out / "config.json").write_text(json.dumps({"model_type": "llama"}))  # a class-neutral model type
    return out


def draw_lengths(wl: Workload, rng: random.Random) -> list[tuple[int, int]]:
    """(prompt tokens, output tokens) per request, uniform in [L(1 − r), L(1 + r)] as ``vllm bench serve``."""
    r = wl.range_ratio

    def one(n: int) -> int:
        if not r:
            return n
        return rng.randint(max(1, math.floor(n * (1 - r))), math.ceil(n * (1 + r)))

    return [(one(wl.input_len), one(wl.output_len)) for _ in range(wl.num_requests)]


def prompts(wl: Workload, vocab_size: int, rng: random.Random) -> list[tuple[str, int, int]]:
    hi = max(2, min(vocab_size - len(SPECIAL_TOKENS), MAX_PROMPT_ID))
    return [(" ".join(f"t{rng.randrange(1, hi)}" for _ in range(n_in)), n_in, n_out)
            for n_in, n_out in draw_lengths(wl, rng)]


def serve_args(layout: ValidationLayout, model_dir: Path, port: int) -> list[str]:
    """``vllm serve`` arguments for the layout: vLLM's defaults unless the layout sets a value."""
    args = [
        "serve", str(model_dir), "--served-model-name", SERVED_NAME, "--host", HOST, "--port", str(port),
        "--load-format", "dummy", "--tokenizer", str(tokenizer_dir(model_dir)), "--generation-config", "vllm",
        "--tensor-parallel-size", str(layout.tp), "--pipeline-parallel-size", str(layout.pp),
    ]  # fmt: skip
    for name in ("max_model_len", "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens"):
        value = getattr(layout, name)
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    if layout.enforce_eager:
        args.append("--enforce-eager")
    if layout.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", layout.kv_cache_dtype]
    if layout.dtype != "auto":
        args += ["--dtype", layout.dtype]
    for key, value in layout.extra_engine_args.items():
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            args.append(flag)
        elif value is not False and value is not None:
            args += [flag, json.dumps(value) if isinstance(value, dict | list) else str(value)]
    return args


def workload_result(wl: Workload, load: LoadResult, max_num_seqs: int | None) -> WorkloadResult:
    """The served workload's figures, defined as ``vllm bench serve`` defines them."""
    ok = load.completed
    res = WorkloadResult(workload=wl)
    cap = wl.concurrency or wl.num_requests
    res.concurrency = min(cap, max_num_seqs) if max_num_seqs else cap
    res.elapsed_s = load.duration_s
    res.input_tokens, res.output_tokens = load.input_tokens, load.output_tokens
    res.failed_requests = len(load.requests) - len(ok)
    if load.duration_s > 0 and ok:
        res.output_tokens_per_s = load.output_tokens / load.duration_s
        res.total_tokens_per_s = (load.output_tokens + load.input_tokens) / load.duration_s
        res.request_throughput = len(ok) / load.duration_s
    res.ttft = latency_stat([r.ttft_s for r in ok if r.ttft_s is not None])
    res.tpot = latency_stat([t for r in ok if (t := r.tpot_s) is not None])
    res.itl = latency_stat([g for r in ok for g in r.itl_s])
    res.e2el = latency_stat([r.e2el_s for r in ok if r.e2el_s is not None])
    res.latency_source = "streamed /v1/completions, timed per request as vllm bench serve"
    res.requests = RequestTimes(
        start_s=[round(r.start_s, 4) for r in ok],
        ttft_ms=[round((r.ttft_s or 0.0) * 1e3, 3) for r in ok],
        e2el_ms=[round((r.e2el_s or 0.0) * 1e3, 3) for r in ok],
        input_tokens=[r.input_tokens for r in ok],
        output_tokens=[r.output_tokens or 0 for r in ok],
    )
    if res.failed_requests:
        first = next(r.error for r in load.requests if not r.ok)
        res.notes.append(f"{res.failed_requests} of {len(load.requests)} requests failed (first: {first})")
        if not ok:
            res.status, res.reason = "failed", f"every request failed (first: {first})"
    short = [r for r in ok if r.output_tokens is not None and r.output_tokens != r.output_len]
    if short:
        res.notes.append(f"{len(short)} requests returned another number of tokens than asked for")
    return res


def engine_settings_from_log(log: str) -> dict[str, Any]:
    """max_model_len and max_num_batched_tokens as the server's log states them."""
    import re

    out: dict[str, Any] = {}
    if m := re.search(r"max_seq_len=(\d+)", log):
        out["max_model_len"] = int(m.group(1))
    if m := re.search(r"max_num_batched_tokens=(\d+)", log):
        out["max_num_batched_tokens"] = int(m.group(1))
    if m := re.search(r"max_num_seqs=(\d+)", log):
        out["max_num_seqs"] = int(m.group(1))
    if m := re.search(r"[Aa]synchronous scheduling is (enabled|disabled)", log):
        out["async_scheduling"] = m.group(1) == "enabled"
    return out
