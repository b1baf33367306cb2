"""vLLM layouts over several identical nodes: tensor parallelism inside a node, pipeline stages and replicas
across nodes.

``multi_node_system`` repeats one node's profile ``nodes`` times (GPU ``n × G + i`` is GPU ``i`` of node ``n``):
inside a node every figure is the node's own; between nodes the path is ``SYS`` without peer access, at
``inter_node_gbps`` (GB/s, measured between nodes or given), so a pipeline hop that crosses nodes costs the
network. ``tp_within_nodes`` keeps the layouts whose every TP group lies in one node (vLLM's advice: TP inside
a node, PP across nodes). ``node_commands`` writes the vLLM lines of a replica that spans nodes: one ``vllm serve``
per node with ``--nnodes``, ``--node-rank`` and ``--master-addr`` (``--headless`` on all but the first).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import replace
from itertools import combinations

from gpuprobe.predict.layouts import Layout
from gpuprobe.predict.system import AllReduceCurve, Figure, SystemProfile


def multi_node_system(node: SystemProfile, nodes: int, inter_node_gbps: float, source: str) -> SystemProfile:
    """``nodes`` copies of ``node`` joined by a network of ``inter_node_gbps`` GB/s (``source`` says whence)."""
    g = node.gpu_count
    gpus = [replace(gp, index=n * g + gp.index) for n in range(nodes) for gp in node.gpus]
    out = SystemProfile(name=f"{nodes} nodes × {node.name}", source=node.source, gpus=gpus,
                        notes=[*node.notes, f"between nodes: {inter_node_gbps:g} GB/s ({source})"])
    for n in range(nodes):
        off = n * g
        for (a, b), cls in node.path_class.items():
            out.path_class[(a + off, b + off)] = cls
        for (a, b), ok in node.p2p_ok.items():
            out.p2p_ok[(a + off, b + off)] = ok
        for (a, b), fig in node.p2p_gbps.items():
            out.p2p_gbps[(a + off, b + off)] = fig
        for ranks, curve in node.measured_allreduce.items():
            shifted = tuple(r + off for r in ranks)
            out.measured_allreduce[shifted] = AllReduceCurve(shifted, curve.sizes, curve.times_us, curve.source,
                                                             curve.alpha_us, curve.busbw_gbps)
    for a, b in combinations(range(nodes * g), 2):
        if a // g != b // g:
            out.path_class[(a, b)] = "SYS"
            out.p2p_ok[(a, b)] = False
            out.p2p_gbps[(a, b)] = Figure(inter_node_gbps, source, "between nodes")
    return out


def tp_within_nodes(gpus_per_node: int) -> Callable[[Layout], bool]:
    def keep(layout: Layout) -> bool:
        return all(len({g // gpus_per_node for g in stage}) == 1 for rep in layout.groups for stage in rep)

    return keep


def node_commands(single: str, replica_gpus: list[int], gpus_per_node: int, master_addr: str,
                  port: int = 29501) -> list[str]:
    """The lines of one replica: ``single`` (its one-node ``vllm serve`` line) when it fits in one node, else one
    line per node it spans (local device indices, ``--nnodes/--node-rank/--master-addr``)."""
    nodes = sorted({g // gpus_per_node for g in replica_gpus})
    rest = single.partition(" vllm serve ")[2]
    if len(nodes) == 1:
        local = ",".join(str(g % gpus_per_node) for g in replica_gpus)
        return [f"CUDA_VISIBLE_DEVICES={local} vllm serve {rest}  # on node {nodes[0]}"]
    out = []
    for rank, n in enumerate(nodes):
        local = ",".join(str(g % gpus_per_node) for g in replica_gpus if g // gpus_per_node == n)
        extra = f" --nnodes {len(nodes)} --node-rank {rank} --master-addr {shlex.quote(master_addr)} " \
                f"--master-port {port}" + (" --headless" if rank else "")
        out.append(f"CUDA_VISIBLE_DEVICES={local} vllm serve {rest}{extra}  # on node {n}")
    return out
