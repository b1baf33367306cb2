"""Pageable host<->device copies: gpuprobe's probe against a plain PyTorch copy of the same size, same process.

Run on a GPU machine: ``PYTHONPATH=. python benchmarks/pageable_check.py``.
"""

from __future__ import annotations

import time

from gpuprobe.options import ProbeOptions
from gpuprobe.probes import copy
from gpuprobe.probes.core.cuda import Cuda
from gpuprobe.probes.core.registry import ProbeContext

N = 512 << 20


def torch_gbps() -> tuple[float, float]:
    import torch

    host = torch.empty(N, dtype=torch.uint8)
    host.fill_(1)
    dev = torch.empty(N, dtype=torch.uint8, device="cuda")
    out = []
    for direction in ("h2d", "d2h"):
        best = []
        for _ in range(4):
            torch.cuda.synchronize()
            t = time.perf_counter()
            if direction == "h2d":
                dev.copy_(host)
            else:
                host.copy_(dev)
            torch.cuda.synchronize()
            best.append(N / (time.perf_counter() - t) / 1e9)
        out.append(sorted(best)[len(best) // 2])
    return out[0], out[1]


def main() -> None:
    with Cuda() as cuda:
        cuda.preload([0])
        ctx = ProbeContext(options=ProbeOptions(), gpus=[0], cuda=cuda)
        for key in ("host_to_device_pageable_memcpy_ce", "device_to_host_pageable_memcpy_ce"):
            direction = "h2d" if key.startswith("host") else "d2h"
            (m,) = list(copy._pageable(ctx, key, direction))
            print(f"gpuprobe {key}: {m.value:.2f} GB/s (samples {[round(s, 2) for s in m.samples]})", flush=True)
    h2d, d2h = torch_gbps()
    print(f"torch pageable copy_: h2d {h2d:.2f} GB/s, d2h {d2h:.2f} GB/s")


if __name__ == "__main__":
    main()
