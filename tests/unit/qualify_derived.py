"""DERIVED test inputs for ``gpuprobe qualify``, built from the real single-H100 capture.

Every function here starts from ``tests/data/h100-probe-2026-11-25.json`` (a real ``gpuprobe probe`` run on one
NVIDIA H100 80GB HBM3, PCIe Gen5 x16, in a VM) and changes it on purpose to make a degraded or multi-GPU case.
None of these results were measured as such: each change is named where it is made and recorded in the
results' ``notes`` (``DERIVED TEST INPUT: ...``), so a derived file can never pass for a capture.

Multi-GPU inputs keep the real record structure and the real host figures of GPU 0 for every GPU; the figures
between GPUs, which the capture cannot have, are the published 8×H100 NV18 numbers of the project's research
note (docs/sources.md): D2D CE read ~395 GB/s, write ~397.5 GB/s, peer pointer chase ~830 ns, ring all-reduce
busbw ~365 GB/s.
"""

from __future__ import annotations

import copy
from pathlib import Path

from gpuprobe.results import load_results
from gpuprobe.results.model import GpuPair, Measurement, NvLink, Results, Topology
from gpuprobe.results.stats import summarize

DATA = Path(__file__).resolve().parents[1] / "data"
REAL_H100 = DATA / "h100-probe-2026-11-25.json"

NV18_READ_CE = 395.0
NV18_WRITE_CE = 397.5
NV18_PEER_LATENCY_NS = 830.0
NV18_RING_BUSBW = 365.0


def real() -> Results:
    """The real capture, unchanged."""
    return load_results(REAL_H100)


def derived(note: str, base: Results | None = None) -> Results:
    r = copy.deepcopy(base) if base is not None else real()
    r.notes.append(f"DERIVED TEST INPUT: {note}")
    return r


def find(r: Results, probe: str, **match) -> Measurement:
    (m,) = r.find(probe, **match)
    return m


def scale(m: Measurement, factor: float) -> Measurement:
    """Multiply every sample of a measurement (and so its median) by ``factor``."""
    m.samples = [s * factor for s in m.samples]
    m.stat = summarize(m.samples)
    return m


def set_samples(m: Measurement, value: float, spread: float = 0.002) -> Measurement:
    m.samples = [value * (1 - spread), value, value * (1 + spread)]
    m.stat = summarize(m.samples)
    return m


def lowered(probe: str, fraction: float, **match) -> Results:
    r = derived(f"{probe} lowered to {fraction:.0%} of the real figure")
    scale(find(r, probe, **match), fraction)
    return r


def downtrained(gen: int | None = None, width: int | None = None, figures: float | None = None) -> Results:
    """The link of GPU 0 reported below its maximum; ``figures`` scales every pinned host bandwidth figure."""
    r = derived(f"GPU 0 link reported at Gen{gen or 5} x{width or 16}"
                + (f", pinned host figures scaled by {figures}" if figures is not None else ", figures unchanged"))
    d = r.devices[0]
    if gen is not None:
        d.pcie_gen_current = gen
    if width is not None:
        d.pcie_width_current = width
    if figures is not None:
        for m in r.measurements:
            if m.status == "ok" and m.unit == "GB/s" and m.host_memory == "pinned":
                scale(m, figures)
    return r


def mismatch(probe: str = "device_to_host_memcpy_ce") -> Results:
    r = derived(f"{probe} marked as not verified (12 wrong words)")
    m = find(r, probe)
    m.status, m.verified, m.wrong_elements = "mismatch", False, 12
    m.reason = "12 words differed from the source pattern"
    return r


def with_device(note: str, **fields) -> Results:
    r = derived(note)
    for k, v in fields.items():
        setattr(r.devices[0], k, v)
    return r


# -- multi-GPU ------------------------------------------------------------------------------------------------
def _gpu_copy(m: Measurement, g: int) -> Measurement:
    c = copy.deepcopy(m)
    for attr in ("src", "dst", "initiator"):
        if getattr(c, attr) == "gpu0":
            setattr(c, attr, f"gpu{g}")
    return c


def _d2d(template: Measurement, probe: str, a: int, b: int, value: float, unit: str, path: str, engine: str = "ce",
         traffic: str = "unidirectional", initiator: int | None = None) -> Measurement:
    m = copy.deepcopy(template)
    m.probe, m.unit, m.src, m.dst, m.direction, m.engine, m.traffic = probe, unit, f"gpu{a}", f"gpu{b}", "d2d", \
        engine, traffic
    m.initiator, m.host_memory, m.path_class, m.notes = f"gpu{b if initiator is None else initiator}", None, path, []
    return set_samples(m, value)


def multi_gpu(n: int = 8, nvlinks: int = 18, path: str | None = None, p2p: str = "ok",
              cuda_peer: bool = True) -> Results:
    """An n-GPU system made of n copies of the real H100: NV``nvlinks`` through NVSwitch (``path`` None), or a
    PCIe system (``path`` = PXB/SYS/..., no NVLink) whose peer figures are 0.8 × the Gen5 line rate."""
    base = real()
    kind = f"NV{nvlinks} through NVSwitch" if path is None else f"PCIe {path}"
    r = derived(f"{n} GPUs made of copies of the real H100 records ({kind}); peer figures from docs/sources.md", base)
    dev0 = r.devices[0]
    r.devices = []
    for g in range(n):
        d = copy.deepcopy(dev0)
        d.index, d.pci_bus_id, d.uuid = g, f"00000000:{0x18 + g:02x}:00.0", f"GPU-derived-{g}"
        d.nvlinks = [NvLink(link=i, active=True, version=4, remote_pci_bus_id="00000000:a0:00.0")
                     for i in range(nvlinks)] if path is None else []
        r.devices.append(d)
    pc = f"NV{nvlinks}" if path is None else path
    r.topology = Topology(gpu_count=n, pairs=[
        GpuPair(a=a, b=b, path_class=pc, nvlink_count=nvlinks if path is None else 0,
                p2p_nvml={"read": p2p, "write": p2p, "nvlink": "ok" if path is None else "not supported",
                          "atomics": p2p}, cuda_peer_access=cuda_peer)
        for a in range(n) for b in range(a + 1, n)])
    host = [m for m in base.measurements if m.status == "ok" and m.direction in ("h2d", "d2h", "local")]
    template = find(base, "host_to_device_memcpy_ce")
    lat_template = find(base, "host_device_latency_sm")
    ar_template = base.find("all_reduce")[-1]
    r.measurements = []
    for g in range(n):
        r.measurements += [_gpu_copy(m, g) for m in host]
    line = 63.0
    for a in range(n):
        for b in range(n):
            if a == b:
                continue
            if path is None:
                read, write = NV18_READ_CE, NV18_WRITE_CE
            else:
                read = write = 0.8 * line
            if cuda_peer:
                r.measurements.append(_d2d(template, "device_to_device_memcpy_read_ce", a, b, read, "GB/s", pc))
                r.measurements.append(_d2d(template, "device_to_device_memcpy_write_ce", a, b, write, "GB/s", pc,
                                           initiator=a))
                if path is None:
                    r.measurements.append(_d2d(lat_template, "device_to_device_latency_sm", a, b,
                                               NV18_PEER_LATENCY_NS, "ns", pc, engine="sm"))
            else:
                for probe in ("device_to_device_memcpy_read_ce", "device_to_device_memcpy_write_ce"):
                    r.measurements.append(Measurement(
                        probe=probe, status="waived", unit="GB/s", src=f"gpu{a}", dst=f"gpu{b}", direction="d2d",
                        engine="ce", path_class=pc,
                        reason=f"no peer access between GPU{a} and GPU{b} (CUDA reports it cannot)"))
            r.measurements.append(_d2d(template, "device_to_device_memcpy_staged_ce", a, b, 0.58 * line, "GB/s",
                                       pc, engine="staged"))
    if cuda_peer and path is None:
        ar = copy.deepcopy(ar_template)
        ar.ranks, ar.busbw_gbps = list(range(n)), NV18_RING_BUSBW
        ar.algbw_gbps = NV18_RING_BUSBW * n / (2 * (n - 1))
        ar.notes = []
        r.measurements.append(ar)
    return r


def slow_pair(r: Results, a: int, b: int, value: float, probe: str = "device_to_device_memcpy_read_ce") -> Results:
    r.notes.append(f"DERIVED TEST INPUT: {probe} gpu{a}->gpu{b} set to {value} GB/s")
    set_samples(find(r, probe, src=f"gpu{a}", dst=f"gpu{b}"), value)
    return r


def nvlink_down(r: Results, g: int, pcie_figure: float = 50.0) -> Results:
    """Every NVLink of GPU ``g`` reported inactive while the topology still says NV18, and its peer copies at
    PCIe speed (the published failure signature: NV# in topo plus PCIe-level numbers)."""
    r.notes.append(f"DERIVED TEST INPUT: all NVLinks of gpu{g} inactive, its peer copies at {pcie_figure} GB/s")
    for link in r.devices[g].nvlinks:
        link.active = False
    for m in r.measurements:
        if m.direction == "d2d" and m.engine == "ce" and m.unit == "GB/s" and f"gpu{g}" in (m.src, m.dst):
            set_samples(m, pcie_figure)
    return r
