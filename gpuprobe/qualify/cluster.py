"""Judging a cluster results file: each node against the cluster median, the weak links, the nodes to drain.

Rules (``below`` = 0.10 by default):

- A node that is ``missing`` or ``lost`` is FAIL and drained.
- Each node's comparable figures (its local probes, and the medians of the links it sends and receives:
  ``results.cluster_view.node_figures``) are set against the median of the same figure over the nodes: ``below``
  or more worse (lower for rates, higher for times) names the node with the figure, FAIL, and drains it. With two
  nodes this rule is skipped for link medians (each node's "sent" is the other's "received": no majority).
- Each link (ordered node pair) is set against the median of every link of its probe: ``below`` or more worse is a
  weak link, WARN; a link that failed or did not verify is FAIL. A node with weak or failed links to more than half
  of its peers (and at least two peers) is drained; other weak links drain nobody.

The cluster verdict is FAIL when a node is drained, else WARN when a link is weak, else PASS; the qualification's
verdict and exit code become the worse of it and the judgement of rank 0's own results (0 PASS, 10 WARN, 11 FAIL).
"""

from __future__ import annotations

import statistics

from gpuprobe.results.cluster_view import names, ratio_to_median, spread
from gpuprobe.results.model import Cluster
from gpuprobe.results.qualification import (
    ClusterFinding,
    ClusterQualification,
    Qualification,
    exit_code,
    worst,
)

BELOW_MEDIAN = 0.10
LINK_PROBES = ("node_p2p_bandwidth", "node_p2p_latency")


def judge_cluster(c: Cluster, below: float = BELOW_MEDIAN) -> ClusterQualification:
    ns = names(c)
    findings: list[ClusterFinding] = []
    drain: list[str] = []
    for n in sorted(c.nodes, key=lambda n: n.rank):
        if n.status != "ok":
            findings.append(ClusterFinding(n.name, "node", "FAIL", reason=f"{n.status}: {n.reason}"))
            drain.append(n.name)
    for label, unit, vals in spread(c):
        if len(vals) == 2 and label.startswith(LINK_PROBES):
            continue
        med = statistics.median(vals.values())
        for node, v in vals.items():
            r = ratio_to_median(v, med, unit)
            if r is not None and r <= 1 - below:
                findings.append(ClusterFinding(node, label, "FAIL", v, unit, med, round(r, 4),
                                               f"{(1 - r) * 100:.0f} % worse than the median of {len(vals)} nodes"))
                if node not in drain:
                    drain.append(node)
    down = {n.name for n in c.nodes if n.status != "ok"}
    bad_peers: dict[str, set[str]] = {n: set() for n in ns}
    for probe in LINK_PROBES:
        links = [m for m in c.links if m.probe == probe]
        figures = [m.value for m in links if m.status == "ok" and m.value is not None]
        link_med = statistics.median(figures) if figures else None
        for m in links:
            src, dst = m.src or "?", m.dst or "?"
            if m.status != "ok" or m.value is None:
                if src not in down and dst not in down:  # a missing node's links are that node's finding already
                    findings.append(ClusterFinding(f"{src}->{dst}", probe, "FAIL", reason=m.reason or m.status))
                    bad_peers.setdefault(src, set()).add(dst)
                    bad_peers.setdefault(dst, set()).add(src)
                continue
            r = ratio_to_median(m.value, link_med, m.unit) if link_med is not None else None
            if r is not None and r <= 1 - below:
                findings.append(ClusterFinding(f"{src}->{dst}", probe, "WARN", m.value, m.unit, link_med,
                                               round(r, 4), f"{(1 - r) * 100:.0f} % worse than the median of "
                                               f"{len(figures)} links"))
                bad_peers.setdefault(src, set()).add(dst)
                bad_peers.setdefault(dst, set()).add(src)
    for node, peers in bad_peers.items():
        live_peers = [n.name for n in c.nodes if n.name != node and n.status == "ok"]
        if len(live_peers) >= 2 and len(peers & set(live_peers)) * 2 > len(live_peers) and node not in drain:
            findings.append(ClusterFinding(node, "links", "FAIL", reason=f"weak or failed links to "
                                           f"{len(peers & set(live_peers))} of {len(live_peers)} peers"))
            drain.append(node)
    verdict = "FAIL" if drain else worst([f.verdict for f in findings])
    drain.sort(key=lambda x: ns.index(x) if x in ns else len(ns))
    return ClusterQualification(verdict=verdict, nodes=ns, findings=findings, drain=drain, below_median=below)


def add_cluster(q: Qualification, c: Cluster, below: float = BELOW_MEDIAN) -> Qualification:
    """``q`` (rank 0's own judgement) with the cluster's; its verdict and exit code the worse of the two."""
    q.cluster = judge_cluster(c, below)
    q.verdict = worst([q.verdict, q.cluster.verdict])
    q.exit_code = exit_code(q.verdict)
    return q

