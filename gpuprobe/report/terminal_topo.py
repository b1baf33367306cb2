"""Terminal rendering of ``gpuprobe topo``: the ``nvidia-smi topo -m`` style matrix and link state tables.

Reads only the result model (``DeviceInfo``, ``Topology``); returns rich renderables and prints nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gpuprobe.report.fmt import plain, safe
from gpuprobe.results.model import DeviceInfo, GpuPair, Topology

NA = "N/A"

LEGEND = {
    "NV#": "bonded set of # NVLinks",
    "PIX": "at most one PCIe bridge",
    "PXB": "several PCIe bridges, no host bridge",
    "PHB": "a PCIe host bridge (usually the CPU)",
    "NODE": "PCIe and the interconnect between host bridges of one NUMA node",
    "SYS": "PCIe and the SMP interconnect between NUMA nodes (e.g. QPI/UPI, Infinity Fabric)",
}


def format_cpu_list(ids: Iterable[int] | None) -> str:
    """``[0, 1, 2, 3, 8, 9]`` -> ``0-3,8-9`` (the form ``nvidia-smi topo -m`` uses); N/A when unknown."""
    ids = sorted(set(ids or ()))
    if not ids:
        return NA
    runs: list[str] = []
    start = prev = ids[0]
    for i in [*ids[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        runs.append(f"{start}-{prev}" if prev != start else f"{start}")
        if i is not None:
            start = prev = i
    return ",".join(runs)


def _na(value: Any, suffix: str = "") -> str:
    return NA if value is None else f"{value}{suffix}"


def _pair_map(topology: Topology | None) -> dict[tuple[int, int], GpuPair]:
    return {(p.a, p.b): p for p in (topology.pairs if topology else [])}


def topo_matrix(devices: list[DeviceInfo], topology: Topology | None) -> Table:
    """GPU x GPU path classes, then CPU and NUMA affinity per GPU."""
    t = Table(title="GPU topology", title_justify="left", box=None, pad_edge=False)
    t.add_column("")
    for d in devices:
        t.add_column(f"GPU{d.index}", justify="center")
    t.add_column("CPU Affinity")
    t.add_column("NUMA Affinity", justify="center")
    pairs = _pair_map(topology)
    for row in devices:
        cells = []
        for col in devices:
            if row.index == col.index:
                cells.append("X")
                continue
            p = pairs.get((min(row.index, col.index), max(row.index, col.index)))
            cls = safe(p.path_class) if p else "?"
            cells.append(f"[green]{cls}[/green]" if cls.startswith("NV") else cls)
        t.add_row(f"GPU{row.index}", *cells, format_cpu_list(row.cpu_affinity), _na(row.numa_node))
    return t


def legend(topology: Topology | None) -> Text:
    """Explanations of the path classes present (all when there is no pair)."""
    present = {("NV#" if re.fullmatch(r"NV\d+", p.path_class) else p.path_class) for p in _pair_map(topology).values()}
    keys = [k for k in LEGEND if k in present] or list(LEGEND)
    return Text("\n".join(f"  {k:<4} = {LEGEND[k]}" for k in keys), style="dim")


def device_lines(devices: list[DeviceInfo]) -> Text:
    """One line per GPU: identity, memory, clocks, persistence, ECC, power limit (lines wrap well on narrow
    terminals, unlike a wide table)."""
    lines = []
    for d in devices:
        mem = f"{d.memory_total_bytes / 2**30:.1f} GiB" if d.memory_total_bytes is not None else NA
        ecc = NA if d.ecc_enabled is None else ("on" if d.ecc_enabled else "off")
        if d.ecc_enabled and d.ecc_errors_uncorrected:
            ecc = f"on, [red]{d.ecc_errors_uncorrected} uncorrected errors[/red]"
        persist = NA if d.persistence_mode is None else ("on" if d.persistence_mode else "off")
        power = f"{d.power_limit_w:.0f} W" if d.power_limit_w is not None else NA
        lines.append(
            f"  GPU{d.index}  {safe(d.name)}  {safe(_na(d.pci_bus_id))}  {mem}  CC {_na(d.compute_capability)}  "
            f"SM clock {_na(d.sm_clock_mhz)}/{_na(d.sm_clock_max_mhz)} MHz  persistence {persist}  ECC {ecc}  "
            f"power limit {power}"
        )
    return Text.from_markup("GPUs:\n" + "\n".join(lines))


def _below(current: int | None, maximum: int | None) -> bool:
    return current is not None and maximum is not None and current < maximum


def pcie_table(devices: list[DeviceInfo]) -> Table:
    """PCIe generation and width, current vs max; a link below max is highlighted."""
    t = Table(title="PCIe link (current / max)", title_justify="left")
    for col in ("GPU", "Gen", "Width", "Replays", "Note"):
        t.add_column(col)
    for d in devices:
        low_gen, low_w = _below(d.pcie_gen_current, d.pcie_gen_max), _below(d.pcie_width_current, d.pcie_width_max)
        gen = f"{_na(d.pcie_gen_current)} / {_na(d.pcie_gen_max)}"
        width = f"x{_na(d.pcie_width_current)} / x{_na(d.pcie_width_max)}"
        note = ""
        if low_gen or low_w:
            note = "[yellow]below max: downtrained, or the GPU is idle in a power-saving state[/yellow]"
            gen = f"[yellow]{gen}[/yellow]" if low_gen else gen
            width = f"[yellow]{width}[/yellow]" if low_w else width
        replays = _na(d.pcie_replay_counter)
        if d.pcie_replay_counter:
            replays = f"[yellow]{replays}[/yellow]"
        t.add_row(str(d.index), gen, width, replays, note)
    return t


def nvlink_summary(devices: list[DeviceInfo], topology: Topology | None) -> Text:
    """Per GPU: active links of those reported and their version; per pair: link counts."""
    lines = ["NVLink:"]
    for d in devices:
        if not d.nvlinks:
            lines.append(f"  GPU{d.index}: no NVLink reported")
            continue
        active = [link for link in d.nvlinks if link.active]
        versions = sorted({link.version for link in active if link.version is not None})
        ver = f", version {'/'.join(map(str, versions))}" if versions else ""
        lines.append(f"  GPU{d.index}: {len(active)} of {len(d.nvlinks)} links active{ver}")
    for p in _pair_map(topology).values():
        if p.nvlink_count:
            lines.append(f"  GPU{p.a} <-> GPU{p.b}: {p.nvlink_count} links")
    return Text("\n".join(lines))


def p2p_table(topology: Topology | None) -> RenderableType:
    """NVML P2P status per GPU pair and capability, and CUDA peer access when known."""
    pairs = list(_pair_map(topology).values())
    if not pairs:
        return Text("P2P: only one GPU, no pairs")
    caps = sorted({c for p in pairs for c in p.p2p_nvml}, key=["read", "write", "nvlink", "atomics"].index)
    t = Table(title="P2P status (NVML)", title_justify="left")
    t.add_column("Pair")
    for c in caps:
        t.add_column(c)
    t.add_column("CUDA peer access")
    for p in pairs:
        cells = [p.p2p_nvml.get(c, NA) for c in caps]
        cells = [f"[green]{x}[/green]" if x == "ok" else f"[yellow]{safe(x)}[/yellow]" for x in cells]
        cuda = NA if p.cuda_peer_access is None else ("yes" if p.cuda_peer_access else "no")
        t.add_row(f"GPU{p.a} <-> GPU{p.b}", *cells, cuda)
    return t


def render_topology(
    devices: list[DeviceInfo],
    topology: Topology | None,
    driver: dict[str, Any] | None = None,
    origin: str | None = None,
) -> Group:
    """Everything ``gpuprobe topo`` prints in human mode, top to bottom."""
    parts: list[RenderableType] = []
    head = []
    if origin:
        head.append(f"Source: {origin}")
    if driver and driver.get("driver_version"):
        head.append(f"driver {driver['driver_version']}, CUDA {_na(driver.get('cuda_driver_version'))}")
    if head:
        parts.append(Text(plain(" | ".join(head)), style="dim"))
    parts.append(topo_matrix(devices, topology))
    if topology and topology.pairs:
        parts.append(legend(topology))
    parts += [
        Text(""),
        device_lines(devices),
        Text(""),
        pcie_table(devices),
        nvlink_summary(devices, topology),
        Text(""),
        p2p_table(topology),
    ]
    if topology and topology.unavailable:
        parts.append(Text(plain("not available from the driver: " + "; ".join(topology.unavailable)), style="dim"))
    return Group(*parts)
