"""Buffers shared by the copy probes of one run, sized to the free memory, with known patterns.

Per GPU g: ``d_src`` (device, pattern seed 100+g), ``d_dst`` (device), ``h_src`` (pinned host on g's NUMA
node, pattern seed 200+g) and ``h_dst`` (pinned host). Probes only ever write into ``*_dst`` buffers, so the
source patterns stay valid for the whole run and every copy can be verified against its source's seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuprobe.probes.core.registry import ProbeContext

MiB = 1 << 20
RESERVE_BYTES = 1 << 30
"""Device memory left free for the CUDA context, NCCL and the kernels' own needs."""


def device_seed(gpu: int) -> int:
    return 100 + gpu


def host_seed(gpu: int) -> int:
    return 200 + gpu


@dataclass
class GpuBuffers:
    gpu: int
    nbytes: int
    d_src: int
    d_dst: int
    h_src: int
    h_dst: int


def buffer_size(ctx: ProbeContext, gpu: int, copies: int = 2) -> int:
    """The per-copy size for ``gpu``: the requested size, reduced so ``copies`` buffers fit in free memory."""
    want = ctx.options.buffer_size_bytes
    key = f"size:{gpu}"
    if key not in ctx.cache:
        free, _ = ctx.cuda_backend.mem_info(gpu)
        fit = max(0, (free - RESERVE_BYTES) // copies)
        size = want if fit >= want else max(MiB, (fit // (2 * MiB)) * (2 * MiB))
        if size < want:
            ctx.note(f"GPU {gpu}: buffers reduced from {want // MiB} MiB to {size // MiB} MiB to fit free memory "
                     f"({free / 2**30:.1f} GiB free)")
        ctx.cache[key] = size
    return ctx.cache[key]


def gpu_buffers(ctx: ProbeContext, gpu: int) -> GpuBuffers:
    """The run's buffers of ``gpu`` (allocated and filled on first use)."""
    key = f"buffers:{gpu}"
    if key not in ctx.cache:
        cuda = ctx.cuda_backend
        n = buffer_size(ctx, gpu)
        dev = ctx.device(gpu)
        cpus = dev.cpu_affinity if dev else None
        b = GpuBuffers(gpu, n, cuda.device_alloc(gpu, n), cuda.device_alloc(gpu, n),
                       cuda.host_alloc(n, cpus=cpus), cuda.host_alloc(n, cpus=cpus))
        cuda.fill(gpu, b.d_src, n, device_seed(gpu))
        cuda.fill(gpu, b.h_src, n, host_seed(gpu))
        # one untimed pass each way: the first DMA to fresh pinned pages pays for their mappings
        cuda.memcpy(b.d_dst, b.h_src, n)
        cuda.memcpy(b.h_dst, b.d_src, n)
        ctx.cache[key] = b
    return ctx.cache[key]
