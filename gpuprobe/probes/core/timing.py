"""The one timing core: blocked-stream start, CUDA events, warm-ups, samples, verification.

For every sample, each simultaneous copy gets its own stream on its initiating device. Every stream first
gets the spin kernel (blocked until the host releases it); the measured stream then gets its warm-up copies
(before the first sample), its start event, the timed copies and its end event, and every other stream its
interfering copies. Only then is the flag released, so the host's enqueue time and the launch skew between
streams never fall inside a timed window (nvbandwidth's ``doMemcpyCore``).

Bandwidth of the measured copy (copy 0) in one sample = bytes x count / (end - start). The others are
interference (reverse traffic, other GPUs): they start with the release and run until after copy 0's window ends,
as the twice-as-large interference copies of nvbandwidth's bidirectional tests do.

Sizing the interference: nvbandwidth always enqueues twice the measured copies, so half of every bidirectional
sample is spent after the measured window. Here a sample's interference is sized from the per-copy times seen
under this same traffic (the previous sample, or an earlier probe that ran the same set of copies with another
one measured) with a 20 % margin, and every sample checks that the interference did outlast the window: a sample
it did not cover is discarded and taken again with the full twofold interference. Unknown traffic starts at twice.
"""

from __future__ import annotations

import math
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


COVER_MARGIN = 1.2
"""Interference is sized to last this many times the expected measured window (plus ``COVER_SLACK_MS``)."""
COVER_SLACK_MS = 0.5

RateMemory = dict[frozenset, dict[tuple, float]]
"""Per set of simultaneous copies: milliseconds per copy of each copy, as last seen under that traffic."""


def _sig(c: Copy) -> tuple:
    return (c.device, c.src, c.dst, c.nbytes, c.engine)


def _covering(window_ms: float, per_copy_ms: float) -> int:
    """Copies of ``per_copy_ms`` each that outlast a window of ``window_ms`` with the margin."""
    return max(2, math.ceil((window_ms * COVER_MARGIN + COVER_SLACK_MS) / per_copy_ms))


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
    rates: RateMemory | None = None,
) -> WindowResult:
    """Time ``copies`` running together; report copy 0 (the others are interference).

    Copy 0 gets ``warmup`` untimed copies before the first sample's window, then ``count`` timed ones per sample.
    Each interfering copy starts with the release and must still be running when copy 0's window ends: the first
    sample gives it twice copy 0's copies unless ``rates`` knows this traffic; when all copies are on one device,
    samples are sized from the per-copy times last seen under it (20 % margin) and checked to have covered the
    window (else the sample is discarded and the next one goes back to twice). ``rates`` is updated.
    """
    out = WindowResult()
    streams = [cuda.stream(c.device) for c in copies]
    begins = [cuda.event(c.device) for c in copies]
    starts = [cuda.event(c.device) for c in copies]
    ends = [cuda.event(c.device) for c in copies]
    one_device = len({c.device for c in copies}) == 1
    others = [2 * (warmup + count)] * len(copies)
    key = frozenset(_sig(c) for c in copies)
    seen = rates.get(key) if rates is not None and one_device else None
    if seen:
        for i in range(1, len(copies)):
            others[i] = _covering((warmup + count) * seen[_sig(copies[0])], seen[_sig(copies[i])])
    uncovered = 0
    sample = 0
    while len([g for g in out.gbps if g == g]) < samples and sample < 2 * samples:
        warm = warmup if sample == 0 else 0
        sample += 1
        if verify:
            for c in copies:
                (poison or _default_poison(cuda))(c)
            cuda.synchronize_all()
        cuda.arm()
        for i, (c, s) in enumerate(zip(copies, streams, strict=True)):
            cuda.block(c.device, s)
            begins[i].record(s)
        for _ in range(warm):
            _enqueue(cuda, copies[0], streams[0])
        starts[0].record(streams[0])
        for _ in range(count):
            _enqueue(cuda, copies[0], streams[0])
        ends[0].record(streams[0])
        for i in range(1, len(copies)):
            for _ in range(others[i]):
                _enqueue(cuda, copies[i], streams[i])
            ends[i].record(streams[i])
        ok = cuda.release()
        for s in streams:
            s.synchronize()
        if not ok:
            out.notes.append("enqueue took longer than the spin kernel's timeout: a sample includes enqueue time")
        ms = cuda.elapsed_ms(starts[0], ends[0])
        out.gbps.append(copies[0].nbytes * count / (ms * 1e-3) / 1e9)
        out.other_gbps.append([c.nbytes * others[i] / (cuda.elapsed_ms(begins[i], ends[i]) * 1e-3) / 1e9
                               for i, c in enumerate(copies) if i > 0])
        if len(copies) > 1 and one_device:
            per_copy = {_sig(copies[0]): ms / count}
            covered = True
            for i in range(1, len(copies)):
                if cuda.elapsed_ms(ends[0], ends[i]) < 0:  # interference ended inside the window
                    covered = False
                    continue
                per_copy[_sig(copies[i])] = cuda.elapsed_ms(begins[i], ends[i]) / others[i]
                others[i] = _covering(ms, per_copy[_sig(copies[i])])  # next window: no warm-ups
            if not covered:
                uncovered += 1
                out.gbps[-1] = float("nan")
                others = [2 * (warmup + count)] * len(copies)
            elif rates is not None:
                rates[key] = per_copy
        if verify:
            for c in copies:
                wrong = cuda.check(c.check_device if c.check_device is not None else c.device, c.dst, c.nbytes,
                                   c.seed)
                out.wrong_elements += wrong
    if uncovered:
        out.notes.append(f"{uncovered} sample(s) taken again: the interfering traffic ended inside the measured window")
        out.gbps = [g for g in out.gbps if g == g]
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
