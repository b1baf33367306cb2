"""Reading a results file's cluster section: the node-pair matrix and each node's comparable figures.

Shared by ``qualify`` (which judges them) and ``report`` (which shows them); pure functions of the result model.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from gpuprobe.results.model import Cluster, Measurement, Results

LOWER_IS_BETTER = ("us", "ns")
"""Units whose figures are times: a higher figure is worse."""


@dataclass(frozen=True)
class Figure:
    """One comparable figure of a node: a label (probe and route), its value and unit."""

    label: str
    value: float
    unit: str


def names(cluster: Cluster) -> list[str]:
    return [n.name for n in sorted(cluster.nodes, key=lambda n: n.rank)]


def matrix(cluster: Cluster, probe: str) -> dict[tuple[str, str], Measurement]:
    """``(src, dst) -> measurement`` of one link probe (``node_p2p_bandwidth`` or ``node_p2p_latency``)."""
    return {(m.src or "?", m.dst or "?"): m for m in cluster.links if m.probe == probe}


def _label(m: Measurement) -> str:
    parts = [m.probe]
    if m.src or m.dst:
        parts.append(f"{m.src}→{m.dst}")
    for extra in (m.engine if m.probe == "all_reduce" else None, m.traffic if m.traffic != "unidirectional" else None,
                  m.host_memory):
        if extra:
            parts.append(extra)
    if m.ranks and m.probe == "all_reduce":
        parts.append("ranks " + ",".join(map(str, m.ranks)))
    if m.size_bytes is not None and m.probe == "all_reduce":
        parts.append(f"{m.size_bytes} B")
    return " ".join(parts)


def node_figures(cluster: Cluster) -> dict[str, list[Figure]]:
    """Per node: its own verified figures (local probes) and the medians of its links (sent, received)."""
    out: dict[str, list[Figure]] = {}
    for node in cluster.nodes:
        figs: list[Figure] = []
        r: Results | None = node.results
        for m in r.measurements if r is not None else []:
            if m.status == "ok" and m.value is not None and m.verified is not False:
                figs.append(Figure(_label(m), m.value, m.unit))
        for probe in ("node_p2p_bandwidth", "node_p2p_latency"):
            for side, pick in (("sent", "src"), ("received", "dst")):
                vals = [m.value for m in cluster.links if m.probe == probe and getattr(m, pick) == node.name
                        and m.status == "ok" and m.value is not None]
                if vals:
                    unit = "GB/s" if probe.endswith("bandwidth") else "us"
                    figs.append(Figure(f"{probe} {side} (median over links)", statistics.median(vals), unit))
        out[node.name] = figs
    return out


def ratio_to_median(value: float, median: float, unit: str) -> float | None:
    """1.0 at the median, below 1 when worse (value / median for rates, median / value for times)."""
    if median <= 0 or value <= 0:
        return None
    return median / value if unit in LOWER_IS_BETTER else value / median


def spread(cluster: Cluster) -> list[tuple[str, str, dict[str, float]]]:
    """Per figure label present on two nodes or more: (label, unit, {node: value})."""
    by_label: dict[str, tuple[str, dict[str, float]]] = {}
    for node, figs in node_figures(cluster).items():
        for f in figs:
            by_label.setdefault(f.label, (f.unit, {}))[1][node] = f.value
    return [(label, unit, vals) for label, (unit, vals) in by_label.items() if len(vals) >= 2]
