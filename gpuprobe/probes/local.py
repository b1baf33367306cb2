"""Local HBM copy bandwidth. Bytes are counted once (as nvbandwidth): HBM moves twice the figure."""

from __future__ import annotations

from collections.abc import Iterator

from gpuprobe.probes.core.buffers import device_seed, gpu_buffers
from gpuprobe.probes.core.record import from_window, gpu
from gpuprobe.probes.core.registry import ProbeContext, probe
from gpuprobe.probes.core.timing import Copy, measure_copies
from gpuprobe.results.model import Measurement


def _local(ctx: ProbeContext, key: str, engine: str) -> Iterator[Measurement]:
    o = ctx.options
    for g in ctx.gpus:
        ctx.progress(f"{key} gpu{g}")
        b = gpu_buffers(ctx, g)
        res = measure_copies(ctx.cuda_backend, [Copy(g, b.d_src, b.d_dst, b.nbytes, engine, seed=device_seed(g))],
                             count=o.copies_per_sample, warmup=o.warmup_copies, samples=o.samples, verify=o.verify)
        yield from_window(key, res, src=gpu(g), dst=gpu(g), initiator=gpu(g), direction="local", engine=engine,
                          size_bytes=b.nbytes, path_class="HBM",
                          notes=["bytes counted once: HBM traffic (read + write) is twice this figure"])


probe("device_local_copy", "local", "copy within one GPU's memory, copy engine")(
    lambda ctx: _local(ctx, "device_local_copy", "ce"))
probe("device_local_copy_sm", "local", "copy within one GPU's memory, SM copy kernel")(
    lambda ctx: _local(ctx, "device_local_copy_sm", "sm"))
