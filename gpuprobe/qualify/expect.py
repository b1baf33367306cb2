"""What each measurement should be, derived from the link and device it ran on.

Every expectation is returned with the figure *and* one line saying how it was derived, so a verdict can
be checked by hand. The rules, each with where its numbers come from (``docs/sources.md`` is the project's
table of published figures with their sources):

PCIe line rate per direction (x16; scaled by width/16): Gen1 4.0, Gen2 8.0, Gen3 15.75, Gen4 31.5,
Gen5 63.0, Gen6 126 GB/s (transfer rate × encoding, 8b/10b up to Gen2, 128b/130b from Gen3; Gen6's FLIT
mode taken at its nominal 2 × Gen5). The expectation uses the link's *maximum* generation and width, never
the current one, so a downtrained link is judged against what the slot should do.

Efficiencies (measured / line rate of a healthy link):

=====================================  ======  ==============================================================
host <-> GPU, copy engine, one way      0.87   PCIe CE 83-88 % of line rate: H100 Gen5 H2D/D2H CE 55.2-55.4 of
                                               63.0 (8×H100 qualification sheet), Gen4 25-26.5 of 31.5
                                               (nvbandwidth README) — docs/sources.md
host <-> GPU, SM copy kernel, one way   0.80   SM copies issue smaller requests; gpuprobe's H100 Gen5 captures
                                               50.8-52.4 of 63.0 (2026-11-25)
host <-> GPU, CE, bidirectional         0.70   per direction, while the reverse copy runs. Published figures
                                               spread widely: H100 busGrind ~101 GB/s both ways (0.80 per
                                               direction), nvbandwidth README Gen4 18.5 (0.59), A100 12-13 /
                                               24-25 (0.40 / 0.78, nvbandwidth #11); 0.70 sits in between
host <-> GPU, SM, bidirectional         0.45   no published anchor; gpuprobe's H100 Gen5 captures 26-28.5 GB/s
                                               per direction (0.41-0.45): SM copy kernels split their requests
                                               between both directions
GPU <-> GPU over NVLink, CE, one way    0.88   H100 NV18 D2D CE read/write 395-397.5 of 450 (nvbandwidth,
                                               qualification sheet) — docs/sources.md
GPU <-> GPU over NVLink, SM, one way    0.80   ~20 of 25 GB/s per link with 128 B payloads (nccl-tests #149)
GPU <-> GPU over NVLink, bidirectional  0.82   CE, per direction: p2pBandwidthLatencyTest bidir 739-775 GB/s
                                               sum on H100 (0.82-0.86 per direction); SM 0.75 (rule of thumb)
GPU <-> GPU over PCIe P2P               0.75   CE one way: PCIe P2P 22-26 GB/s on Gen4 (0.70-0.83,
                                               nvbandwidth #11, #15, #50); SM 0.70, bidirectional 0.60 / 0.45
                                               (rules of thumb)
GPU -> GPU staged through the host      0.58   peer access off, two PCIe hops: H100 ~37 GB/s of 63.0 one way,
                                               45-53 GB/s both ways (0.35 per direction) — nccl #1264
local copy (HBM), bytes counted once    0.85   of half the datasheet HBM bandwidth (a copy reads and writes
                                               each byte): H100 1492 of 1675 in gpuprobe's captures (0.89);
                                               p2pBandwidthLatencyTest diagonal 2.5-2.9 TB/s counted twice
                                               (0.75-0.87) — docs/sources.md. SM copy 0.80
all-reduce busbw over NVLink            0.80   ring, no NVLS: 8×H100 360-370 of 450 (nccl-tests #212, #326,
                                               nccl #1455), 8×A100 ~230 of 300 (nccl-tests #149): 0.77-0.82
all-reduce busbw over PCIe              0.40   rule of thumb (no anchor in docs/sources.md): PCIe rings cross the
                                               host bridge at least once per step
=====================================  ======  ==============================================================

NVLink per-link bandwidth per direction: NVLink1 20, NVLink2/3/4 25, NVLink5 50 GB/s (P100, V100, A100,
H100, B200 datasheets: 12 × 25 = 300 on A100, 18 × 25 = 450 on H100, 18 × 50 = 900 on B200).

Latency (lower is better; the expectation is the upper end of healthy figures):
host pointer chase (``host_device_latency_sm``) 1200 ns — gpuprobe's H100 PCIe Gen5 captures 1187-1200 ns
(2026-11-25, VM); no published anchor. GPU -> peer pointer chase over NVLink 830 ns (822-830 ns, 8×H100
qualification sheet); over PCIe not judged. 16-byte CE copies: host <-> GPU 2.5 µs (CPU enqueue 1.6-2.2 µs,
docs/sources.md; gpuprobe H100 1.55-2.43 µs), GPU <-> GPU with peer access 3.3 µs (H100 2.3-3.3 µs), staged
through the host 19 µs (H100 15-19 µs).

Not judged (``NoExpectation``, reported as INFO): pageable host copies (the driver stages them through its own
pinned buffer, so the host CPU and memory set the speed), the host's kernel-launch time (the CPU's), the all-GPU
host tests (their share of the host's PCIe and memory bandwidth depends on how GPUs share root ports; they are
compared across GPUs as outliers), one-rank and CPU (gloo) all-reduce.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gpuprobe.results.model import DeviceInfo, GpuPair, Measurement, Results, gpu_index

PCIE_X16_GBPS = {1: 4.0, 2: 8.0, 3: 15.75, 4: 31.5, 5: 63.0, 6: 126.0}
"""PCIe line rate per direction of an x16 link, GB/s (1e9 B/s), by generation."""

NVLINK_LINK_GBPS = {1: 20.0, 2: 25.0, 3: 25.0, 4: 25.0, 5: 50.0}
"""NVLink bandwidth per link per direction, GB/s, by NVLink version."""

NVLINK_VERSION_BY_CC = {"6.0": 1, "7.0": 2, "8.0": 3, "9.0": 4, "10.0": 5}
"""NVLink version of the SXM parts of each compute capability (used when NVML does not report the version)."""

EFFICIENCY = {
    ("pcie", "ce", "unidirectional"): 0.87,
    ("pcie", "sm", "unidirectional"): 0.80,
    ("pcie", "ce", "bidirectional"): 0.70,
    ("pcie", "sm", "bidirectional"): 0.45,
    ("nvlink", "ce", "unidirectional"): 0.88,
    ("nvlink", "sm", "unidirectional"): 0.80,
    ("nvlink", "ce", "bidirectional"): 0.82,
    ("nvlink", "sm", "bidirectional"): 0.75,
    ("pcie_p2p", "ce", "unidirectional"): 0.75,
    ("pcie_p2p", "sm", "unidirectional"): 0.70,
    ("pcie_p2p", "ce", "bidirectional"): 0.60,
    ("pcie_p2p", "sm", "bidirectional"): 0.45,
    ("staged", "staged", "unidirectional"): 0.58,
    ("staged", "staged", "bidirectional"): 0.35,
    ("hbm", "ce", "unidirectional"): 0.85,
    ("hbm", "sm", "unidirectional"): 0.80,
    ("allreduce", "nvlink", ""): 0.80,
    ("allreduce", "pcie", ""): 0.40,
}
"""Measured / line rate of a healthy link, by (link kind, engine, traffic). See the module docstring."""

EFFICIENCY_SOURCE = {
    ("pcie", "ce", "unidirectional"): "PCIe CE 83-88 % of line rate (H100 Gen5 55.2-55.4 GB/s, docs/sources.md)",
    ("pcie", "sm", "unidirectional"): "SM copy kernel ~80 % (gpuprobe H100 Gen5 captures 50.8-52.4 GB/s)",
    ("pcie", "ce", "bidirectional"): "bidirectional CE per direction 59-80 % published (docs/sources.md); 70 % taken",
    ("pcie", "sm", "bidirectional"): "no published anchor; gpuprobe H100 Gen5 captures 41-45 % per direction",
    ("nvlink", "ce", "unidirectional"): "NVLink CE ~88 % (H100 NV18 395-397.5 of 450, docs/sources.md)",
    ("nvlink", "sm", "unidirectional"): "NVLink SM ~80 % (20 of 25 GB/s per link, nccl-tests #149)",
    ("nvlink", "ce", "bidirectional"): "NVLink bidirectional 82-86 % per direction (H100 739-775 GB/s sum)",
    ("nvlink", "sm", "bidirectional"): "rule of thumb 75 % per direction for SM bidirectional",
    ("pcie_p2p", "ce", "unidirectional"): "PCIe P2P 70-83 % (Gen4 22-26 GB/s, docs/sources.md)",
    ("pcie_p2p", "sm", "unidirectional"): "rule of thumb 70 % for SM PCIe P2P",
    ("pcie_p2p", "ce", "bidirectional"): "rule of thumb 60 % per direction for PCIe P2P bidirectional",
    ("pcie_p2p", "sm", "bidirectional"): "rule of thumb 45 % per direction for SM PCIe P2P bidirectional",
    ("staged", "staged", "unidirectional"): "staged via host ~58 % (H100 ~37 of 63 GB/s, nccl #1264)",
    ("staged", "staged", "bidirectional"): "staged via host ~35 % per direction (H100 45-53 GB/s sum)",
    ("hbm", "ce", "unidirectional"): "local copy 85 % of HBM/2 (H100 captures 89 %, docs/sources.md 75-87 %)",
    ("hbm", "sm", "unidirectional"): "local SM copy 80 % of HBM/2 (H100 captures 84 %)",
    ("allreduce", "nvlink", ""): "ring busbw 77-82 % of NVLink (8×H100 360-370 of 450, docs/sources.md)",
    ("allreduce", "pcie", ""): "rule of thumb 40 % of the PCIe line rate (no published anchor)",
}


@dataclass(frozen=True)
class GpuModel:
    pattern: str
    """Regular expression matched (case-insensitive) against the NVML device name; first match wins."""
    hbm_gbps: float
    pcie_gen: int
    nvlink_version: int | None
    source: str


GPU_MODELS: tuple[GpuModel, ...] = (
    GpuModel(r"H100 NVL", 3900, 5, 4, "H100 NVL datasheet 3.9 TB/s"),
    GpuModel(r"H100.*PCIe", 2000, 5, 4, "H100 PCIe datasheet 2.0 TB/s"),
    GpuModel(r"H100|H800", 3350, 5, 4, "H100 SXM datasheet 3.35 TB/s"),
    GpuModel(r"GH200", 4000, 5, 4, "GH200 datasheet 4.0 TB/s (96 GB HBM3)"),
    GpuModel(r"H200", 4800, 5, 4, "H200 datasheet 4.8 TB/s"),
    GpuModel(r"H20\b", 4000, 5, 4, "H20 datasheet 4.0 TB/s"),
    GpuModel(r"B200", 8000, 6, 5, "B200 datasheet 8 TB/s"),
    GpuModel(r"A100.*PCIE.*80|A100 80GB PCIe", 1935, 4, 3, "A100 80GB PCIe datasheet 1.935 TB/s"),
    GpuModel(r"A100.*80", 2039, 4, 3, "A100 80GB SXM datasheet 2.039 TB/s"),
    GpuModel(r"A100", 1555, 4, 3, "A100 40GB datasheet 1.555 TB/s"),
    GpuModel(r"L40S", 864, 4, None, "L40S datasheet 864 GB/s"),
    GpuModel(r"\bL4\b", 300, 4, None, "L4 datasheet 300 GB/s"),
    GpuModel(r"\bA10\b", 600, 4, None, "A10 datasheet 600 GB/s"),
    GpuModel(r"V100", 900, 3, 2, "V100 SXM2 datasheet 900 GB/s"),
    GpuModel(r"RTX 4090", 1008, 4, None, "Ada whitepaper RTX 4090 1008 GB/s"),
)
"""Datasheet HBM bandwidth (GB/s), PCIe generation and NVLink version of common GPUs."""


def gpu_model(name: str | None) -> GpuModel | None:
    if not name:
        return None
    for model in GPU_MODELS:
        if re.search(model.pattern, name, re.IGNORECASE):
            return model
    return None


def pcie_line_gbps(gen: int | None, width: int | None) -> float | None:
    """Line rate per direction of a PCIe link (GB/s), None if the generation is unknown."""
    if gen is None or gen not in PCIE_X16_GBPS:
        return None
    return PCIE_X16_GBPS[gen] * (width if width else 16) / 16


def link_text(gen: int | None, width: int | None) -> str:
    return f"PCIe Gen{gen if gen is not None else '?'} x{width if width is not None else '?'}"


@dataclass(frozen=True)
class Expectation:
    """What a measurement should be: ``value`` in ``unit``, and how it was derived (``basis``)."""

    value: float
    unit: str
    basis: str
    higher_is_better: bool = True
    link: str | None = None
    """The link the expectation is derived from (``PCIe Gen5 x16``, ``NV18 (NVLink4)``, ``HBM``)."""
    kind: str = "pcie"
    """``pcie``, ``pcie_p2p``, ``nvlink``, ``staged``, ``hbm``, ``latency``, ``allreduce``."""


@dataclass(frozen=True)
class NoExpectation:
    """No expectation can be derived (the measurement is recorded, not judged); ``reason`` says why."""

    reason: str


@dataclass
class Facts:
    """The devices and pairs of a results file, indexed for the rules below."""

    devices: dict[int, DeviceInfo] = field(default_factory=dict)
    pairs: dict[tuple[int, int], GpuPair] = field(default_factory=dict)
    virtual_machine: bool | None = None

    @classmethod
    def from_results(cls, results: Results) -> Facts:
        pairs = {(p.a, p.b): p for p in results.topology.pairs} if results.topology else {}
        return cls({d.index: d for d in results.devices}, pairs, results.run.virtual_machine)

    def device(self, endpoint: str | None) -> DeviceInfo | None:
        i = gpu_index(endpoint)
        return self.devices.get(i) if i is not None else None

    def pair(self, a: int, b: int) -> GpuPair | None:
        return self.pairs.get((min(a, b), max(a, b)))

    def pcie(self, d: DeviceInfo | None) -> tuple[float, str] | None:
        """(line rate GB/s, description) of a GPU's link at its maximum generation and width."""
        if d is None:
            return None
        gen = d.pcie_gen_max if d.pcie_gen_max is not None else d.pcie_gen_current
        width = d.pcie_width_max if d.pcie_width_max is not None else d.pcie_width_current
        how = "max"
        if gen is None:
            model = gpu_model(d.name)
            if model is None:
                return None
            gen, how = model.pcie_gen, f"{model.pattern} datasheet"
        line = pcie_line_gbps(gen, width)
        if line is None:
            return None
        return line, f"{link_text(gen, width)} ({how}) {line:g} GB/s per direction"

    def nvlink(self, a: int, b: int, path_class: str | None) -> tuple[float, int, int, str] | None:
        """(GB/s per direction, links, version, description) of an NVLink pair, None if not NVLink."""
        pair = self.pair(a, b)
        count = pair.nvlink_count if pair and pair.nvlink_count else 0
        if not count:
            pc = path_class or (pair.path_class if pair else None) or ""
            m = re.fullmatch(r"NV(\d+)", pc)
            count = int(m.group(1)) if m else 0
        if not count:
            return None
        version, how = self._nvlink_version(a, b)
        per_link = NVLINK_LINK_GBPS.get(version, 25.0)
        total = count * per_link
        return total, count, version, f"NV{count} × {per_link:g} GB/s (NVLink{version}, {how}) = {total:g} GB/s"

    def _nvlink_version(self, a: int, b: int) -> tuple[int, str]:
        versions = [link.version for i in (a, b) for link in (self.devices[i].nvlinks if i in self.devices else [])
                    if link.active and link.version]
        if versions:
            return min(versions), "version from NVML"
        for i in (a, b):
            d = self.devices.get(i)
            if d and d.compute_capability in NVLINK_VERSION_BY_CC:
                return NVLINK_VERSION_BY_CC[d.compute_capability], f"sm_{d.compute_capability}"
            model = gpu_model(d.name if d else None)
            if model and model.nvlink_version:
                return model.nvlink_version, "GPU model"
        return 4, "version unknown, NVLink4 assumed"


def _eff(kind: str, engine: str, traffic: str) -> tuple[float, str]:
    key = (kind, engine, traffic)
    return EFFICIENCY[key], EFFICIENCY_SOURCE[key]


PAGEABLE = "pageable copies are staged by the driver through its own pinned buffer: the host CPU and memory " \
           "set the speed, not the link (recorded, not judged)"
HOST_LAUNCH = "host time per kernel launch: the host CPU sets it, not the GPU or its link; engines without CUDA " \
              "graphs (eager, long prompts) run at its pace (recorded, not judged)"
ALL_GPU_HOST = "all-GPU host copies share the host's root ports and memory: judged against the other GPUs " \
               "(outliers), not against a link figure"


def expectation(m: Measurement, facts: Facts) -> Expectation | NoExpectation:
    """The expectation of one measurement (``all_reduce``: see ``allreduce_expectation``)."""
    if m.probe == "all_reduce":
        return allreduce_expectation(m, facts)
    if m.unit in ("us", "ns"):
        return _latency(m, facts)
    if m.host_memory == "pageable":
        return NoExpectation(PAGEABLE)
    if m.probe.startswith(("all_to_host", "host_to_all")):
        return NoExpectation(ALL_GPU_HOST)
    engine = m.engine or "ce"
    if m.direction in ("h2d", "d2h"):
        gpu = m.dst if m.direction == "h2d" else m.src
        link = facts.pcie(facts.device(gpu))
        if link is None:
            return NoExpectation(f"the PCIe generation of {gpu} is not in the results file (no NVML facts)")
        line, desc = link
        eff, src = _eff("pcie", "sm" if engine == "sm" else "ce", m.traffic)
        return Expectation(line * eff, "GB/s", f"{desc} × {eff:.2f}: {src}", link=desc.split(" (")[0], kind="pcie")
    if m.direction == "local":
        d = facts.device(m.src)
        model = gpu_model(d.name if d else None)
        if model is None:
            return NoExpectation(f"no datasheet HBM figure for {d.name if d else m.src!r}")
        eff, src = _eff("hbm", "sm" if engine == "sm" else "ce", "unidirectional")
        half = model.hbm_gbps / 2
        return Expectation(half * eff, "GB/s",
                           f"{model.source} / 2 (bytes counted once, each read and written) = {half:g} GB/s × "
                           f"{eff:.2f}: {src}", link="HBM", kind="hbm")
    if m.direction == "d2d":
        a, b = gpu_index(m.src), gpu_index(m.dst)
        if a is None or b is None:
            return NoExpectation("source or destination GPU unknown")
        pcie = _pair_pcie(facts, a, b)
        if engine == "staged":
            if pcie is None:
                return NoExpectation("the PCIe links of the two GPUs are not in the results file")
            line, desc = pcie
            eff, src = _eff("staged", "staged", m.traffic)
            return Expectation(line * eff, "GB/s", f"staged through host memory over {desc} × {eff:.2f}: {src}",
                               link=desc.split(" (")[0], kind="staged")
        nv = facts.nvlink(a, b, m.path_class)
        eng = "sm" if engine == "sm" else "ce"
        if nv is not None:
            total, count, version, desc = nv
            eff, src = _eff("nvlink", eng, m.traffic)
            return Expectation(total * eff, "GB/s", f"{desc} × {eff:.2f}: {src}", link=f"NV{count} (NVLink{version})",
                               kind="nvlink")
        if pcie is None:
            return NoExpectation("neither NVLink nor the PCIe links of the two GPUs are in the results file")
        line, desc = pcie
        eff, src = _eff("pcie_p2p", eng, m.traffic)
        path = m.path_class or "PCIe"
        return Expectation(line * eff, "GB/s", f"PCIe peer copy ({path}) over {desc} × {eff:.2f}: {src}",
                           link=desc.split(" (")[0], kind="pcie_p2p")
    return NoExpectation(f"no rule for direction {m.direction!r}")


def _pair_pcie(facts: Facts, a: int, b: int) -> tuple[float, str] | None:
    links = [x for i in (a, b) if (x := facts.pcie(facts.devices.get(i))) is not None]
    if len(links) < 2:
        return None
    return min(links, key=lambda x: x[0])


LATENCY_NS_HOST_CHASE = 1200.0
LATENCY_NS_NVLINK_CHASE = 830.0
LATENCY_US_HOST_COPY = 2.5
LATENCY_US_PEER_COPY = 3.3
LATENCY_US_STAGED_COPY = 19.0


def _latency(m: Measurement, facts: Facts) -> Expectation | NoExpectation:
    if m.probe == "host_device_latency_sm":
        return Expectation(LATENCY_NS_HOST_CHASE, "ns", "GPU load from pinned host memory over PCIe: ~1200 ns "
                           "(gpuprobe H100 PCIe Gen5 captures 1187-1200 ns, 2026-11-25; no published anchor)",
                           higher_is_better=False, link="PCIe", kind="latency")
    if m.probe == "device_to_device_latency_sm":
        a, b = gpu_index(m.src), gpu_index(m.dst)
        if a is not None and b is not None and facts.nvlink(a, b, m.path_class):
            return Expectation(LATENCY_NS_NVLINK_CHASE, "ns", "GPU load from a peer over NVLink: ~830 ns "
                               "(8×H100 822-830 ns, docs/sources.md)", higher_is_better=False, link="NVLink",
                               kind="latency")
        return NoExpectation("no reference for a peer pointer chase over PCIe (recorded, not judged)")
    if m.probe in ("host_to_device_copy_latency_ce", "device_to_host_copy_latency_ce"):
        return Expectation(LATENCY_US_HOST_COPY, "us", "16-byte CE copy host<->GPU: at most ~2.5 µs (CPU enqueue "
                           "1.6-2.2 µs, docs/sources.md; gpuprobe H100 captures 1.55-2.43 µs)",
                           higher_is_better=False, link="PCIe", kind="latency")
    if m.probe == "device_to_device_copy_latency_ce":
        return Expectation(LATENCY_US_PEER_COPY, "us", "16-byte CE peer copy with peer access: at most ~3.3 µs "
                           "(H100 2.3-3.3 µs, A100 3.0-3.5 µs, docs/sources.md)", higher_is_better=False,
                           link=m.path_class, kind="latency")
    if m.probe == "device_to_device_copy_latency_staged_ce":
        return Expectation(LATENCY_US_STAGED_COPY, "us", "16-byte copy staged through the host: at most ~19 µs "
                           "(H100 15-19 µs with P2P off, docs/sources.md)", higher_is_better=False, link="host",
                           kind="latency")
    if m.probe == "host_kernel_launch":
        return NoExpectation(HOST_LAUNCH)
    return NoExpectation(f"no latency rule for {m.probe}")


def allreduce_expectation(m: Measurement, facts: Facts) -> Expectation | NoExpectation:
    """busbw expectation of an all-reduce group: the slowest link of the group × ring efficiency."""
    ranks = m.ranks or []
    if m.engine not in (None, "nccl"):
        return NoExpectation(f"{m.engine} all-reduce between CPU processes: no link expectation")
    if len(ranks) < 2:
        return NoExpectation("one rank: busbw is 0 by definition (the time is the per-call overhead)")
    pairs = [(a, b) for i, a in enumerate(ranks) for b in ranks[i + 1:]]
    nvlinks = [facts.nvlink(a, b, m.path_class if len(ranks) == 2 else None) for a, b in pairs]
    known = [nv for nv in nvlinks if nv is not None]
    if len(known) == len(nvlinks):
        total, count, version, desc = min(known, key=lambda nv: nv[0])
        eff, src = _eff("allreduce", "nvlink", "")
        return Expectation(total * eff, "GB/s", f"busbw bound by the slowest pair of the group, {desc} × "
                           f"{eff:.2f}: {src}", link=f"NV{count} (NVLink{version})", kind="allreduce")
    links = [x for i in ranks if (x := facts.pcie(facts.devices.get(i))) is not None]
    if len(links) < len(ranks):
        return NoExpectation("the links of the group are not in the results file")
    line, desc = min(links, key=lambda x: x[0])
    eff, src = _eff("allreduce", "pcie", "")
    return Expectation(line * eff, "GB/s", f"busbw over PCIe, slowest GPU link {desc} × {eff:.2f}: {src}",
                       link=desc.split(" (")[0], kind="allreduce")
