"""Derived test inputs: Results objects assembled from published figures (NOT measurements of any box).

Figures and where they come from:
- H100 80GB HBM3: NVML total 81,559 MiB; device_local_copy 1488.21 GB/s and H2D CE 52.78 GB/s
  (nvbandwidth v0.8 on an H100 of that kind, benchmarks/anchors_h100.json).
- 8x H100 SXM NVLink4: D2D read CE ~395 GB/s; NCCL all-reduce busbw 360-370 GB/s (ring, no NVLS);
  small all-reduce 12.5 us (8 GPUs) and ~6 us (2 GPUs) (docs/sources.md: nccl-tests #212, DeepEP #303,
  nccl #1259).
- PCIe Gen5 P2P between GPUs without NVLink: ~37 GB/s staged / ~50 GB/s direct; NCCL small-message ~20 us
  (docs/sources.md).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

from gpuprobe.results.model import DeviceInfo, GpuPair, Measurement, Results, RunInfo, Stat, Topology

CONFIGS = Path(__file__).resolve().parents[2] / "data" / "configs"
H100_NVML_BYTES = 81559 << 20


def _m(probe: str, unit: str, value: float, **kw) -> Measurement:
    stat = Stat(n=1, median=value, min=value, max=value, mean=value, stdev=0.0, cv=0.0, p95=value)
    return Measurement(probe=probe, status="ok", unit=unit, samples=[value], stat=stat, **kw)


def _ar_times(n: int, alpha_us: float, busbw: float, sizes: list[int]) -> list[tuple[int, float]]:
    return [(s, alpha_us + s * 2 * (n - 1) / n / (busbw * 1e3)) for s in sizes]


def h100_box(num: int = 8, nvlink: bool = True, measure_groups: bool = True) -> Results:
    """``num`` H100s, NVSwitch-connected (nvlink=True) or PCIe-only; all-reduce curves for every pair and all."""
    devices = [DeviceInfo(index=i, name="NVIDIA H100 80GB HBM3" if nvlink else "NVIDIA H100 PCIe",
                          memory_total_bytes=H100_NVML_BYTES) for i in range(num)]
    pairs = [GpuPair(a, b, "NV18" if nvlink else "PXB", 18 if nvlink else 0, {"read": "ok"}, True)
             for a, b in combinations(range(num), 2)]
    ms = []
    for i in range(num):
        ms.append(_m("device_local_copy", "GB/s", 1488.21, src=f"gpu{i}", dst=f"gpu{i}"))
        ms.append(_m("host_to_device_memcpy_ce", "GB/s", 52.78, src="host", dst=f"gpu{i}"))
    p2p = 395.0 if nvlink else 50.0
    for a, b in combinations(range(num), 2):
        ms.append(_m("device_to_device_memcpy_read_ce", "GB/s", p2p, src=f"gpu{a}", dst=f"gpu{b}"))
    sizes = [1 << k for k in range(10, 31, 2)]
    groups = [tuple(range(num))] + (list(combinations(range(num), 2)) if measure_groups else [])
    for g in groups:
        n = len(g)
        alpha = (6.0 + 6.5 * (n - 2) / 6) if nvlink else 20.0
        busbw = 365.0 if nvlink else 40.0
        for s, t in _ar_times(n, alpha, busbw, sizes):
            ms.append(_m("all_reduce", "us", t, ranks=list(g), size_bytes=s,
                         algbw_gbps=s / t / 1e3, busbw_gbps=s / t / 1e3 * 2 * (n - 1) / n))
    return Results(run=RunInfo(gpuprobe_version="test", started_utc="2026-01-01T00:00:00Z"), devices=devices,
                   topology=Topology(gpu_count=num, pairs=pairs), measurements=ms, status="complete")


import pytest  # noqa: E402


@pytest.fixture
def box():
    """Factory: ``box(num=8, nvlink=True, measure_groups=True)`` -> derived Results (see module docstring)."""
    return h100_box


@pytest.fixture
def configs() -> Path:
    return CONFIGS
