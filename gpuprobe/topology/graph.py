"""The machine as a networkx graph: GPUs, the host, NUMA nodes, their links and (optionally) measured figures.

Nodes
  ``gpu<i>``   kind="gpu", every ``DeviceInfo`` field (``nvlinks`` as a list of dicts), and ``measured``
               (device-local figures, src == dst == the GPU).
  ``host``     kind="host": the CPU side of host<->GPU copies.
  ``numa<n>``  kind="numa", only for NUMA ids NVML reported.
Edges
  gpu--gpu     kind="gpu": path_class, path_rank (0 best), nvlink_count, p2p (NVML status per capability),
               cuda_peer_access, measured, allreduce_busbw_gbps / allreduce_size_bytes (two-GPU all-reduce).
  gpu--host    kind="pcie": pcie_gen/width current and max, pcie_downtrained, measured.
  gpu--numa<n> kind="numa" (the GPU's local memory node); numa<n>--host kind="numa".

``measured`` is a list of ``{"probe", "src", "dst", "traffic", "size_bytes", "median", "unit"}``: one entry per
probe, direction and traffic kind, the largest message size that was measured with status ``ok``.
``graph.graph["allreduce_busbw_gbps"]`` maps a group such as ``"0,1,2,3"`` to its measured busbw.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

import networkx as nx

from gpuprobe.results.model import DeviceInfo, Measurement, Results, Topology
from gpuprobe.results.serde import to_data

PATH_ORDER = ("NV", "PIX", "PXB", "PHB", "NODE", "SYS")
"""Path classes best first; ``NV#`` of any count is ahead of PCIe, ``unknown`` is last."""

_GPU = re.compile(r"^gpu(\d+)$")


def gpu_node(index: int) -> str:
    return f"gpu{index}"


def numa_node(node: int) -> str:
    return f"numa{node}"


def path_rank(path_class: str) -> int:
    """0 for NV#, 1 PIX, 2 PXB, 3 PHB, 4 NODE, 5 SYS, 6 anything else."""
    if re.fullmatch(r"NV\d+", path_class):
        return 0
    return PATH_ORDER.index(path_class) if path_class in PATH_ORDER else len(PATH_ORDER)


def _gpu_index(endpoint: str | None) -> int | None:
    m = _GPU.match(endpoint or "")
    return int(m.group(1)) if m else None


def build_graph(devices: list[DeviceInfo], topology: Topology | None, results: Results | None = None) -> nx.Graph:
    """The graph of ``devices`` and ``topology``; with ``results``, measured figures on nodes and edges."""
    g = nx.Graph(source=topology.source if topology else None, allreduce_busbw_gbps={}, allreduce_size_bytes={})
    g.add_node("host", kind="host", label="host")
    for d in devices:
        node = gpu_node(d.index)
        g.add_node(node, kind="gpu", label=f"GPU{d.index}", measured=[], **to_data(d))
        downtrained = _below(d.pcie_gen_current, d.pcie_gen_max) or _below(d.pcie_width_current, d.pcie_width_max)
        g.add_edge(
            node,
            "host",
            kind="pcie",
            pcie_gen_current=d.pcie_gen_current,
            pcie_gen_max=d.pcie_gen_max,
            pcie_width_current=d.pcie_width_current,
            pcie_width_max=d.pcie_width_max,
            pcie_downtrained=downtrained,
            measured=[],
        )
        if d.numa_node is not None:
            numa = numa_node(d.numa_node)
            g.add_node(numa, kind="numa", label=f"NUMA {d.numa_node}", numa_node=d.numa_node)
            g.add_edge(numa, "host", kind="numa")
            g.add_edge(node, numa, kind="numa")
    for p in topology.pairs if topology else []:
        g.add_edge(
            gpu_node(p.a),
            gpu_node(p.b),
            kind="gpu",
            path_class=p.path_class,
            path_rank=path_rank(p.path_class),
            nvlink_count=p.nvlink_count,
            p2p=dict(p.p2p_nvml),
            cuda_peer_access=p.cuda_peer_access,
            measured=[],
            allreduce_busbw_gbps=None,
            allreduce_size_bytes=None,
        )
    if results is not None:
        attach_measurements(g, results.measurements)
    return g


def graph_from_results(results: Results) -> nx.Graph:
    """The graph of the machine a results file was measured on, with its measurements attached."""
    return build_graph(results.devices, results.topology, results)


def _below(current: int | None, maximum: int | None) -> bool | None:
    if current is None or maximum is None:
        return None
    return current < maximum


def attach_measurements(g: nx.Graph, measurements: list[Measurement]) -> None:
    """Put the medians of ``ok`` measurements on the nodes/edges they were taken on (largest size wins)."""
    best: dict[tuple[Any, ...], Measurement] = {}
    for m in measurements:
        if m.status != "ok" or m.value is None:
            continue
        key = (m.probe, m.src, m.dst, m.traffic, tuple(m.ranks or ()))
        if key not in best or (m.size_bytes or 0) > (best[key].size_bytes or 0):
            best[key] = m
    for m in best.values():
        if m.ranks and m.probe.startswith("all_reduce") and m.busbw_gbps is not None:
            _attach_allreduce(g, m)
            continue
        where = _place(g, m.src, m.dst)
        if where is not None:
            where.setdefault("measured", []).append(
                {
                    "probe": m.probe,
                    "src": m.src,
                    "dst": m.dst,
                    "traffic": m.traffic,
                    "size_bytes": m.size_bytes,
                    "median": m.value,
                    "unit": m.unit,
                }
            )


def _place(g: nx.Graph, src: str | None, dst: str | None) -> dict[str, Any] | None:
    """The attribute dict of the node (src == dst) or edge (src--dst) a measurement belongs to."""
    if src is None or dst is None:
        return None
    if src == dst:
        return g.nodes[src] if src in g else None
    return g.edges[src, dst] if g.has_edge(src, dst) else None


def _attach_allreduce(g: nx.Graph, m: Measurement) -> None:
    ranks = sorted(set(m.ranks or ()))
    group = ",".join(map(str, ranks))
    table = g.graph.setdefault("allreduce_busbw_gbps", {})
    sizes = g.graph.setdefault("allreduce_size_bytes", {})
    if group in sizes and (m.size_bytes or 0) <= (sizes[group] or 0):
        return
    table[group], sizes[group] = m.busbw_gbps, m.size_bytes
    if len(ranks) == 2 and g.has_edge(gpu_node(ranks[0]), gpu_node(ranks[1])):
        edge = g.edges[gpu_node(ranks[0]), gpu_node(ranks[1])]
        edge["allreduce_busbw_gbps"], edge["allreduce_size_bytes"] = m.busbw_gbps, m.size_bytes


# -- export ---------------------------------------------------------------------------------------------------
def _json_clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def to_json(g: nx.Graph) -> dict[str, Any]:
    """Node-link data (``nodes``, ``edges``, ``graph``) that ``json.dumps(..., allow_nan=False)`` accepts."""
    return _json_clean(nx.node_link_data(g, edges="edges"))


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n")


def _fmt_gbps(value: float | None) -> str:
    return f"{value:.1f} GB/s" if value is not None else ""


def _or_q(value: Any) -> str:
    return "?" if value is None else str(value)


def _edge_label(attrs: dict[str, Any]) -> str:
    lines: list[str] = []
    if attrs.get("kind") == "pcie":
        if attrs.get("pcie_gen_current") is not None or attrs.get("pcie_width_current") is not None:
            line = f"PCIe Gen{_or_q(attrs.get('pcie_gen_current'))} x{_or_q(attrs.get('pcie_width_current'))}"
            if attrs.get("pcie_downtrained"):
                line += f" (max Gen{_or_q(attrs.get('pcie_gen_max'))} x{_or_q(attrs.get('pcie_width_max'))})"
            lines.append(line)
    elif attrs.get("kind") == "gpu":
        lines.append(str(attrs.get("path_class")))
        if attrs.get("allreduce_busbw_gbps") is not None:
            lines.append(f"all-reduce busbw {_fmt_gbps(attrs['allreduce_busbw_gbps'])}")
    for m in attrs.get("measured") or []:
        if m.get("unit") == "GB/s" and m.get("traffic") == "unidirectional":
            lines.append(f"{m['src']}->{m['dst']} {m['probe']}: {_fmt_gbps(m['median'])}")
    return "\n".join(lines)


def _node_label(node: str, attrs: dict[str, Any]) -> str:
    if attrs.get("kind") != "gpu":
        return str(attrs.get("label", node))
    lines = [str(attrs.get("label", node)), str(attrs.get("name", ""))]
    if attrs.get("pci_bus_id"):
        lines.append(str(attrs["pci_bus_id"]))
    return "\n".join(x for x in lines if x)


def to_dot(g: nx.Graph) -> str:
    """Graphviz DOT text (undirected). Labels and ids are quoted and escaped; render with ``dot -Tsvg``."""
    out = ["graph gpuprobe {", '  node [shape=box, fontname="Helvetica"];', '  edge [fontname="Helvetica"];']
    for node, attrs in g.nodes(data=True):
        shape = {"host": "ellipse", "numa": "ellipse"}.get(attrs.get("kind"), "box")
        out.append(f'  "{_dot_escape(str(node))}" [label="{_dot_escape(_node_label(node, attrs))}", shape={shape}];')
    for u, v, attrs in g.edges(data=True):
        style = ""
        if attrs.get("kind") == "numa":
            style = ", style=dashed"
        elif attrs.get("kind") == "gpu" and attrs.get("nvlink_count"):
            style = ", penwidth=2"
        ends = f'"{_dot_escape(str(u))}" -- "{_dot_escape(str(v))}"'
        out.append(f'  {ends} [label="{_dot_escape(_edge_label(attrs))}"{style}];')
    out.append("}")
    return "\n".join(out) + "\n"


# -- choosing GPU groups --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupChoice:
    """A GPU group and why it ranks where it does (its weakest pair decides)."""

    gpus: tuple[int, ...]
    worst_path_class: str | None
    """Path class of the group's slowest pair (None for a single GPU)."""
    min_nvlinks: int
    busbw_gbps: float | None
    """Measured all-reduce busbw of exactly this group, else the lowest measured pair busbw (when all pairs
    were measured), else None."""

    @property
    def score(self) -> tuple[Any, ...]:
        """Sort key, smaller is better."""
        return (
            path_rank(self.worst_path_class) if self.worst_path_class else -1,
            -self.min_nvlinks,
            -(self.busbw_gbps if self.busbw_gbps is not None else -1.0),
        )


def best_groups(g: nx.Graph, size: int, limit: int | None = None) -> list[GroupChoice]:
    """All groups of ``size`` GPUs, best-connected first.

    A group is as good as its weakest pair: ranked by that pair's path class (NV# > PIX > PXB > PHB > NODE >
    SYS > unknown), then by the fewest NVLinks between any two members (more is better), then by measured
    all-reduce busbw (higher is better, unmeasured last), then by GPU indices. Pairs without an edge count as
    ``unknown``. C(8, 4) = 70 groups; pair facts are read once, so 8 or 16 GPUs take milliseconds.
    """
    if size < 1:
        raise ValueError(f"group size must be at least 1, not {size}")
    gpus = sorted(int(attrs["index"]) for _, attrs in g.nodes(data=True) if attrs.get("kind") == "gpu")
    pair: dict[tuple[int, int], tuple[str, int, float | None]] = {}
    for a, b in itertools.combinations(gpus, 2):
        e = g.edges[gpu_node(a), gpu_node(b)] if g.has_edge(gpu_node(a), gpu_node(b)) else {}
        pair[a, b] = (e.get("path_class", "unknown"), int(e.get("nvlink_count") or 0), e.get("allreduce_busbw_gbps"))
    measured_groups = g.graph.get("allreduce_busbw_gbps") or {}
    choices = []
    for group in itertools.combinations(gpus, size):
        facts = [pair[p] for p in itertools.combinations(group, 2)]
        if not facts:
            choices.append(GroupChoice(group, None, 0, measured_groups.get(str(group[0]))))
            continue
        worst = max(facts, key=lambda f: (path_rank(f[0]), -f[1]))[0]
        busbw = measured_groups.get(",".join(map(str, group)))
        measured = [f[2] for f in facts if f[2] is not None]
        if busbw is None and len(measured) == len(facts):
            busbw = min(measured)
        choices.append(GroupChoice(group, worst, min(f[1] for f in facts), busbw))
    choices.sort(key=lambda c: (c.score, c.gpus))
    return choices[:limit] if limit is not None else choices
