"""Host <-> device bandwidth: pinned and pageable, copy engine and SM kernel, one way and bidirectional,
and all GPUs to/from the host at once. Keys follow nvbandwidth where it has the test.

Bandwidth = bytes per copy x copies / time between the events around the copies (GB/s = 1e9 B/s).
Bidirectional: the reverse copy runs during the whole window; the figure is the named direction only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gpuprobe.probes.core.buffers import device_seed, gpu_buffers, host_seed
from gpuprobe.probes.core.record import from_samples, from_window, gpu
from gpuprobe.probes.core.registry import ProbeContext, probe
from gpuprobe.probes.core.timing import Copy, measure_copies, measure_unblocked
from gpuprobe.results.model import Measurement, reverse_note

H2D, D2H = "h2d", "d2h"


def _copy(ctx: ProbeContext, g: int, direction: str, engine: str) -> Copy:
    b = gpu_buffers(ctx, g)
    if direction == H2D:
        return Copy(g, b.h_src, b.d_dst, b.nbytes, engine, seed=host_seed(g))
    return Copy(g, b.d_src, b.h_dst, b.nbytes, engine, seed=device_seed(g))


def _host_probe(ctx: ProbeContext, key: str, direction: str, engine: str, bidirectional: bool,
                others: bool = False) -> Iterator[Measurement]:
    o = ctx.options
    for g in ctx.gpus:
        ctx.progress(f"{key} gpu{g}")
        copies = [_copy(ctx, g, direction, engine)]
        if bidirectional:
            copies.append(_copy(ctx, g, D2H if direction == H2D else H2D, engine))
        if others:  # every other GPU copies in the same direction (and the reverse, if bidirectional)
            for h in ctx.gpus:
                if h != g:
                    copies.append(_copy(ctx, h, direction, engine))
                    if bidirectional:
                        copies.append(_copy(ctx, h, D2H if direction == H2D else H2D, engine))
        res = measure_copies(ctx.cuda_backend, copies, count=o.copies_per_sample, warmup=o.warmup_copies,
                             samples=o.samples, verify=o.verify, rates=ctx.cache.setdefault("rates", {}))
        src, dst = ("host", gpu(g)) if direction == H2D else (gpu(g), "host")
        reverse = None
        if bidirectional and res.other_gbps:
            reverse = sorted(o[0] for o in res.other_gbps)[len(res.other_gbps) // 2]
            res.notes.append(reverse_note(reverse))
        yield from_window(key, res, src=src, dst=dst, initiator=gpu(g), direction=direction, engine=engine,
                          traffic="bidirectional" if bidirectional else "unidirectional", host_memory="pinned",
                          size_bytes=copies[0].nbytes, path_class="PCIe", reverse_gbps=reverse)


def _declare(key: str, direction: str, engine: str, bidirectional: bool, description: str, **kw: bool) -> None:
    min_gpus = 2 if kw.get("others") else 1
    probe(key, "host", description, min_gpus=min_gpus)(
        lambda ctx: _host_probe(ctx, key, direction, engine, bidirectional, **kw))


for _eng in ("ce", "sm"):
    _how = "copy engine" if _eng == "ce" else "SM copy kernel"
    _declare(f"host_to_device_memcpy_{_eng}", H2D, _eng, False, f"pinned host -> GPU, {_how}")
    _declare(f"device_to_host_memcpy_{_eng}", D2H, _eng, False, f"GPU -> pinned host, {_how}")
    _declare(f"host_to_device_bidirectional_memcpy_{_eng}", H2D, _eng, True,
             f"host -> GPU while GPU -> host runs, {_how}; H2D reported")
    _declare(f"device_to_host_bidirectional_memcpy_{_eng}", D2H, _eng, True,
             f"GPU -> host while host -> GPU runs, {_how}; D2H reported")
_declare("all_to_host_memcpy_ce", D2H, "ce", False, "GPU -> host while every other GPU copies to the host",
         others=True)
_declare("host_to_all_memcpy_ce", H2D, "ce", False, "host -> GPU while the host copies to every other GPU",
         others=True)
_declare("all_to_host_bidirectional_memcpy_ce", D2H, "ce", True,
         "GPU -> host while every GPU copies both ways", others=True)
_declare("host_to_all_bidirectional_memcpy_ce", H2D, "ce", True,
         "host -> GPU while every GPU copies both ways", others=True)


PAGEABLE_MAX_BYTES = 128 << 20
"""Pageable copies use at most this much: the driver stages them through its own pinned buffers in chunks, so a
larger buffer changes nothing but the time (and the first touch of pageable pages is slow in VMs)."""


def _pageable(ctx: ProbeContext, key: str, direction: str) -> Iterator[Measurement]:
    """Pageable host memory: the runtime stages these copies through its own pinned buffers and the host
    thread takes part, so they are timed on an unblocked stream (a blocked one would deadlock)."""
    import numpy as np

    o, cuda = ctx.options, ctx.cuda_backend
    for g in ctx.gpus:
        ctx.progress(f"{key} gpu{g}")
        b = gpu_buffers(ctx, g)
        n = min(b.nbytes, PAGEABLE_MAX_BYTES)
        host = ctx.cache.get(f"pageable:{g}")
        if host is None:
            host = ctx.cache[f"pageable:{g}"] = np.empty(n, dtype=np.uint8)
        hptr = host.ctypes.data
        if direction == H2D:
            cuda.memcpy(hptr, b.d_src, n)  # the pageable source now holds GPU g's device pattern
            src, dst = hptr, b.d_dst
        else:
            host.fill(0)
            src, dst = b.d_src, hptr
        count = max(1, o.copies_per_sample // 8)
        def enqueue(s: Any, src: int = src, dst: int = dst, n: int = n) -> None:
            cuda.memcpy_async(dst, src, n, s)

        times = measure_unblocked(cuda, g, enqueue, count=count, warmup=1, samples=o.samples)
        wrong = None
        if o.verify:
            if direction == D2H:
                cuda.memcpy(b.d_dst, hptr, n)
            wrong = cuda.check(g, b.d_dst, n, device_seed(g))
        gbps = [n * count / (ms * 1e-3) / 1e9 for ms in times]
        s_name, d_name = ("host", gpu(g)) if direction == H2D else (gpu(g), "host")
        yield from_samples(key, gbps, "GB/s", verified=(wrong == 0) if wrong is not None else None,
                           wrong_elements=wrong, src=s_name, dst=d_name, initiator=gpu(g), direction=direction,
                           engine="ce", host_memory="pageable", size_bytes=n, path_class="PCIe",
                           notes=["timed on an unblocked stream (pageable copies synchronise with the host)"])


probe("host_to_device_pageable_memcpy_ce", "host", "pageable host -> GPU, copy engine (staged by the driver)")(
    lambda ctx: _pageable(ctx, "host_to_device_pageable_memcpy_ce", H2D))
probe("device_to_host_pageable_memcpy_ce", "host", "GPU -> pageable host, copy engine (staged by the driver)")(
    lambda ctx: _pageable(ctx, "device_to_host_pageable_memcpy_ce", D2H))
