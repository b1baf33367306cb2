"""The report's cluster section: nodes, the node-to-node matrices, the all-reduce over nodes, the spread of each
figure over the nodes and, when judged, the nodes to drain. Plain content; ``html``/``markdown`` lay it out."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from gpuprobe.report.content import Section, Table, fmt
from gpuprobe.report.fmt import NA, size_label
from gpuprobe.results.cluster_view import matrix, names, ratio_to_median, spread
from gpuprobe.results.model import Cluster, Results


def _matrix(c: Cluster, probe: str, label: str) -> Table | None:
    cells = matrix(c, probe)
    if not cells:
        return None
    ns = names(c)
    unit = "GB/s" if probe.endswith("bandwidth") else "us"
    t = Table(["src \\ dst", *ns], [], caption=f"{label}: {probe} ({'GB/s' if unit == 'GB/s' else 'µs'}; the row "
              "node sends, the column node receives)")
    for i, a in enumerate(ns):
        row = [a]
        for j, b in enumerate(ns):
            m = cells.get((a, b))
            if a == b:
                row.append("—")
            elif m is None or m.value is None or m.status != "ok":
                row.append(m.status if m is not None else NA)
                t.cell_class[i, j + 1] = "fail"
            else:
                row.append(fmt(m.value, unit))
        t.rows.append(row)
    return t


def cluster_section(runs: Sequence[tuple[str, Results]], quals: Sequence[Any | None]) -> Section | None:
    """The section, for the runs that carry a cluster section (None when none does)."""
    clustered = [(label, r.cluster, q) for (label, r), q in zip(runs, quals, strict=True) if r.cluster is not None]
    if not clustered:
        return None
    sec = Section("Cluster")
    for label, c, q in clustered:
        sec.blocks.append(f"{label}: {c.world_size} nodes launched by {c.launcher}, {c.backend} between nodes, "
                          f"master {c.master_addr}:{c.master_port}, a node silent for {c.timeout_s:.0f} s is named.")
        nodes = Table(["rank", "node", "status", "local figures ok", "NICs", "GPUDirect RDMA"], [],
                      align=["r", "l", "l", "r", "l", "l"], caption=f"{label}: nodes")
        for n in sorted(c.nodes, key=lambda n: n.rank):
            nics = "; ".join(f"{x.name} ({x.kind}{f', {x.link_rate_gbps:g} Gb/s' if x.link_rate_gbps else ''}"
                             f"{f', {x.state}' if x.state else ''}"
                             f"{f', near GPUs {x.nearest_gpus}' if x.nearest_gpus else ''})" for x in n.nics) or NA
            ok = NA if n.results is None else f"{sum(m.status == 'ok' for m in n.results.measurements)} of " \
                                              f"{len(n.results.measurements)}"
            nodes.rows.append([str(n.rank), n.name, n.status + (f": {n.reason}" if n.reason else ""), ok, nics,
                               NA if n.gpudirect_rdma is None else ("yes" if n.gpudirect_rdma else "no")])
            if n.status != "ok":
                nodes.cell_class[len(nodes.rows) - 1, 2] = "fail"
        sec.blocks.append(nodes)
        for probe in ("node_p2p_bandwidth", "node_p2p_latency"):
            t = _matrix(c, probe, label)
            if t is not None:
                sec.blocks.append(t)
        if c.collectives:
            ranks = c.collectives[0].ranks or []
            rows = [[size_label(m.size_bytes), fmt(m.value, "us"), fmt(m.algbw_gbps, "GB/s"),
                     fmt(m.busbw_gbps, "GB/s"), m.status if m.verified is None else
                     ("verified" if m.verified else f"{m.wrong_elements} wrong")] for m in c.collectives]
            sec.blocks.append(Table(["size", "time µs", "algbw GB/s", "busbw GB/s", "check"], rows,
                                    caption=f"{label}: all-reduce over nodes "
                                            f"{', '.join(c.node_name(r) for r in ranks)}"))
        rows = []
        for fig, unit, vals in spread(c):
            med = statistics.median(vals.values())
            worst = min(vals, key=lambda n: ratio_to_median(vals[n], med, unit) or 1.0)
            r = ratio_to_median(vals[worst], med, unit)
            rows.append([fig, unit, fmt(min(vals.values()), unit), fmt(med, unit), fmt(max(vals.values()), unit),
                         worst, NA if r is None else f"{r:.0%}"])
        if rows:
            sec.blocks.append(Table(["figure", "unit", "min", "median", "max", "worst node", "worst vs median"], rows,
                                    caption=f"{label}: spread of each figure over the nodes"))
        cq = getattr(q, "cluster", None) if q is not None else None
        if cq is not None:
            sec.blocks.append(f"{label}: cluster verdict {cq.verdict}; drain: {','.join(cq.drain) or 'none'}")
            if cq.findings:
                sec.blocks.append([f"{f.verdict} {f.subject} {f.test}: {f.reason or ''}" for f in cq.findings])
    if any(r.cluster is not None and r.cluster.problems for _, r in runs):
        sec.blocks.append([p for _, r in runs if r.cluster is not None for p in r.cluster.problems])
    return sec
