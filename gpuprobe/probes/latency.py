"""Latency: pointer chase (ns per dependent load) from a GPU into host memory and into a peer GPU's
memory, and 16-byte copy latency (µs per copy) host<->GPU and GPU->GPU.

Pointer chase: a 2 MiB chain of 8-byte pointers with a 128-byte stride (one cache line per hop), walked by
one thread with cache-volatile loads; latency = kernel time / hops (nvbandwidth's method, one launch of
``latency_hops`` hops instead of #SMs launches). Small copies: ``small_copies`` 16-byte cudaMemcpyAsync
enqueued behind a blocked stream; latency = event time / copies (p2pBandwidthLatencyTest's GPU latency).

Kernel launch (host side): ``LAUNCHES`` launches of a one-word fill kernel from Python, enqueued behind a blocked
stream so the GPU cannot pace them, timed on the host: what each kernel an engine dispatches without CUDA graphs
costs the CPU (interpreter, CuPy and the driver), the part of an eager or compiled step that depends on the host.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from gpuprobe.probes.core.buffers import gpu_buffers
from gpuprobe.probes.core.record import from_samples, gpu, waived
from gpuprobe.probes.core.registry import ProbeContext, probe
from gpuprobe.probes.p2p import peer_mode, peer_ok
from gpuprobe.results.model import Measurement

CHAIN_BYTES = 2 << 20
LAUNCHES = 256
"""Launches per sample of ``host_kernel_launch``: well below the driver's queue of pending launches, which would
otherwise make the host wait on the blocked stream."""
STRIDE = 128
SMALL = 16


def _chain(base: int) -> np.ndarray:
    """Pointer values of the chain at ``base``: node k (at k*STRIDE) points to node k+1 (wrapping)."""
    words = CHAIN_BYTES // 8
    nodes = CHAIN_BYTES // STRIDE
    arr = np.zeros(words, dtype=np.uint64)
    k = np.arange(nodes, dtype=np.uint64)
    arr[(k * (STRIDE // 8)).astype(np.int64)] = np.uint64(base) + ((k + np.uint64(1)) % np.uint64(nodes)) * np.uint64(
        STRIDE)
    return arr


def _chase(ctx: ProbeContext, initiator: int, chain_ptr: int) -> list[float]:
    cuda, o = ctx.cuda_backend, ctx.options
    sink = cuda.device_alloc(initiator, 8)
    s = cuda.stream(initiator)
    start, end = cuda.event(initiator), cuda.event(initiator)
    cuda.launch(initiator, "chase", 1, 1, (np.uint64(chain_ptr), np.uint64(1000), np.uint64(sink)), s)  # warm-up
    out = []
    for _ in range(o.samples):
        start.record(s)
        cuda.launch(initiator, "chase", 1, 1, (np.uint64(chain_ptr), np.uint64(o.latency_hops), np.uint64(sink)), s)
        end.record(s)
        end.synchronize()
        out.append(cuda.elapsed_ms(start, end) * 1e6 / o.latency_hops)
    return out


def host_latency(ctx: ProbeContext) -> Iterator[Measurement]:
    for g in ctx.gpus:
        ctx.progress(f"host_device_latency_sm gpu{g}")
        with ctx.cuda_backend.scoped():
            dev = ctx.device(g)
            ptr = ctx.cuda_backend.host_alloc(CHAIN_BYTES, cpus=dev.cpu_affinity if dev else None)
            chain = _chain(ptr)
            ctx.cuda_backend.memcpy(ptr, chain.ctypes.data, CHAIN_BYTES)
            ns = _chase(ctx, g, ptr)
        yield from_samples("host_device_latency_sm", ns, "ns", src="host", dst=gpu(g), initiator=gpu(g),
                           direction="h2d", engine="sm", host_memory="pinned", size_bytes=8, path_class="PCIe",
                           notes=[f"{ctx.options.latency_hops} dependent 8-byte loads, 2 MiB chain, 128 B stride"])


def peer_latency(ctx: ProbeContext) -> Iterator[Measurement]:
    """GPU ``b`` (initiator) chases a chain in GPU ``a``'s memory."""
    for a, b in ctx.pairs():
        ctx.progress(f"device_to_device_latency_sm gpu{b}->gpu{a}")
        fields: dict[str, Any] = dict(src=gpu(a), dst=gpu(b), initiator=gpu(b), direction="d2d", engine="sm",
                      path_class=ctx.path_class(a, b))
        if not peer_ok(ctx, a, b):
            yield waived("device_to_device_latency_sm", f"no peer access between GPU{a} and GPU{b}", "ns", **fields)
            continue
        with ctx.cuda_backend.scoped():
            ptr = ctx.cuda_backend.device_alloc(a, CHAIN_BYTES)
            chain = _chain(ptr)
            ctx.cuda_backend.memcpy(ptr, chain.ctypes.data, CHAIN_BYTES)
            ns = _chase(ctx, b, ptr)
        yield from_samples("device_to_device_latency_sm", ns, "ns", size_bytes=8, **fields)


def _small_copies(ctx: ProbeContext, dev: int, dst: int, src: int, dst_dev: int) -> list[float]:
    from gpuprobe.probes.core.timing import measure_latency_window

    o, cuda = ctx.options, ctx.cuda_backend
    cuda.fill(dst_dev, dst, SMALL, 0x5A5A5A5A)  # poison, so the check below proves these copies landed
    return measure_latency_window(cuda, dev, lambda s: cuda.memcpy_async(dst, src, SMALL, s), count=o.small_copies,
                                  warmup=4, samples=o.samples)


def _verify_small(ctx: ProbeContext, dst_dev: int, dst: int, src_dev: int, src: int) -> int:
    """Compare the 16 bytes at ``dst`` with those at ``src``; returns the number of differing 4-byte words."""
    a, b = np.zeros(4, dtype=np.uint32), np.zeros(4, dtype=np.uint32)
    ctx.cuda_backend.memcpy(a.ctypes.data, dst, SMALL)
    ctx.cuda_backend.memcpy(b.ctypes.data, src, SMALL)
    return int((a != b).sum())


def host_copy_latency(ctx: ProbeContext, direction: str) -> Iterator[Measurement]:
    key = f"{'host_to_device' if direction == 'h2d' else 'device_to_host'}_copy_latency_ce"
    for g in ctx.gpus:
        ctx.progress(f"{key} gpu{g}")
        b = gpu_buffers(ctx, g)
        src, dst = (b.h_src, b.d_dst) if direction == "h2d" else (b.d_src, b.h_dst)
        us = _small_copies(ctx, g, dst, src, g)
        wrong = _verify_small(ctx, g, dst, g, src) if ctx.options.verify else None
        yield from_samples(key, us, "us", verified=(wrong == 0) if wrong is not None else None, wrong_elements=wrong,
                           src="host" if direction == "h2d" else gpu(g), dst=gpu(g) if direction == "h2d" else "host",
                           initiator=gpu(g), direction=direction, engine="ce", host_memory="pinned", size_bytes=SMALL,
                           path_class="PCIe", notes=[f"{ctx.options.small_copies} back-to-back 16-byte copies"])


def peer_copy_latency(ctx: ProbeContext, staged: bool) -> Iterator[Measurement]:
    key = "device_to_device_copy_latency_staged_ce" if staged else "device_to_device_copy_latency_ce"
    for a, b in ctx.pairs():
        ctx.progress(f"{key} gpu{a}->gpu{b}")
        fields: dict[str, Any] = dict(src=gpu(a), dst=gpu(b), initiator=gpu(a), direction="d2d",
                                      engine="staged" if staged else "ce", path_class=ctx.path_class(a, b))
        with peer_mode(ctx, a, b, staged) as usable:
            if usable:
                sa, sb = gpu_buffers(ctx, a), gpu_buffers(ctx, b)
                us = _small_copies(ctx, a, sb.d_dst, sa.d_src, b)
                wrong = _verify_small(ctx, b, sb.d_dst, a, sa.d_src) if ctx.options.verify else None
        if not usable:
            yield waived(key, f"no peer access between GPU{a} and GPU{b}", "us", **fields)
            continue
        yield from_samples(key, us, "us", verified=(wrong == 0) if wrong is not None else None, wrong_elements=wrong,
                           size_bytes=SMALL, **fields)


def kernel_launch(ctx: ProbeContext) -> Iterator[Measurement]:
    """Host microseconds per kernel launch. Launch k writes the pattern of seed k into one word; the word holds the
    last seed's pattern afterwards, so every launch ran, in order."""
    cuda, checked = ctx.cuda_backend, ctx.options.verify
    for g in ctx.gpus:
        ctx.progress(f"host_kernel_launch gpu{g}")
        b = gpu_buffers(ctx, g)
        s = cuda.stream(g)
        us, wrong = [], 0
        for sample in range(ctx.options.samples + 1):  # the first warms the launch path
            cuda.arm()
            cuda.block(g, s)
            t0 = time.perf_counter()
            for k in range(LAUNCHES):
                cuda.launch(g, "fill", 1, 1, (np.uint64(b.d_dst), np.uint64(1), np.uint32(k)), s)
            dt = time.perf_counter() - t0
            clean = cuda.release()
            s.synchronize()
            if sample:
                if clean:
                    us.append(dt * 1e6 / LAUNCHES)
                wrong += cuda.check(g, b.d_dst, 4, LAUNCHES - 1) if checked else 0
        yield from_samples("host_kernel_launch", us, "us", verified=(wrong == 0) if checked else None,
                           wrong_elements=wrong if checked else None, src="host", dst=gpu(g), initiator="host",
                           direction="h2d", engine="sm", size_bytes=4,
                           notes=[f"{LAUNCHES} launches of a one-word kernel behind a blocked stream, host time"])


probe("host_device_latency_sm", "latency", "GPU -> pinned host pointer-chase load latency (ns)", unit="ns")(
    host_latency)
probe("device_to_device_latency_sm", "latency", "GPU -> peer GPU pointer-chase load latency (ns)", unit="ns",
      min_gpus=2)(peer_latency)
probe("host_to_device_copy_latency_ce", "latency", "16-byte host -> GPU copy latency (µs)", unit="us")(
    lambda ctx: host_copy_latency(ctx, "h2d"))
probe("device_to_host_copy_latency_ce", "latency", "16-byte GPU -> host copy latency (µs)", unit="us")(
    lambda ctx: host_copy_latency(ctx, "d2h"))
probe("device_to_device_copy_latency_ce", "latency", "16-byte GPU -> GPU copy latency, peer access on (µs)",
      unit="us", min_gpus=2)(lambda ctx: peer_copy_latency(ctx, staged=False))
probe("device_to_device_copy_latency_staged_ce", "latency", "16-byte GPU -> GPU copy latency, peer access off (µs)",
      unit="us", min_gpus=2)(lambda ctx: peer_copy_latency(ctx, staged=True))
probe("host_kernel_launch", "latency", "host time per kernel launch from Python, GPU blocked (µs)", unit="us")(
    kernel_launch)
