"""SM copy-kernel launch shape vs bandwidth on this GPU (host<->device and local), to pick the defaults.

Run on a GPU machine: ``PYTHONPATH=. python benchmarks/sm_copy_config.py``. Prints one line per shape.
"""

from __future__ import annotations

from gpuprobe.options import ProbeOptions
from gpuprobe.probes.core.buffers import device_seed, gpu_buffers, host_seed
from gpuprobe.probes.core.cuda import Cuda
from gpuprobe.probes.core.registry import ProbeContext
from gpuprobe.probes.core.timing import Copy, measure_copies


def main() -> None:
    with Cuda() as cuda:
        cuda.preload([0])
        ctx = ProbeContext(options=ProbeOptions(), gpus=[0], cuda=cuda)
        b = gpu_buffers(ctx, 0)
        cases = {"h2d": (b.h_src, b.d_dst, host_seed(0)), "d2h": (b.d_src, b.h_dst, device_seed(0)),
                 "local": (b.d_src, b.d_dst, device_seed(0))}
        print(f"{'case':6} {'blocks/SM':>9} {'threads':>7} {'GB/s':>9}")
        for name, (src, dst, seed) in cases.items():
            for bps in (1, 2, 4, 8):
                for threads in (256, 512, 1024):
                    c = Copy(0, src, dst, b.nbytes, "sm", seed=seed, sm_blocks_per_sm=bps, sm_threads=threads)
                    r = measure_copies(cuda, [c], count=8, warmup=2, samples=3, verify=False)
                    print(f"{name:6} {bps:9d} {threads:7d} {sorted(r.gbps)[1]:9.2f}", flush=True)


if __name__ == "__main__":
    main()
