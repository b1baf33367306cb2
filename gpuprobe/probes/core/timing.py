"""The one timing core: blocked-stream start, CUDA events, warm-ups, samples, verification.

For every sample, each simultaneous copy gets its own stream on its initiating device. Every stream first
gets the spin kernel (blocked until the host releases it), then the warm-up copies; stream 0 records its
start event, every other stream waits on that event and records its own, then the timed copies are enqueued
and each stream records its end event. Only then is the flag released, so the host's enqueue time and the
launch skew between streams never fall inside a timed window (nvbandwidth's ``doMemcpyCore``).

Bandwidth of copy i in one sample = bytes_i x count_i / (end_i - start_i). Copy 0 is the measured one;
the others are interference (reverse traffic) and run twice as many copies so that they cover copy 0's
whole window, as in nvbandwidth's bidirectional tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpuprobe.probes.core.cuda import Cuda


@dataclass
class Copy:
    """One stream of copies: ``nbytes`` from ``src`` to ``dst``, issued by ``device``'s stream."""

    device: int
    src: int
    dst: int
    nbytes: int
    engine: str = "ce"
    """``ce`` (cudaMemcpyAsync on a copy engine) or ``sm`` (copy kernel on the streaming multiprocessors)."""
    seed: int = 1
    """The pattern ``src`` holds; ``dst`` must equal it after the copies."""
    check_device: int | None = None
    """Device whose kernel verifies ``dst`` (must be able to address it); None = ``device``."""
    sm_blocks_per_sm: int = 4
    sm_threads: int = 512


@dataclass
class WindowResult:
    """Per-sample bandwidths (GB/s) of the measured copy, its verification, and warnings."""

    gbps: list[float] = field(default_factory=list)
    other_gbps: list[list[float]] = field(default_factory=list)
    """Per sample, the bandwidth of each interfering copy over its own window."""
    wrong_elements: int = 0
    verified: bool = True
    notes: list[str] = field(default_factory=list)


def _enqueue(cuda: Cuda, c: Copy, stream: Any) -> None:
    if c.engine == "ce":
        cuda.memcpy_async(c.dst, c.src, c.nbytes, stream)
    else:
        n16 = c.nbytes // 16
        grid = cuda.sm_count(c.device) * c.sm_blocks_per_sm
        cuda.launch(c.device, "copy_u4", grid, c.sm_threads, (np.uint64(c.src), np.uint64(c.dst), np.uint64(n16)),
                    stream)


def measure_copies(
    cuda: Cuda,
    copies: list[Copy],
    *,
    count: int,
    warmup: int,
    samples: int,
    verify: bool = True,
    poison: Callable[[Copy], None] | None = None,
) -> WindowResult:
    """Time ``copies`` running together; report copy 0 (the others are interference)."""
    out = WindowResult()
    streams = [cuda.stream(c.device) for c in copies]
    starts = [cuda.event(c.device) for c in copies]
    ends = [cuda.event(c.device) for c in copies]
    for _ in range(samples):
        if verify:
            for c in copies:
                (poison or _default_poison(cuda))(c)
            cuda.synchronize_all()
        cuda.arm()
        for i, (c, s) in enumerate(zip(copies, streams, strict=True)):
            cuda.block(c.device, s)
            for _ in range(warmup if i == 0 else 2 * warmup):
                _enqueue(cuda, c, s)
        starts[0].record(streams[0])
        for i in range(1, len(copies)):
            streams[i].wait_event(starts[0])
            starts[i].record(streams[i])
        for i, (c, s) in enumerate(zip(copies, streams, strict=True)):
            for _ in range(count if i == 0 else 2 * count):
                _enqueue(cuda, c, s)
            ends[i].record(s)
        ok = cuda.release()
        for s in streams:
            s.synchronize()
        if not ok:
            out.notes.append("enqueue took longer than the spin kernel's timeout: a sample includes enqueue time")
        ms = cuda.elapsed_ms(starts[0], ends[0])
        out.gbps.append(copies[0].nbytes * count / (ms * 1e-3) / 1e9)
        out.other_gbps.append([c.nbytes * 2 * count / (cuda.elapsed_ms(starts[i], ends[i]) * 1e-3) / 1e9
                               for i, c in enumerate(copies) if i > 0])
        if verify:
            for c in copies:
                wrong = cuda.check(c.check_device if c.check_device is not None else c.device, c.dst, c.nbytes,
                                   c.seed)
                out.wrong_elements += wrong
    out.verified = verify and out.wrong_elements == 0
    return out


def _default_poison(cuda: Cuda) -> Callable[[Copy], None]:
    def poison(c: Copy) -> None:
        dev = c.check_device if c.check_device is not None else c.device
        cuda.fill(dev, c.dst, c.nbytes, c.seed ^ 0x5A5A5A5A)

    return poison


def measure_unblocked(
    cuda: Cuda, dev: int, enqueue: Callable[[Any], None], *, count: int, warmup: int, samples: int
) -> list[float]:
    """Milliseconds per sample of ``count`` calls of ``enqueue(stream)`` on an unblocked stream.

    For copies that the runtime performs synchronously with the host (pageable memory), where a blocked
    stream would deadlock the enqueuing thread.
    """
    s = cuda.stream(dev)
    start, end = cuda.event(dev), cuda.event(dev)
    for _ in range(warmup):
        enqueue(s)
    s.synchronize()
    times = []
    for _ in range(samples):
        start.record(s)
        for _ in range(count):
            enqueue(s)
        end.record(s)
        end.synchronize()
        times.append(cuda.elapsed_ms(start, end))
    return times


def measure_latency_window(
    cuda: Cuda, dev: int, enqueue: Callable[[Any], None], *, count: int, warmup: int, samples: int
) -> list[float]:
    """Microseconds per operation: ``count`` operations enqueued behind a blocked stream, timed by events."""
    s = cuda.stream(dev)
    start, end = cuda.event(dev), cuda.event(dev)
    out = []
    for _ in range(samples):
        cuda.arm()
        cuda.block(dev, s)
        for _ in range(warmup):
            enqueue(s)
        start.record(s)
        for _ in range(count):
            enqueue(s)
        end.record(s)
        cuda.release()
        s.synchronize()
        out.append(cuda.elapsed_ms(start, end) * 1e3 / count)
    return out
