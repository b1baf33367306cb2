"""GPU <-> GPU bandwidth for every ordered pair: read and write, copy engine and SM, one way and
bidirectional, with peer access, and staged through the host with peer access off.

Initiator: a *read* is issued by the destination GPU (it pulls), a *write* by the source GPU (it pushes),
as in nvbandwidth. Bidirectional: both directions at once; the figure is the src -> dst direction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from gpuprobe.probes.core.buffers import device_seed, gpu_buffers
from gpuprobe.probes.core.record import from_window, gpu, waived
from gpuprobe.probes.core.registry import ProbeContext, probe
from gpuprobe.probes.core.timing import Copy, measure_copies
from gpuprobe.results.model import Measurement


def peer_ok(ctx: ProbeContext, a: int, b: int) -> bool:
    """Enable peer access both ways if CUDA allows it; False when it does not."""
    cuda = ctx.cuda_backend
    if not (cuda.can_access_peer(a, b) and cuda.can_access_peer(b, a)):
        return False
    cuda.set_peer_access(a, b, True)
    cuda.set_peer_access(b, a, True)
    return True


@contextlib.contextmanager
def peer_mode(ctx: ProbeContext, a: int, b: int, staged: bool) -> Iterator[bool]:
    """Set up the pair for the block: peer access on (yields False when CUDA cannot), or with ``staged`` off both
    ways, so that the driver stages copies through host memory, and back on afterwards, even on failure."""
    if not staged:
        yield peer_ok(ctx, a, b)
        return
    ctx.cuda_backend.set_peer_access(a, b, False)
    ctx.cuda_backend.set_peer_access(b, a, False)
    try:
        yield True
    finally:
        if ctx.cuda_backend.can_access_peer(a, b):
            peer_ok(ctx, a, b)


def _d2d(ctx: ProbeContext, src: int, dst: int, mode: str, engine: str) -> Copy:
    """A copy from ``src``'s buffer into ``dst``'s; ``mode`` is read, write or staged."""
    s, d = gpu_buffers(ctx, src), gpu_buffers(ctx, dst)
    n = min(s.nbytes, d.nbytes)
    initiator = dst if mode == "read" else src
    return Copy(initiator, s.d_src, d.d_dst, n, engine, seed=device_seed(src), check_device=dst)


def _pair_probe(ctx: ProbeContext, key: str, mode: str, engine: str, bidirectional: bool) -> Iterator[Measurement]:
    o = ctx.options
    for a, b in ctx.pairs():
        ctx.progress(f"{key} gpu{a}->gpu{b}")
        fields: dict[str, Any] = dict(
            src=gpu(a), dst=gpu(b), direction="d2d", engine=engine if mode != "staged" else "staged",
            traffic="bidirectional" if bidirectional else "unidirectional", path_class=ctx.path_class(a, b))
        with peer_mode(ctx, a, b, mode == "staged") as usable:
            if usable:
                copies = [_d2d(ctx, a, b, mode, engine)]
                if bidirectional:
                    copies.append(_d2d(ctx, b, a, mode, engine))
                res = measure_copies(ctx.cuda_backend, copies, count=o.copies_per_sample, warmup=o.warmup_copies,
                                     samples=o.samples, verify=o.verify)
        if not usable:
            yield waived(key, f"no peer access between GPU{a} and GPU{b} (CUDA reports it cannot)", **fields)
            continue
        if mode == "staged":
            res.notes.append("peer access disabled: the driver stages the copy through host memory")
        yield from_window(key, res, initiator=gpu(copies[0].device), size_bytes=copies[0].nbytes, **fields)


def _declare(key: str, mode: str, engine: str, bidirectional: bool, description: str) -> None:
    probe(key, "p2p", description, min_gpus=2)(lambda ctx: _pair_probe(ctx, key, mode, engine, bidirectional))


for _eng in ("ce", "sm"):
    _how = "copy engine" if _eng == "ce" else "SM copy kernel"
    _declare(f"device_to_device_memcpy_read_{_eng}", "read", _eng, False, f"dst GPU pulls from src GPU, {_how}")
    _declare(f"device_to_device_memcpy_write_{_eng}", "write", _eng, False, f"src GPU pushes into dst GPU, {_how}")
    _declare(f"device_to_device_bidirectional_memcpy_read_{_eng}", "read", _eng, True,
             f"both GPUs pull from each other at once, {_how}")
    _declare(f"device_to_device_bidirectional_memcpy_write_{_eng}", "write", _eng, True,
             f"both GPUs push into each other at once, {_how}")
_declare("device_to_device_memcpy_staged_ce", "staged", "ce", False,
         "GPU -> GPU with peer access off (staged through host memory by the driver)")
_declare("device_to_device_bidirectional_memcpy_staged_ce", "staged", "ce", True,
         "both directions at once with peer access off (staged through host memory)")
