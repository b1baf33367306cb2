"""Rich tables of a cluster results file: the nodes, the node-pair matrices and the all-reduce over nodes."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

from gpuprobe.report.fmt import NA, size_label
from gpuprobe.results.cluster_view import matrix, names
from gpuprobe.results.model import Cluster, Measurement
from gpuprobe.results.qualification import ClusterQualification


def _cell(m: Measurement | None, unit: str) -> str:
    if m is None:
        return NA
    if m.status != "ok" or m.value is None:
        return f"[red]{m.status}[/red]"
    text = f"{m.value:,.2f}" if unit == "GB/s" else f"{m.value:,.1f}"
    return text + ("" if m.verified else " [yellow]?[/yellow]")


def nodes_table(c: Cluster) -> Table:
    t = Table(title=f"Cluster: {c.world_size} nodes ({c.launcher}, {c.backend})", box=box.SIMPLE_HEAD)
    for col in ("rank", "node", "status", "local figures", "NICs", "GPUDirect RDMA"):
        t.add_column(col, justify="right" if col == "rank" else "left")
    for n in sorted(c.nodes, key=lambda n: n.rank):
        r = n.results
        figs = NA if r is None else f"{sum(m.status == 'ok' for m in r.measurements)} ok / {len(r.measurements)}"
        nics = ", ".join(f"{x.name} {x.link_rate_gbps:g} Gb/s {x.state or ''}".strip() if x.link_rate_gbps
                         else f"{x.name} {x.state or ''}".strip() for x in n.nics) or NA
        status = n.status if n.status == "ok" else f"[red]{n.status}[/red]: {escape(n.reason or '')}"
        gdr = NA if n.gpudirect_rdma is None else ("yes" if n.gpudirect_rdma else "no")
        t.add_row(str(n.rank), escape(n.name), status, figs, escape(nics), gdr)
    return t


def matrix_table(c: Cluster, probe: str) -> Table | None:
    cells = matrix(c, probe)
    if not cells:
        return None
    unit = "GB/s" if probe.endswith("bandwidth") else "µs"
    what = "bandwidth" if probe.endswith("bandwidth") else "latency (half round trip)"
    size = next((m.size_bytes for m in cells.values() if m.size_bytes), None)
    t = Table(title=f"Node to node {what}, {unit}" + (f", {size_label(size)} messages" if size and unit == "GB/s"
                                                      else "") + " (row sends, column receives)",
              box=box.SIMPLE_HEAD)
    ns = names(c)
    t.add_column("src \\ dst")
    for n in ns:
        t.add_column(escape(n), justify="right")
    for a in ns:
        t.add_row(escape(a), *[("—" if a == b else _cell(cells.get((a, b)), "GB/s" if unit == "GB/s" else "us"))
                               for b in ns])
    return t


def collectives_table(c: Cluster) -> Table | None:
    if not c.collectives:
        return None
    ranks = c.collectives[0].ranks or []
    t = Table(title=f"All-reduce over nodes {', '.join(c.node_name(r) for r in ranks)} ({c.backend})",
              box=box.SIMPLE_HEAD)
    for col in ("size", "time µs", "algbw GB/s", "busbw GB/s", "check"):
        t.add_column(col, justify="right" if col != "check" else "left")
    for m in c.collectives:
        check = "[green]✓ data[/green]" if m.verified else f"[red]{m.status}[/red] {escape(m.reason or '')}"
        t.add_row(size_label(m.size_bytes), NA if m.value is None else f"{m.value:,.1f}",
                  NA if m.algbw_gbps is None else f"{m.algbw_gbps:,.3f}",
                  NA if m.busbw_gbps is None else f"{m.busbw_gbps:,.3f}", check)
    return t


def cluster_tables(c: Cluster) -> list[Table]:
    out = [nodes_table(c)]
    for t in (matrix_table(c, "node_p2p_bandwidth"), matrix_table(c, "node_p2p_latency"), collectives_table(c)):
        if t is not None:
            out.append(t)
    return out


def cluster_findings_table(cq: ClusterQualification) -> Table:
    t = Table(title=f"Cluster: {len(cq.nodes)} nodes against the median ({cq.below_median:.0%} worse or more is "
              "named)", box=box.SIMPLE_HEAD)
    for col in ("verdict", "node or link", "figure", "value", "median", "vs median", "why"):
        t.add_column(col, justify="right" if col in ("value", "median", "vs median") else "left")
    for f in cq.findings:
        colour = "red" if f.verdict == "FAIL" else "yellow"
        t.add_row(f"[{colour}]{f.verdict}[/{colour}]", escape(f.subject), escape(f.test),
                  NA if f.value is None else f"{f.value:,.3g} {f.unit or ''}",
                  NA if f.median is None else f"{f.median:,.3g}",
                  NA if f.ratio_to_median is None else f"{f.ratio_to_median:.0%}", escape(f.reason or ""))
    if not cq.findings:
        t.add_row("[green]PASS[/green]", "every node", "every figure", NA, NA, NA,
                  f"within {cq.below_median:.0%} of the median")
    return t


def drain_line(cq: ClusterQualification) -> str:
    """``drain: node3,node7`` or ``drain: none``."""
    return "drain: " + (",".join(cq.drain) if cq.drain else "none")
