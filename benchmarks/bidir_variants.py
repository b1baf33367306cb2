"""Host<->device bidirectional copies: how the split between the two directions depends on the method.

Variants: interference as 2x the copy count (gpuprobe's default) or as copies of 2x the size (nvbandwidth),
mapped or plain pinned host memory. Prints the measured direction and the reverse one for each.
Run on a GPU machine: ``PYTHONPATH=. python benchmarks/bidir_variants.py``.
"""

from __future__ import annotations

from gpuprobe.probes.core.buffers import device_seed, host_seed
from gpuprobe.probes.core.cuda import Cuda
from gpuprobe.probes.core.timing import Copy, measure_copies

N = 512 << 20


def main() -> None:
    with Cuda() as cuda:
        cuda.preload([0])
        print(f"{'variant':34} {'measured':>8} {'GB/s':>7} {'reverse GB/s':>12}")
        for mapped in (True, False):
            h_src, h_dst = cuda.host_alloc(2 * N, mapped=mapped), cuda.host_alloc(2 * N, mapped=mapped)
            d_src, d_dst = cuda.device_alloc(0, 2 * N), cuda.device_alloc(0, 2 * N)
            cuda.fill(0, d_src, 2 * N, device_seed(0))
            cuda.memcpy(h_src, d_src, 2 * N)
            for scale in ("count", "size"):
                k = 2 if scale == "size" else 1
                for measured in ("h2d", "d2h"):
                    h2d = Copy(0, h_src, d_dst, N if measured == "h2d" else k * N, "ce", seed=device_seed(0))
                    d2h = Copy(0, d_src, h_dst, N if measured == "d2h" else k * N, "ce", seed=host_seed(0))
                    copies = [h2d, d2h] if measured == "h2d" else [d2h, h2d]
                    r = measure_copies(cuda, copies, count=16, warmup=4, samples=3, verify=False)
                    rev = sorted(o[0] for o in r.other_gbps)[1]
                    name = f"{'mapped' if mapped else 'pinned'} interference x2 {scale}"
                    print(f"{name:34} {measured:>8} {sorted(r.gbps)[1]:7.2f} {rev:12.2f}", flush=True)


if __name__ == "__main__":
    main()
