"""``recommend --nodes``: TP inside a node, PP and replicas across nodes, vLLM's multi-node lines; the node count
and inter-node bandwidth taken from a cluster results file."""

from __future__ import annotations

import json
from pathlib import Path

from test_cluster_units import synthetic_cluster

from gpuprobe.cli.app import main
from gpuprobe.predict.layouts import Layout
from gpuprobe.predict.nodes import tp_within_nodes
from gpuprobe.results.io import load_results, save_results

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tp_stays_inside_a_node() -> None:
    keep = tp_within_nodes(4)
    assert keep(Layout(4, 2, 1, (((0, 1, 2, 3), (4, 5, 6, 7)),)))
    assert not keep(Layout(2, 1, 1, (((3, 4),),)))


def test_two_described_nodes(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    args = ["recommend", "--gpu", "H100-SXM", "--num-gpus", "4", "--nodes", "2", "--inter-node-gbps", "40",
            "--model", str(CONFIGS / "llama-3.1-70b.json"), "--num-requests", "100", "--master-addr", "gpu01"]
    code, out, _ = run(capsys, *args, "--all")
    assert code == 0
    assert "between nodes: 40 GB/s" in out
    lines = [x for x in out.splitlines() if "--nnodes 2" in x]
    assert any("--node-rank 0 --master-addr gpu01" in x and x.endswith("# on node 0") for x in lines)
    assert any("--node-rank 1" in x and "--headless" in x and x.endswith("# on node 1") for x in lines)
    code, out, _ = run(capsys, *args, "--json")
    rec = json.loads(out)
    fits = [r for r in rec["layouts"] if r["fits"]]
    assert fits and all(r["tp"] <= 4 for r in rec["layouts"])
    assert any(r["pp"] > 1 and len({g // 4 for g in r["gpus"]}) == 2 for r in fits)  # PP across the nodes
    for r in rec["layouts"]:
        for gpus in r["replica_gpus"]:  # every TP group (tp consecutive ranks) inside one node
            assert all(len({g // 4 for g in gpus[i:i + r["tp"]]}) == 1 for i in range(0, len(gpus), r["tp"]))


def test_nodes_and_bandwidth_from_a_cluster_file(capsys, monkeypatch, h100_results_path: Path,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    res = load_results(h100_results_path)  # a real one-GPU node, as rank 0 of a 4-node cluster at 20 GB/s
    res.cluster = synthetic_cluster(n=4).cluster
    path = tmp_path / "cluster.json"
    save_results(res, path)
    code, out, _ = run(capsys, "recommend", "--system", str(path), "--model", str(CONFIGS / "llama-3.1-8b.json"),
                       "--num-requests", "100", "--json")
    assert code == 0
    rec = json.loads(out)
    assert rec["system"]["gpu_count"] == 4
    assert all(r["tp"] == 1 for r in rec["layouts"])
    code, out, _ = run(capsys, "recommend", "--system", str(path), "--model", str(CONFIGS / "llama-3.1-8b.json"),
                       "--num-requests", "100")
    assert "measured: median of 12 node-to-node links" in out
