"""``gpuprobe recommend --nodes N``: the one-node profile repeated over N nodes (``predict.nodes``)."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from gpuprobe.errors import UsageError
from gpuprobe.predict.layouts import Layout
from gpuprobe.predict.nodes import multi_node_system, node_commands, tp_within_nodes
from gpuprobe.predict.system import SystemProfile
from gpuprobe.results.model import Cluster
from gpuprobe.results.recommendation import Recommendation

MASTER_PORT = 29501


def across_nodes(profile: SystemProfile, cluster: Cluster | None, nodes: int | None, gbps: float | None
                 ) -> tuple[SystemProfile, Callable[[Layout], bool] | None, int | None]:
    """The profile to rank layouts on, the layout filter and the GPUs per node (None, None for one node)."""
    if nodes is None:
        nodes = sum(n.status == "ok" for n in cluster.nodes) if cluster is not None else 1
    if nodes < 1:
        raise UsageError(f"--nodes must be at least 1, not {nodes}")
    if nodes == 1:
        return profile, None, None
    source = "given (--inter-node-gbps)"
    if gbps is None and cluster is not None:
        links = [m.value for m in cluster.links if m.probe == "node_p2p_bandwidth" and m.status == "ok" and m.value]
        if links:
            gbps, source = statistics.median(links), f"measured: median of {len(links)} node-to-node links"
    if gbps is None or gbps <= 0:
        raise UsageError("--nodes needs the bandwidth between nodes: --inter-node-gbps X (GB/s), or a --system "
                         "file from a cluster run")
    per_node = profile.gpu_count
    return multi_node_system(profile, nodes, gbps, source), tp_within_nodes(per_node), per_node


def node_lines(rec: Recommendation, per_node: int, master_addr: str) -> None:
    """Each layout's command lines per node (``# on node N`` at the end; multi-node vLLM flags where a replica
    spans nodes)."""
    for r in rec.layouts:
        r.vllm_command = [line for i, (gpus, cmd) in enumerate(zip(r.replica_gpus, r.vllm_command, strict=False))
                          for line in node_commands(cmd, gpus, per_node, master_addr, MASTER_PORT + i)]
