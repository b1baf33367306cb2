"""A served layout: ``vllm serve`` in the background, driven over HTTP by ``gpuprobe.validate.loadgen``, and the
engine's settings read from its log (the offline worker reads them from the engine)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import IO

from gpuprobe.results.validation import KvCacheCapacity, Measured, ValidationLayout, Workload
from gpuprobe.system import hostspeed
from gpuprobe.validate import loadgen, serve
from gpuprobe.validate.gpumem import Nvml, device_string
from gpuprobe.validate.options import Progress, ValidateOptions
from gpuprobe.validate.process import Child, PreloadedInterpreter, end_child, start_child
from gpuprobe.validate.vllm_env import find_vllm
from gpuprobe.validate.worker import WARM_OUTPUT_TOKENS


def run_served(layout: ValidationLayout, workloads: list[Workload], model_dir: Path, opts: ValidateOptions,
               env_set: dict[str, str], log_path: Path, log: IO[bytes], preloaded: PreloadedInterpreter | None,
               progress: Progress, t0: float) -> tuple[Measured | None, str | None, bool, Child]:
    """``vllm serve`` in the background, then every workload over HTTP, then the server's group ended."""
    port = serve.free_port()
    child = start_child("serve", serve.serve_args(layout, model_dir, port), log_path, log, env_set, opts.python,
                        preloaded)
    measured = Measured()
    error: str | None = None
    timed_out = False
    vocab = int(json.loads((model_dir / "config.json").read_text()).get("vocab_size") or serve.MAX_PROMPT_ID)
    rng = random.Random(opts.seed)

    def left() -> float:
        return opts.timeout_s - (time.monotonic() - t0)

    try:
        ready = asyncio.run(loadgen.wait_ready(serve.HOST, port, left(), lambda: child.poll() is None))
        if ready is None:
            timed_out = child.poll() is None
            error = None if timed_out else "the server exited before it was ready"
            if timed_out:
                progress(f"{layout.name}: server not ready after {opts.timeout_s:.0f} s, killing it")
            return measured, error, timed_out, child
        measured.engine_start_s = ready
        progress(f"{layout.name}: server ready in {ready:.0f} s")
        if opts.warmup and workloads:  # first requests pay one-time costs (kernel choice, lazy imports): not measured
            first = workloads[0]
            warm = Workload(num_requests=4, input_len=first.input_len, output_len=min(first.output_len, 8),
                            concurrency=4)
            asyncio.run(asyncio.wait_for(loadgen.run_load(serve.HOST, port, serve.SERVED_NAME,
                                                          serve.prompts(warm, vocab, rng), 2, None),
                                         max(left(), 1.0)))
        for wl in workloads:
            if opts.warm_each:
                # all at once (no arrival process): the same prompt lengths and batch sizes, in seconds
                short = replace(wl, output_len=min(wl.output_len, WARM_OUTPUT_TOKENS))
                asyncio.run(asyncio.wait_for(loadgen.run_load(
                    serve.HOST, port, serve.SERVED_NAME, serve.prompts(short, vocab, rng), wl.concurrency, None),
                    max(left(), 1.0)))
            reqs = serve.prompts(wl, vocab, rng)
            host_ns = hostspeed.python_loop_ns()
            try:
                load = asyncio.run(asyncio.wait_for(
                    loadgen.run_load(serve.HOST, port, serve.SERVED_NAME, reqs, wl.concurrency, wl.request_rate,
                                     seed=rng.randrange(1 << 30)), max(left(), 1.0)))
            except TimeoutError:
                timed_out = True
                progress(f"{layout.name}: {wl.label} did not finish within the timeout")
                break
            res = serve.workload_result(wl, load, layout.max_num_seqs)
            res.host_python_loop_ns = host_ns
            measured.workloads.append(res)
            if res.status == "ok":
                progress(f"{layout.name} {wl.label}: {res.output_tokens_per_s or 0:.1f} output tok/s, "
                         f"TTFT {res.ttft.median_ms if res.ttft else 0:.0f} ms, "
                         f"TPOT {res.tpot.median_ms if res.tpot else 0:.2f} ms")
            else:
                error = res.reason
            if child.poll() is not None:
                error = error or "the server exited during the workloads"
                break
    finally:
        end_child(child)
    if not error and not timed_out and len(measured.workloads) == len(workloads):
        child.returncode = 0  # stopped by us after its work: not a failure
    return measured, error, timed_out, child


def served_engine_facts(measured: Measured, log: str, layout: ValidationLayout, platform: str, nvml: Nvml,
                        gpus: list[int]) -> None:
    """What the offline worker reads from the engine, read from the server's log instead."""
    facts = serve.engine_settings_from_log(log)
    measured.max_model_len = facts.get("max_model_len")
    measured.max_num_batched_tokens = facts.get("max_num_batched_tokens")
    measured.max_num_seqs = facts.get("max_num_seqs") or layout.max_num_seqs
    measured.gpu_memory_utilization = layout.gpu_memory_utilization
    if facts.get("async_scheduling") is not None:
        measured.notes.append(f"async scheduling {'on' if facts['async_scheduling'] else 'off'}")
    prof = measured.memory_profile
    if prof is not None and prof.kv_cache_tokens is not None:
        measured.kv_cache = KvCacheCapacity(num_blocks=None, block_size=None, tokens=prof.kv_cache_tokens,
                                            max_concurrency=prof.max_concurrency, source="server log")
    measured.platform = platform
    measured.vllm_version = find_vllm().version
    measured.device_name = (nvml.name(gpus[0]) if platform == "cuda" and gpus else None) or (
        device_string(platform, nvml, 0) if platform == "cpu" else None)
