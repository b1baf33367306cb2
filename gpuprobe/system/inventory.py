"""Facts about the GPUs and how they are connected, read through an NVML gateway (live or replayed).

``collect_devices`` and ``collect_topology`` only call ``nvml.query``; they run unchanged on a GPU machine
(``LiveNvml``) and on any machine from a recording (``ReplayNvml``). A fact NVML does not give is None in the
result, and the refused query is listed in ``Topology.unavailable``.

The small functions at the top (``path_class``, ``p2p_status_text``, ``ids_from_mask``, ``nvlink_counts``,
``bus_id_key``) are pure: they hold the mapping rules and are tested without NVML.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuprobe.errors import NoGpu, UsageError
from gpuprobe.results.model import DeviceInfo, GpuPair, NvLink, Topology
from gpuprobe.system.nvml import LiveNvml, NvmlGateway, ReplayNvml, gpu

# NVML constants, written out so that mapping code does not need pynvml (values from nvml.h).
TOPOLOGY_INTERNAL, TOPOLOGY_SINGLE, TOPOLOGY_MULTIPLE = 0, 10, 20
TOPOLOGY_HOSTBRIDGE, TOPOLOGY_NODE, TOPOLOGY_SYSTEM = 30, 40, 50
P2P_CAPS = {"read": 0, "write": 1, "nvlink": 2, "atomics": 3}
"""NVML_P2P_CAPS_INDEX_*. (pynvml defines NVML_P2P_CAPS_INDEX_READ as the tuple ``(0,)``, so it is not used.)"""
NVLINK_DEVICE_GPU, NVLINK_DEVICE_IBMNPU, NVLINK_DEVICE_SWITCH = 0, 1, 2
NVLINK_MAX_LINKS = 36
"""NVML_NVLINK_MAX_LINKS in current drivers (18 on Hopper); links are read until the first one NVML refuses."""
CLOCK_SM, CLOCK_MEM = 1, 2
MEMORY_ERROR_UNCORRECTED, VOLATILE_ECC = 1, 0
CPU_SET_WORDS = 16
"""64-bit words of CPU mask asked for (1024 CPUs). Fixed, so a replay asks the same call as the recording."""
NODE_SET_WORDS, AFFINITY_SCOPE_NODE = 1, 0
"""NUMA node mask of one word (64 nodes), NVML_AFFINITY_SCOPE_NODE."""

_LEVEL_CLASS = {
    TOPOLOGY_INTERNAL: "PIX",
    TOPOLOGY_SINGLE: "PIX",
    TOPOLOGY_MULTIPLE: "PXB",
    TOPOLOGY_HOSTBRIDGE: "PHB",
    TOPOLOGY_NODE: "NODE",
    TOPOLOGY_SYSTEM: "SYS",
}

_P2P_TEXT = {
    0: "ok",
    1: "chipset not supported",
    2: "GPU not supported",
    3: "topology not supported",
    4: "disabled by regkey",
    5: "not supported",
    6: "unknown",
}


# -- pure mapping rules ---------------------------------------------------------------------------------------
def path_class(ancestor_level: int | None, nvlink_count: int = 0) -> str:
    """``nvidia-smi topo -m`` class of a GPU pair: ``NV<n>`` when n > 0 NVLinks join them, else from the
    deepest common PCIe ancestor (INTERNAL/SINGLE -> PIX, MULTIPLE -> PXB, HOSTBRIDGE -> PHB, NODE -> NODE,
    SYSTEM -> SYS); ``unknown`` when neither is known."""
    if nvlink_count > 0:
        return f"NV{nvlink_count}"
    if ancestor_level is None:
        return "unknown"
    return _LEVEL_CLASS.get(ancestor_level, "unknown")


def p2p_status_text(code: int | None) -> str:
    """NVML P2P status code -> ``ok`` or the reason peer access is not possible."""
    if code is None:
        return "not reported by the driver"
    return _P2P_TEXT.get(code, f"unknown status {code}")


def ids_from_mask(words: Iterable[int], bits_per_word: int = 64) -> list[int]:
    """Ids (CPUs or NUMA nodes) set in an NVML affinity mask: bit j of word i is id i*64 + j. A mask holding
    anything but whole numbers >= 0 (a damaged snapshot) is unknown: no ids."""
    words = list(words)
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in words):
        return []
    ids = []
    for i, word in enumerate(words):
        for j in range(bits_per_word):
            if (int(word) >> j) & 1:
                ids.append(i * bits_per_word + j)
    return ids


_BUS_ID = re.compile(r"^(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})(?:\.([0-7]))?$")


def bus_id_key(bus_id: str | None) -> tuple[int, int, int, int] | None:
    """A PCI bus id as (domain, bus, device, function), so ``00000000:18:00.0`` equals ``0000:18:00.0``."""
    if not bus_id:
        return None
    m = _BUS_ID.match(bus_id.strip())
    if not m:
        return None
    domain, bus, dev, fn = m.groups()
    return (int(domain or "0", 16), int(bus, 16), int(dev, 16), int(fn or "0"))


def nvlink_counts(
    links: Mapping[int, Iterable[tuple[str | None, int | None]]], bus_ids: Mapping[int, str | None]
) -> dict[tuple[int, int], int]:
    """Active NVLinks per GPU pair (a < b).

    ``links[i]`` lists GPU i's *active* links as (remote PCI bus id, remote device type or None);
    ``bus_ids[i]`` is GPU i's own bus id. A link whose remote is another GPU's bus id joins that pair
    directly (counted from each side; the larger side is taken, so a link seen only one way still counts).
    Links to an NVSwitch (type 2) join every two GPUs that both reach a switch: such a pair counts
    min(switch links of a, switch links of b), as ``nvidia-smi topo -m`` shows NV18 on 8-GPU HGX H100.
    """
    by_bus = {bus_id_key(b): i for i, b in bus_ids.items() if bus_id_key(b) is not None}
    direct: dict[tuple[int, int], list[int]] = {}
    switch_links: dict[int, int] = {}
    for i, active in links.items():
        for remote, remote_type in active:
            j = by_bus.get(bus_id_key(remote))
            if remote_type == NVLINK_DEVICE_SWITCH:
                switch_links[i] = switch_links.get(i, 0) + 1
            elif j is not None and j != i:
                pair = (min(i, j), max(i, j))
                direct.setdefault(pair, [0, 0])[0 if i == pair[0] else 1] += 1
    counts = {pair: max(sides) for pair, sides in direct.items()}
    switched = sorted(switch_links)
    for x, a in enumerate(switched):
        for b in switched[x + 1 :]:
            counts[(a, b)] = counts.get((a, b), 0) + min(switch_links[a], switch_links[b])
    return counts


def combine_p2p(forward: str, backward: str) -> str:
    """One text for an unordered pair from the a->b and b->a answers."""
    if forward == backward:
        return forward
    return f"a->b {forward}; b->a {backward}"


# -- collection -----------------------------------------------------------------------------------------------
def device_count(nvml: NvmlGateway) -> int:
    """Number of GPUs NVML sees; raises ``NoGpu`` when it sees none."""
    count = nvml.query("nvmlDeviceGetCount")
    if not count:
        raise NoGpu("NVML sees no GPU on this machine" if count == 0 else "NVML did not report a GPU count")
    return int(count)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _collect_nvlinks(nvml: NvmlGateway, g: Any) -> list[NvLink]:
    links: list[NvLink] = []
    for link in range(NVLINK_MAX_LINKS):
        # Link 0 being refused means "no NVLink here" (listed as unavailable); a later refusal is the end.
        state = nvml.query("nvmlDeviceGetNvLinkState", g, link, optional=link > 0)
        if state is None:
            break
        active = bool(state)
        version = remote = None
        if active:
            version = _int(nvml.query("nvmlDeviceGetNvLinkVersion", g, link))
            pci = nvml.query("nvmlDeviceGetNvLinkRemotePciInfo", g, link)
            remote = (pci.get("busId") or pci.get("busIdLegacy")) if isinstance(pci, dict) else None
        links.append(NvLink(link=link, active=active, version=version, remote_pci_bus_id=remote or None))
    return links


def _numa_node(nvml: NvmlGateway, g: Any) -> int | None:
    """The NUMA node the GPU is local to, as in the "NUMA Affinity" column of ``nvidia-smi topo -m``.

    That column comes from the GPU's memory affinity (nvmlDeviceGetMemoryAffinity, node scope); one node set
    gives the answer. ``nvmlDeviceGetNumaNodeId`` names the node of the GPU's *own* memory, which exists only
    where GPU memory is a NUMA node (e.g. Grace Hopper); it is the fallback. (On a PCIe H100 in a VM the first
    says 0 and the second is not supported.)
    """
    mask = nvml.query("nvmlDeviceGetMemoryAffinity", g, NODE_SET_WORDS, AFFINITY_SCOPE_NODE)
    nodes = ids_from_mask(mask) if isinstance(mask, list) else []
    if len(nodes) == 1:
        return nodes[0]
    return _int(nvml.query("nvmlDeviceGetNumaNodeId", g))


def collect_device(nvml: NvmlGateway, index: int) -> DeviceInfo:
    """Everything NVML tells about GPU ``index``; None where it does not say."""
    g = gpu(index)
    q = nvml.query
    pci = q("nvmlDeviceGetPciInfo", g)
    mem = q("nvmlDeviceGetMemoryInfo", g)
    cc = q("nvmlDeviceGetCudaComputeCapability", g)
    persistence = q("nvmlDeviceGetPersistenceMode", g)
    ecc = q("nvmlDeviceGetEccMode", g)
    ecc_on = bool(ecc[0]) if isinstance(ecc, list) and ecc else None
    power_mw = q("nvmlDeviceGetEnforcedPowerLimit", g)
    mask = q("nvmlDeviceGetCpuAffinity", g, CPU_SET_WORDS)
    numa = _numa_node(nvml, g)
    cpus = ids_from_mask(mask) if isinstance(mask, list) else []
    return DeviceInfo(
        index=index,
        name=str(q("nvmlDeviceGetName", g) or f"GPU {index}"),
        uuid=q("nvmlDeviceGetUUID", g),
        pci_bus_id=(pci.get("busId") or pci.get("busIdLegacy") or None) if isinstance(pci, dict) else None,
        memory_total_bytes=_int(mem.get("total")) if isinstance(mem, dict) else None,
        compute_capability=f"{cc[0]}.{cc[1]}" if isinstance(cc, list) and len(cc) == 2 else None,
        sm_clock_max_mhz=_int(q("nvmlDeviceGetMaxClockInfo", g, CLOCK_SM)),
        mem_clock_max_mhz=_int(q("nvmlDeviceGetMaxClockInfo", g, CLOCK_MEM)),
        sm_clock_mhz=_int(q("nvmlDeviceGetClockInfo", g, CLOCK_SM)),
        mem_clock_mhz=_int(q("nvmlDeviceGetClockInfo", g, CLOCK_MEM)),
        persistence_mode=bool(persistence) if persistence is not None else None,
        ecc_enabled=ecc_on,
        ecc_errors_uncorrected=(
            _int(q("nvmlDeviceGetTotalEccErrors", g, MEMORY_ERROR_UNCORRECTED, VOLATILE_ECC)) if ecc_on else None
        ),
        power_limit_w=power_mw / 1000.0 if isinstance(power_mw, int | float) else None,
        pcie_gen_current=_int(q("nvmlDeviceGetCurrPcieLinkGeneration", g)),
        pcie_gen_max=_int(q("nvmlDeviceGetMaxPcieLinkGeneration", g)),
        pcie_width_current=_int(q("nvmlDeviceGetCurrPcieLinkWidth", g)),
        pcie_width_max=_int(q("nvmlDeviceGetMaxPcieLinkWidth", g)),
        pcie_replay_counter=_int(q("nvmlDeviceGetPcieReplayCounter", g)),
        numa_node=numa,
        cpu_affinity=cpus or None,
        nvlinks=_collect_nvlinks(nvml, g),
    )


def collect_devices(nvml: NvmlGateway) -> list[DeviceInfo]:
    """One ``DeviceInfo`` per GPU NVML sees, in NVML index order. Raises ``NoGpu`` when there is none."""
    return [collect_device(nvml, i) for i in range(device_count(nvml))]


def collect_topology(
    nvml: NvmlGateway,
    devices: list[DeviceInfo],
    cuda_peer_access: Callable[[int, int], bool | None] | None = None,
) -> Topology:
    """Path class, NVLink count and P2P status of every unordered GPU pair (a < b).

    ``cuda_peer_access(a, b)``, when given, says whether CUDA can enable peer access (measured elsewhere).
    ``unavailable`` lists every query the driver refused while collecting devices and topology.
    """
    links: dict[int, list[tuple[str | None, int | None]]] = {}
    for d in devices:
        active = [link for link in d.nvlinks if link.active]
        links[d.index] = [
            (
                link.remote_pci_bus_id,
                _int(nvml.query("nvmlDeviceGetNvLinkRemoteDeviceType", gpu(d.index), link.link)),
            )
            for link in active
        ]
    counts = nvlink_counts(links, {d.index: d.pci_bus_id for d in devices})
    pairs = []
    for x, da in enumerate(devices):
        for db in devices[x + 1 :]:
            a, b = da.index, db.index
            level = _int(nvml.query("nvmlDeviceGetTopologyCommonAncestor", gpu(a), gpu(b)))
            n = counts.get((a, b), 0)
            p2p = {}
            for cap, idx in P2P_CAPS.items():
                fwd = p2p_status_text(_int(nvml.query("nvmlDeviceGetP2PStatus", gpu(a), gpu(b), idx)))
                bwd = p2p_status_text(_int(nvml.query("nvmlDeviceGetP2PStatus", gpu(b), gpu(a), idx)))
                p2p[cap] = combine_p2p(fwd, bwd)
            pairs.append(
                GpuPair(
                    a=a,
                    b=b,
                    path_class=path_class(level, n),
                    nvlink_count=n,
                    p2p_nvml=p2p,
                    cuda_peer_access=cuda_peer_access(a, b) if cuda_peer_access else None,
                )
            )
    source = getattr(nvml, "source", "nvml")
    return Topology(gpu_count=len(devices), pairs=pairs, source=source, unavailable=list(nvml.unavailable))


def driver_info(nvml: NvmlGateway) -> dict[str, Any]:
    """Driver version and the CUDA version the driver supports (e.g. ``13.0``), None where not reported."""
    cuda = _int(nvml.query("nvmlSystemGetCudaDriverVersion"))
    return {
        "driver_version": nvml.query("nvmlSystemGetDriverVersion"),
        "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None,
    }


@dataclass
class SystemFacts:
    """What NVML says about one machine: its GPUs, their connections and the driver."""

    devices: list[DeviceInfo]
    topology: Topology
    driver: dict[str, Any] = field(default_factory=dict)
    origin: str = "live NVML"
    """``live NVML`` or ``NVML snapshot <file> (<host>, <time>)``."""


def read_system(nvml: NvmlGateway, cuda_peer_access: Callable[[int, int], bool | None] | None = None) -> SystemFacts:
    """Driver info, devices and topology from any gateway."""
    driver = driver_info(nvml)
    devices = collect_devices(nvml)
    return SystemFacts(devices, collect_topology(nvml, devices, cuda_peer_access), driver)


def load_system(
    nvml_snapshot: str | os.PathLike[str] | None = None,
    record_to: str | os.PathLike[str] | None = None,
    cuda_peer_access: Callable[[int, int], bool | None] | None = None,
) -> SystemFacts:
    """Facts from a recorded snapshot file, or from live NVML (also written to ``record_to`` when given).

    Raises ``NvmlUnavailable`` (live, no NVML library/driver), ``NoGpu`` (NVML sees no GPU),
    ``ResultsFileError`` (a snapshot file that is missing or not a snapshot) and ``UsageError`` (both files).
    """
    if nvml_snapshot is not None:
        if record_to is not None:
            raise UsageError("record a snapshot from live NVML, not from another snapshot", hint="drop one option")
        replay = ReplayNvml.from_file(nvml_snapshot)
        facts = read_system(replay, cuda_peer_access)
        facts.origin = f"NVML snapshot {nvml_snapshot} ({replay.hostname}, {replay.captured_utc})"
        return facts
    with LiveNvml(record=record_to is not None) as nvml:
        facts = read_system(nvml, cuda_peer_access)
        if record_to is not None:
            nvml.write_snapshot(record_to)
    return facts


def snapshot_system(
    record_to: str | os.PathLike[str] | None = None,
    cuda_peer_access: Callable[[int, int], bool | None] | None = None,
) -> tuple[list[DeviceInfo], Topology]:
    """Devices and topology from live NVML; with ``record_to``, also write the NVML snapshot there."""
    facts = load_system(record_to=record_to, cuda_peer_access=cuda_peer_access)
    return facts.devices, facts.topology


def replay_system(path: str | os.PathLike[str]) -> tuple[list[DeviceInfo], Topology]:
    """Devices and topology from a recorded NVML snapshot file."""
    facts = load_system(nvml_snapshot=path)
    return facts.devices, facts.topology
