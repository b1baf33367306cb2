"""The topology graph: building it, measured figures on its edges, JSON/DOT export and best_groups."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from gpuprobe.results.model import DeviceInfo, GpuPair, Measurement, Results, RunInfo, Stat, Topology
from gpuprobe.system.inventory import load_system
from gpuprobe.topology.graph import best_groups, build_graph, path_rank, to_dot, to_json

H100_SNAPSHOT = Path(__file__).parents[1] / "data" / "nvml-h100-2026-11-25.json"


@pytest.fixture
def h100():
    return load_system(nvml_snapshot=H100_SNAPSHOT)


def _m(probe: str, src: str | None, dst: str | None, value: float, unit: str = "GB/s", **kw) -> Measurement:
    stat = Stat(n=1, median=value, min=value, max=value, mean=value, stdev=0.0, cv=0.0, p95=value)
    return Measurement(probe=probe, status="ok", unit=unit, src=src, dst=dst, stat=stat, samples=[value], **kw)


# Figures measured on the same H100 by nvbandwidth v0.8 (tests/data/nvbandwidth/nvbandwidth-h100-2026-11-25.txt).
NVBANDWIDTH_H100 = [
    _m("host_to_device_memcpy_ce", "host", "gpu0", 52.78),
    _m("device_to_host_memcpy_ce", "gpu0", "host", 55.11),
    _m("device_local_copy", "gpu0", "gpu0", 1488.21),
    _m("host_device_latency_sm", "host", "gpu0", 1200.14, unit="ns"),
]


def test_path_rank_order():
    classes = ["NV18", "NV1", "PIX", "PXB", "PHB", "NODE", "SYS", "unknown"]
    assert [path_rank(c) for c in classes] == [0, 0, 1, 2, 3, 4, 5, 6]


def test_graph_of_h100_snapshot(h100):
    g = build_graph(h100.devices, h100.topology)
    assert set(g.nodes) == {"host", "gpu0", "numa0"}
    assert g.nodes["gpu0"]["name"] == "NVIDIA H100 80GB HBM3" and g.nodes["gpu0"]["kind"] == "gpu"
    edge = g.edges["gpu0", "host"]
    assert edge["kind"] == "pcie" and edge["pcie_gen_current"] == 5 and edge["pcie_width_max"] == 16
    assert edge["pcie_downtrained"] is False
    assert g.edges["gpu0", "numa0"]["kind"] == "numa" and g.has_edge("numa0", "host")


def test_measurements_attach_to_nodes_and_edges(h100):
    run = RunInfo(gpuprobe_version="0.1.0", started_utc="2026-11-25T00:00:00Z")
    results = Results(run=run, devices=h100.devices, topology=h100.topology, measurements=NVBANDWIDTH_H100)
    g = build_graph(h100.devices, h100.topology, results)
    host_edge = {m["probe"]: m for m in g.edges["gpu0", "host"]["measured"]}
    assert host_edge["host_to_device_memcpy_ce"]["median"] == 52.78
    assert host_edge["device_to_host_memcpy_ce"]["src"] == "gpu0"
    assert host_edge["host_device_latency_sm"]["unit"] == "ns"
    assert g.nodes["gpu0"]["measured"][0]["probe"] == "device_local_copy"
    data = to_json(g)
    json.dumps(data, allow_nan=False)
    assert {n["id"] for n in data["nodes"]} == {"host", "gpu0", "numa0"}
    dot = to_dot(g)
    assert dot.startswith("graph gpuprobe {") and dot.rstrip().endswith("}")
    assert '"gpu0" -- "host"' in dot or '"host" -- "gpu0"' in dot
    assert "PCIe Gen5 x16" in dot and "52.8 GB/s" in dot


# ---- Derived inputs: an 8-GPU layout written from the nvidia-smi path-class rules, not a recording. ----------
# GPUs 0-3 on NUMA node 0, 4-7 on node 1; NVLink bridges join 0-1, 2-3 (4 links) and 4-5, 6-7 (2 links);
# 0-1, 2-3, 4-5, 6-7 also share a PCIe switch (PIX), other pairs within a node are NODE, across nodes SYS.
def _derived_8gpu() -> tuple[list[DeviceInfo], Topology]:
    devices = [
        DeviceInfo(index=i, name="derived GPU", numa_node=i // 4, pcie_gen_current=4 if i == 7 else 5, pcie_gen_max=5)
        for i in range(8)
    ]
    bridges = {(0, 1): 4, (2, 3): 4, (4, 5): 2, (6, 7): 2}
    pairs = []
    for a, b in itertools.combinations(range(8), 2):
        n = bridges.get((a, b), 0)
        pcie = "SYS" if a // 4 != b // 4 else "NODE"
        pairs.append(GpuPair(a, b, f"NV{n}" if n else pcie, n, {"read": "ok"}))
    return devices, Topology(gpu_count=8, pairs=pairs)


def test_derived_8gpu_graph_has_numa_nodes_and_flags_downtrained_link():
    g = build_graph(*_derived_8gpu())
    assert {"numa0", "numa1"} <= set(g.nodes)
    assert g.edges["gpu7", "host"]["pcie_downtrained"] is True
    assert g.edges["gpu0", "gpu1"]["path_class"] == "NV4" and g.edges["gpu0", "gpu5"]["path_class"] == "SYS"
    assert "PCIe Gen4 x? (max Gen5 x?)" in to_dot(g)


def test_best_groups_prefers_nvlink_then_link_count_then_numa():
    g = build_graph(*_derived_8gpu())
    pairs = best_groups(g, 2)
    assert [c.gpus for c in pairs[:4]] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert pairs[0].worst_path_class == "NV4" and pairs[0].min_nvlinks == 4
    fours = best_groups(g, 4, limit=3)
    assert fours[0].gpus == (0, 1, 2, 3) and fours[0].worst_path_class == "NODE"
    assert fours[1].gpus == (4, 5, 6, 7)
    assert best_groups(g, 8)[0].worst_path_class == "SYS"
    assert best_groups(g, 9) == []
    assert [c.gpus for c in best_groups(g, 1, limit=2)] == [(0,), (1,)]
    with pytest.raises(ValueError):
        best_groups(g, 0)


def test_best_groups_uses_measured_allreduce_busbw_to_break_ties():
    devices, topo = _derived_8gpu()
    run = RunInfo(gpuprobe_version="0.1.0", started_utc="2026-11-25T00:00:00Z")
    # Derived all-reduce figures: pair 2-3 measured faster than 0-1; the largest message size is the one used.
    ms = [
        _m("all_reduce_nccl", None, None, 1.0, ranks=[0, 1], busbw_gbps=30.0, size_bytes=1 << 30),
        _m("all_reduce_nccl", None, None, 1.0, ranks=[0, 1], busbw_gbps=99.0, size_bytes=1 << 10),
        _m("all_reduce_nccl", None, None, 1.0, ranks=[2, 3], busbw_gbps=40.0, size_bytes=1 << 30),
    ]
    g = build_graph(devices, topo, Results(run=run, devices=devices, topology=topo, measurements=ms))
    assert g.edges["gpu0", "gpu1"]["allreduce_busbw_gbps"] == 30.0
    assert g.graph["allreduce_busbw_gbps"] == {"0,1": 30.0, "2,3": 40.0}
    assert [c.gpus for c in best_groups(g, 2, limit=2)] == [(2, 3), (0, 1)]


def test_best_groups_of_16_gpus_keep_each_nvlink_island():
    pairs = [
        GpuPair(a, b, "SYS" if (a < 8) != (b < 8) else "NV18", 0 if (a < 8) != (b < 8) else 18)
        for a, b in itertools.combinations(range(16), 2)
    ]
    g = build_graph([DeviceInfo(index=i, name="derived GPU") for i in range(16)], Topology(16, pairs))
    best = best_groups(g, 8, limit=2)
    assert [c.gpus for c in best] == [tuple(range(8)), tuple(range(8, 16))]


def test_dot_escapes_labels_and_json_is_clean():
    devices = [DeviceInfo(index=0, name='odd "name"\\ with\nnewline', pci_bus_id="0000:01:00.0")]
    g = build_graph(devices, Topology(gpu_count=1))
    dot = to_dot(g)
    assert 'odd \\"name\\"\\\\ with\\nnewline' in dot
    assert "\nnewline" not in dot
    json.dumps(to_json(g), allow_nan=False)
