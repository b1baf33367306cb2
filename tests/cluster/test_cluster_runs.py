"""Real cluster runs on localhost: every "node" its own torchrun (or an srun-like process), gloo on CPU.

The merged file is complete (every node, every ordered node pair both probes, every all-reduce size verified);
a node killed mid-run is named and the others' figures are kept; a node with another gpuprobe version stops the
run with one line; the torchrun file opens in qualify, report, compare and recommend."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from nodes import SMALL, kill_node, mpi_nodes, slurm_nodes, torchrun_nodes, wait_all, wait_for

from gpuprobe.cli.app import main
from gpuprobe.cluster.links import BANDWIDTH, LATENCY
from gpuprobe.results.io import load_results
from gpuprobe.results.model import Results

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"


def check_complete(res: Results, n: int, launcher: str) -> None:
    c = res.cluster
    assert c is not None and c.launcher == launcher and c.world_size == n and c.backend == "gloo"
    names = [f"node{i}" for i in range(n)]
    assert [(x.rank, x.name, x.status) for x in c.nodes] == [(i, names[i], "ok") for i in range(n)]
    assert all(x.results is not None and x.results.cluster is None for x in c.nodes)
    for probe in (BANDWIDTH, LATENCY):
        got = {(m.src, m.dst): m for m in c.links if m.probe == probe}
        assert set(got) == set(itertools.permutations(names, 2))
        for m in got.values():
            assert m.status == "ok" and m.verified is True and m.wrong_elements == 0, m.reason
            assert m.stat is not None and m.stat.n == 2 and m.value and m.value > 0
    sizes = [8 << k for k in range(10)]  # 8 B .. 4 KiB
    assert [m.size_bytes for m in c.collectives] == sizes
    for m in c.collectives:
        assert m.status == "ok" and m.verified is True and m.ranks == list(range(n)) and m.busbw_gbps is not None
    assert not c.problems and res.status == "complete"


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_two_nodes_as_srun_starts_them_and_the_file_in_every_command(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    t0 = time.monotonic()
    procs = slurm_nodes(2, tmp_path, SMALL)
    assert wait_all(procs, 150) == [0, 0], (tmp_path / "node0.err").read_text()[-3000:]
    print(f"2-node srun-style run: {time.monotonic() - t0:.1f} s")
    path = tmp_path / "node0" / "cluster.json"
    res = load_results(path)
    check_complete(res, 2, "slurm")
    assert res.cluster is not None and res.cluster.master_addr == "localhost"  # the first host of the node list
    assert not (tmp_path / "node1" / "cluster.json").exists()  # only rank 0 writes
    assert "Node to node bandwidth" in (tmp_path / "node0.out").read_text()
    assert "rank 0 writes the merged results" in (tmp_path / "node1.err").read_text()
    check_commands(capsys, path, tmp_path)


def test_three_nodes_as_mpirun_starts_them(tmp_path: Path) -> None:
    procs = mpi_nodes(3, tmp_path, SMALL)
    assert wait_all(procs, 150) == [0, 0, 0], (tmp_path / "node0.err").read_text()[-3000:]
    check_complete(load_results(tmp_path / "node0" / "cluster.json"), 3, "mpi")


def check_commands(capsys, path: Path, tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "qualify", "--input", str(path))
    assert code in (0, 10, 11) and "drain: " in out and "Cluster: 2 nodes against the median" in out
    code, out, err = run_cli(capsys, "qualify", "--input", str(path), "--json")
    assert "drain: " in err
    q = json.loads(out)
    assert q["cluster"]["nodes"] == ["node0", "node1"] and q["exit_code"] == code
    code, _, err = run_cli(capsys, "report", str(path), "--markdown", str(tmp_path / "r.md"), "--html",
                           str(tmp_path / "r.html"))
    assert code == 0, err
    md = (tmp_path / "r.md").read_text()
    assert "## Cluster" in md and "node\\_p2p\\_bandwidth" in md and "spread of each figure" in md
    assert "node0" in (tmp_path / "r.html").read_text()
    code, out, _ = run_cli(capsys, "compare", str(path), str(path))
    assert code == 0
    code, out, _ = run_cli(capsys, "probe", "--input", str(path))
    assert code == 0 and "All-reduce over nodes node0, node1" in out
    code, _, err = run_cli(capsys, "recommend", "--system", str(path), "--model",
                           str(CONFIGS / "llama-3.2-1b.json"))
    assert code == 1 and "lists no GPUs" in err and "--gpu NAME --num-gpus N" in err  # measured without a GPU
    # each node's GPUs described, the nodes and the measured links between them from the cluster file
    code, out, err = run_cli(capsys, "recommend", "--system", str(path), "--gpu", "H100-SXM", "--num-gpus", "8",
                             "--model", str(CONFIGS / "llama-3.2-1b.json"), "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["system"]["name"].startswith("2 nodes") and rec["system"]["gpu_count"] == 16
    assert any("measured: median of 2 node-to-node links" in n for n in rec["notes"])
    assert rec["layouts"] and all(r["tp"] <= 8 for r in rec["layouts"])  # TP stays inside a node
    lines = [line for r in rec["layouts"] for line in r["vllm_command"]]
    assert all(line.endswith(("# on node 0", "# on node 1")) for line in lines)


@pytest.mark.slow
def test_two_nodes_the_exact_torchrun_command(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    t0 = time.monotonic()
    procs = torchrun_nodes(2, tmp_path, ["--backend", "gloo"], output="cluster.json")
    assert wait_all(procs, 300) == [0, 0], (tmp_path / "node0.err").read_text()[-3000:]
    print(f"2-node torchrun run, default sizes: {time.monotonic() - t0:.1f} s")
    path = tmp_path / "node0" / "cluster.json"
    c = load_results(path).cluster
    assert c is not None and c.launcher == "torchrun" and [n.status for n in c.nodes] == ["ok", "ok"]
    assert all(m.status == "ok" and m.verified for m in c.links + c.collectives)
    check_commands(capsys, path, tmp_path)


@pytest.mark.slow
def test_three_nodes_torchrun_complete(tmp_path: Path) -> None:
    t0 = time.monotonic()
    procs = torchrun_nodes(3, tmp_path, SMALL)
    assert wait_all(procs, 180) == [0, 0, 0], (tmp_path / "node0.err").read_text()[-3000:]
    print(f"3-node torchrun run: {time.monotonic() - t0:.1f} s")
    res = load_results(tmp_path / "node0" / "cluster.json")
    check_complete(res, 3, "torchrun")
    rounds = [line for line in (tmp_path / "node0.err").read_text().splitlines() if "link round" in line]
    assert len(rounds) == 2  # 3 nodes: 3 rounds, node0 sits one out


@pytest.mark.slow
def test_a_node_killed_mid_run_is_named_and_the_rest_is_kept(tmp_path: Path) -> None:
    timeout = 10
    # each node's local suite is the gloo all-reduce on one CPU process: seconds, so node2 dies inside it
    args = [*SMALL, "--cluster-timeout", str(timeout), "--tests", "all_reduce", "--cpu-ranks", "1"]
    procs = torchrun_nodes(3, tmp_path, args)
    err2 = tmp_path / "node2.err"
    assert wait_for(lambda: "cluster: local probes" in err2.read_text(), 120), err2.read_text()
    kill_node(procs[2])
    killed = time.monotonic()
    err0 = tmp_path / "node0.err"
    assert wait_for(lambda: "cluster results written" in err0.read_text(), timeout * 4 + 60), err0.read_text()
    took = time.monotonic() - killed
    print(f"merged file {took:.1f} s after the kill (timeout {timeout} s)")
    # torchrun's agents then wait at their exit barrier for the dead node's agent: not gpuprobe's to shorten
    wait_all(procs[:2], 5)
    res = load_results(tmp_path / "node0" / "cluster.json")
    c = res.cluster
    assert c is not None and res.status == "partial"
    assert [(x.name, x.status) for x in c.nodes] == [("node0", "ok"), ("node1", "ok"), ("node2", "missing")]
    assert "node2" in c.problems[0] and "missing" in c.problems[0]
    for x in c.nodes[:2]:  # the survivors' own figures are kept
        assert x.results is not None and any(m.probe == "all_reduce" and m.status == "ok"
                                             for m in x.results.measurements)
    for m in c.links:
        if "node2" in (m.src, m.dst):
            assert m.status == "error" and "node2" in (m.reason or "")
        else:
            assert m.status == "ok" and m.verified, m.reason
    assert len(c.links) == 2 * 6
    assert c.collectives and all(m.status == "ok" and m.ranks == [0, 1] and m.verified for m in c.collectives)
    assert took < timeout * 3 + 30


@pytest.mark.slow
def test_another_version_on_one_node_stops_the_run_with_one_line(tmp_path: Path) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import gpuprobe\ngpuprobe.__version__ = '9.9.9'\n")
    from nodes import REPO

    procs = torchrun_nodes(2, tmp_path, SMALL, extra_env={1: {"PYTHONPATH": f"{shim}:{REPO}"}})
    codes = wait_all(procs, 120)
    assert all(c not in (0, None) for c in codes)
    for r in (0, 1):
        lines = [x for x in (tmp_path / f"node{r}.err").read_text().splitlines()
                 if "cluster nodes disagree" in x]
        assert len(lines) == 1, (tmp_path / f"node{r}.err").read_text()
        assert "node node1 (rank 1) runs gpuprobe 9.9.9, rank 0 (node0) runs 0.1.0" in lines[0]
    assert not (tmp_path / "node0" / "cluster.json").exists()


@pytest.mark.slow
def test_a_node_that_hangs_during_the_links_is_named_lost_and_its_figures_kept(tmp_path: Path) -> None:
    import os
    import signal

    from nodes import descendants

    timeout = 8
    procs = torchrun_nodes(3, tmp_path, [*SMALL, "--cluster-timeout", str(timeout)])
    err2 = tmp_path / "node2.err"
    assert wait_for(lambda: "link round" in err2.read_text(), 120, every_s=0.01), err2.read_text()
    frozen = descendants(procs[2].pid)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)  # hung, not dead: its sockets stay open
    stopped = time.monotonic()
    err0 = tmp_path / "node0.err"
    try:
        assert wait_for(lambda: "cluster results written" in err0.read_text(), timeout * 6 + 60), err0.read_text()
        took = time.monotonic() - stopped
        print(f"merged file {took:.1f} s after node2 hung (timeout {timeout} s)")
    finally:
        wait_all(procs, 3)
    res = load_results(tmp_path / "node0" / "cluster.json")
    c = res.cluster
    assert c is not None and res.status == "partial"
    assert [(x.name, x.status) for x in c.nodes] == [("node0", "ok"), ("node1", "ok"), ("node2", "lost")], \
        (c.problems, (tmp_path / "node1.err").read_text()[-2000:])
    assert c.nodes[2].results is not None  # what it measured before it hung is kept
    assert any("node2" in p and "lost" in p for p in c.problems)
    assert len(c.links) == 12
    for m in c.links:
        if "node2" not in (m.src, m.dst):
            assert m.status == "ok" and m.verified, m.reason
    assert took < timeout * 6 + 30
