"""Cluster runs without processes: launcher variables as torchrun, srun and mpirun set them, the Slurm node list,
the round-robin schedule, the fingerprint check, NICs from a fake sysfs, the judgement and the report section."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from gpuprobe.cluster.launch import detect, expand_nodelist, node_name
from gpuprobe.cluster.links import BANDWIDTH, LATENCY, rounds
from gpuprobe.errors import UsageError
from gpuprobe.qualify.cluster import add_cluster, judge_cluster
from gpuprobe.results.io import load_results, results_from_data
from gpuprobe.results.model import Cluster, ClusterNode, DeviceInfo, Measurement, Results, RunInfo
from gpuprobe.results.qualification import Qualification
from gpuprobe.results.serde import to_data
from gpuprobe.results.stats import summarize
from gpuprobe.system.nics import gpudirect_rdma, read_nics

NO_SCONTROL = lambda nodelist: None  # noqa: E731


# --- launchers -----------------------------------------------------------------------------------------------

def test_plain_run_is_no_cluster() -> None:
    assert detect({}) is None
    assert detect({"PATH": "/usr/bin", "SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "4"},
                  NO_SCONTROL) is None  # the batch script itself (no job step) is not a cluster run
    assert detect({"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "h"}) is None  # a world of one


def test_torchrun_variables() -> None:
    env = {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": "2",
           "MASTER_ADDR": "node01", "MASTER_PORT": "29400", "TORCHELASTIC_RUN_ID": "job", "ROLE_RANK": "2",
           "TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RESTART_COUNT": "0"}
    launch = detect(env)
    assert launch is not None
    assert (launch.launcher, launch.rank, launch.world_size, launch.master_addr, launch.master_port,
            launch.agent_store) == ("torchrun", 2, 4, "node01", 29400, True)
    with pytest.raises(UsageError, match="one process per node"):
        detect({**env, "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    manual = detect({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.1"})
    assert manual is not None and (manual.launcher, manual.master_port, manual.agent_store) == ("env", 29500, False)


def test_slurm_variables_as_srun_sets_them() -> None:
    env = {"SLURM_JOB_ID": "123456", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_NTASKS": "4",
           "SLURM_NODEID": "3", "SLURM_LOCALID": "0", "SLURM_STEP_NUM_NODES": "4",
           "SLURM_JOB_NODELIST": "gpu-a[01-03,07]", "SLURM_STEP_NODELIST": "gpu-a[01-03,07]",
           "SLURMD_NODENAME": "gpu-a07"}
    launch = detect(env, NO_SCONTROL)
    assert launch is not None
    assert (launch.launcher, launch.rank, launch.world_size, launch.master_addr) == ("slurm", 3, 4, "gpu-a01")
    assert launch.master_port == 20000 + 123456 % 20000
    assert node_name(env) == "gpu-a07"
    assert node_name({**env, "GPUPROBE_NODE_NAME": "x"}) == "x"
    # scontrol's answer wins when it is there; MASTER_ADDR/MASTER_PORT win over both
    assert detect(env, lambda nl: ["first", "second"]).master_addr == "first"  # type: ignore[union-attr]
    pinned = detect({**env, "MASTER_ADDR": "10.1.1.1", "MASTER_PORT": "4000"}, NO_SCONTROL)
    assert pinned is not None and (pinned.master_addr, pinned.master_port) == ("10.1.1.1", 4000)
    with pytest.raises(UsageError, match="one process per node"):
        detect({**env, "SLURM_LOCALID": "1", "SLURM_NTASKS": "8"}, NO_SCONTROL)
    with pytest.raises(UsageError, match="one process per node"):
        detect({**env, "SLURM_NTASKS": "8"}, NO_SCONTROL)  # 8 tasks on 4 nodes
    with pytest.raises(UsageError, match="no SLURM_JOB_NODELIST"):
        detect({k: v for k, v in env.items() if "NODELIST" not in k}, NO_SCONTROL)


def test_mpi_variables_as_mpirun_sets_them() -> None:
    ompi = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
            "OMPI_COMM_WORLD_LOCAL_SIZE": "1", "MASTER_ADDR": "head"}
    launch = detect(ompi)
    assert launch is not None
    assert (launch.launcher, launch.rank, launch.world_size, launch.master_addr, launch.master_port) == \
        ("mpi", 1, 3, "head", 29500)
    with pytest.raises(UsageError, match="MASTER_ADDR is not set") as err:
        detect({k: v for k, v in ompi.items() if k != "MASTER_ADDR"})
    assert "mpirun -x MASTER_ADDR" in (err.value.hint or "")
    with pytest.raises(UsageError, match="one process per node"):
        detect({**ompi, "OMPI_COMM_WORLD_LOCAL_SIZE": "2"})
    pmi = detect({"PMI_RANK": "0", "PMI_SIZE": "2", "MPI_LOCALRANKID": "0", "MASTER_ADDR": "h",
                  "MASTER_PORT": "1234"})
    assert pmi is not None and (pmi.rank, pmi.world_size, pmi.master_port) == (0, 2, 1234)


@pytest.mark.parametrize(("text", "hosts"), [
    ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
    ("a1,b[2-3],c", ["a1", "b2", "b3", "c"]),
    ("r[1-2]-n[08-09]", ["r1-n08", "r1-n09", "r2-n08", "r2-n09"]),
    ("gpu[9-11]", ["gpu9", "gpu10", "gpu11"]),
    ("single", ["single"]),
])
def test_slurm_node_lists(text: str, hosts: list[str]) -> None:
    assert expand_nodelist(text) == hosts


def test_bad_node_list() -> None:
    with pytest.raises(ValueError):
        expand_nodelist("node[01-03")


# --- schedule --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", range(2, 10))
def test_round_robin_covers_every_pair_once_in_disjoint_rounds(n: int) -> None:
    sched = rounds(list(range(n)))
    assert len(sched) == (n - 1 if n % 2 == 0 else n)
    seen = [p for r in sched for p in r]
    assert sorted(seen) == list(itertools.combinations(range(n), 2))
    for r in sched:
        busy = [x for p in r for x in p]
        assert len(busy) == len(set(busy))  # nobody twice in a round


def test_fingerprints_name_the_difference() -> None:
    from gpuprobe.cluster.run import compare_fingerprints, fingerprint
    from gpuprobe.options import ProbeOptions

    a = fingerprint(ProbeOptions(), "gloo")
    assert compare_fingerprints([a, dict(a)], ["n0", "n1"]) is None
    newer = {**a, "gpuprobe": "9.9.9"}
    assert compare_fingerprints([a, newer], ["n0", "n1"]) == \
        f"node n1 (rank 1) runs gpuprobe 9.9.9, rank 0 (n0) runs {a['gpuprobe']}"
    other = fingerprint(ProbeOptions(samples=5), "gloo")
    assert "option samples=5" in (compare_fingerprints([a, a, other], ["n0", "n1", "n2"]) or "")


# --- NICs --------------------------------------------------------------------------------------------------------

def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def test_nics_from_a_fake_sysfs(tmp_path: Path) -> None:
    pci = tmp_path / "sys/devices/pci0000:00"
    sw_a = pci / "0000:00:01.0/0000:01:00.0"
    _link(tmp_path / "sys/bus/pci/devices/0000:02:00.0", sw_a / "0000:02:00.0")  # gpu0, switch A
    _link(tmp_path / "sys/bus/pci/devices/0000:06:00.0", pci / "0000:00:03.0/0000:05:00.0/0000:06:00.0")  # gpu1
    net = tmp_path / "sys/class/net"
    for name, typ, speed, state in (("ib0", "32", "200000", "up"), ("eth0", "1", "-1", "down"), ("lo", "772", "",
                                                                                                  "unknown")):
        (net / name).mkdir(parents=True)
        (net / name / "type").write_text(typ + "\n")
        (net / name / "speed").write_text(speed + "\n")
        (net / name / "operstate").write_text(state + "\n")
    os.symlink(sw_a / "0000:03:00.0", net / "ib0" / "device")
    (sw_a / "0000:03:00.0/net/ib0").mkdir(parents=True)
    ib = tmp_path / "sys/class/infiniband/mlx5_0"
    (ib / "ports/1").mkdir(parents=True)
    (ib / "ports/1/state").write_text("4: ACTIVE\n")
    (ib / "ports/1/rate").write_text("200 Gb/sec (4X HDR)\n")
    (ib / "ports/1/link_layer").write_text("InfiniBand\n")
    os.symlink(sw_a / "0000:03:00.0", ib / "device")
    devices = [DeviceInfo(index=0, name="g", pci_bus_id="00000000:02:00.0"),
               DeviceInfo(index=1, name="g", pci_bus_id="00000000:06:00.0")]
    nics = {n.name: n for n in read_nics(devices, root=tmp_path)}
    assert set(nics) == {"ib0", "eth0", "mlx5_0/1"}
    ib0 = nics["ib0"]
    assert (ib0.kind, ib0.state, ib0.link_rate_gbps, ib0.pci_bus_id, ib0.nearest_gpus, ib0.rdma_device) == \
        ("infiniband", "up", 200.0, "0000:03:00.0", [0], "mlx5_0")
    assert nics["eth0"].link_rate_gbps is None and nics["eth0"].nearest_gpus is None
    port = nics["mlx5_0/1"]
    assert (port.state, port.link_rate_gbps, port.nearest_gpus, port.rdma_device) == ("ACTIVE", 200.0, [0], "ib0")
    assert gpudirect_rdma(tmp_path) is None
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/modules").write_text("nvidia 1 0 - Live 0x0\n")
    assert gpudirect_rdma(tmp_path) is False
    (tmp_path / "sys/module/nvidia_peermem").mkdir(parents=True)
    assert gpudirect_rdma(tmp_path) is True


# --- judging and showing -----------------------------------------------------------------------------------------

def _m(probe: str, src: str, dst: str, value: float, status: str = "ok") -> Measurement:
    unit = "GB/s" if probe == BANDWIDTH else "us"
    return Measurement(probe=probe, status=status, unit=unit, src=src, dst=dst, direction="node",  # type: ignore
                       engine="gloo", samples=[value] if status == "ok" else [],
                       stat=summarize([value]) if status == "ok" else None, verified=status == "ok")


def synthetic_cluster(n: int = 4, slow: dict[tuple[str, str], float] | None = None,
                      local: dict[str, float] | None = None, missing: str | None = None) -> Results:
    names = [f"node{i}" for i in range(n)]
    nodes = []
    for i, name in enumerate(names):
        r = Results(run=RunInfo(gpuprobe_version="0", started_utc="2026-12-01T00:00:00+00:00", hostname=name))
        r.measurements.append(_m(BANDWIDTH, "host", "gpu0", (local or {}).get(name, 50.0)))
        r.measurements[-1].probe = "host_to_device_memcpy_ce"
        nodes.append(ClusterNode(rank=i, name=name, status="missing" if name == missing else "ok",
                                 reason="did not finish" if name == missing else None,
                                 results=None if name == missing else r))
    links = []
    for a, b in itertools.permutations(names, 2):
        bad = missing in (a, b)
        links.append(_m(BANDWIDTH, a, b, (slow or {}).get((a, b), 20.0), "error" if bad else "ok"))
        links.append(_m(LATENCY, a, b, 10.0, "error" if bad else "ok"))
    top = Results(run=RunInfo(gpuprobe_version="0", started_utc="2026-12-01T00:00:00+00:00", hostname="node0"))
    top.cluster = Cluster(launcher="slurm", world_size=n, backend="gloo", master_addr="node0", master_port=1,
                          timeout_s=30.0, nodes=nodes, links=links)
    return top


def test_a_slow_node_is_named_with_its_probe_and_drained() -> None:
    res = synthetic_cluster(local={"node2": 40.0})  # 20 % below the median of its host->gpu0 copy
    assert res.cluster is not None
    cq = judge_cluster(res.cluster)
    assert cq.verdict == "FAIL" and cq.drain == ["node2"]
    f = next(f for f in cq.findings if f.subject == "node2")
    assert f.test.startswith("host_to_device_memcpy_ce host→gpu0") and f.ratio_to_median == pytest.approx(0.8)


def test_a_node_with_weak_links_to_most_peers_is_drained_a_single_weak_link_only_warns() -> None:
    slow = {("node3", p): 10.0 for p in ("node0", "node1", "node2")}
    cq = judge_cluster(synthetic_cluster(slow=slow).cluster)  # type: ignore[arg-type]
    assert cq.drain == ["node3"] and cq.verdict == "FAIL"
    one = judge_cluster(synthetic_cluster(slow={("node0", "node1"): 17.0}).cluster)  # type: ignore[arg-type]
    assert one.verdict == "WARN" and one.drain == []
    assert [f.subject for f in one.findings] == ["node0->node1"]
    fine = judge_cluster(synthetic_cluster(slow={("node0", "node1"): 19.0}).cluster)  # type: ignore[arg-type]
    assert fine.verdict == "PASS" and not fine.findings


def test_a_missing_node_is_drained_and_the_exit_code_is_fail() -> None:
    res = synthetic_cluster(n=3, missing="node1")
    assert res.cluster is not None
    q = add_cluster(Qualification(verdict="PASS", exit_code=0), res.cluster)
    assert q.cluster is not None and q.cluster.drain == ["node1"] and (q.verdict, q.exit_code) == ("FAIL", 11)
    assert [f.subject for f in q.cluster.findings] == ["node1"]  # its failed links are not listed again


def test_cluster_file_round_trips_and_old_files_still_load(h100_results_path: Path) -> None:
    res = synthetic_cluster()
    again = results_from_data(json.loads(json.dumps(to_data(res))))
    assert again == res
    assert load_results(h100_results_path).cluster is None


def test_report_and_terminal_show_the_matrix_and_spread() -> None:
    from rich.console import Console

    from gpuprobe.report.cluster import cluster_section
    from gpuprobe.report.terminal_cluster import cluster_findings_table, cluster_tables

    res = synthetic_cluster(local={"node2": 40.0})
    assert res.cluster is not None
    q = add_cluster(Qualification(verdict="PASS", exit_code=0), res.cluster)
    sec = cluster_section([("c.json", res)], [q])
    assert sec is not None
    text = json.dumps(to_data(sec.blocks), default=str)
    assert "node_p2p_bandwidth" in text and "spread of each figure" in text and "drain: node2" in text
    console = Console(record=True, width=200)
    for t in [*cluster_tables(res.cluster), cluster_findings_table(q.cluster)]:  # type: ignore[arg-type]
        console.print(t)
    out = console.export_text()
    assert "Node to node bandwidth" in out and "node3" in out and "host_to_device_memcpy_ce" in out


def test_a_newer_cluster_section_is_refused_in_one_line() -> None:
    from gpuprobe.errors import ResultsFileError

    data = to_data(synthetic_cluster(n=2))
    data["cluster"]["schema_version"] = 2
    with pytest.raises(ResultsFileError, match=r"cluster section of kind 'gpuprobe\.cluster', version 2"):
        results_from_data(data, origin="c.json")


def test_the_local_all_reduce_under_torchrun_ignores_the_agent_store(monkeypatch) -> None:
    """Under torchrun (even with one node) the workers inherit TORCHELASTIC_USE_AGENT_STORE=True; torch would then
    make every worker a client of a store nobody serves on the workers' own port, and the sweep would hang."""
    pytest.importorskip("torch")
    from gpuprobe.probes.allreduce import run_allreduce_sweep

    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    ms = run_allreduce_sweep([[0, 1]], "gloo", [64], iters=2, warmup=0, samples=1, timeout_s=60)
    assert [m.status for m in ms] == ["ok"] and ms[0].verified


def test_probe_under_a_launcher_checks_its_timeout_and_mpi_needs_master_addr(monkeypatch, capsys) -> None:
    from gpuprobe.cli.app import main

    for k in [k for k in os.environ if k.startswith(("SLURM_", "TORCHELASTIC_"))]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert main(["probe", "--backend", "gloo"]) == 2
    assert "mpi: MASTER_ADDR is not set" in capsys.readouterr().err
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert main(["probe", "--backend", "gloo", "--cluster-timeout", "0"]) == 2
    assert "--cluster-timeout must be more than 0" in capsys.readouterr().err


def _late_check_in(store, tag: str, rank: int, after_s: float) -> None:
    import threading
    import time

    def go() -> None:
        time.sleep(after_s)
        store.set(f"{tag}/in/{rank}", "1")

    threading.Thread(target=go, daemon=True).start()


def test_rank0_waits_longer_while_both_members_of_a_pair_are_out() -> None:
    """Rank 0 at a check-in, on a real torch store: node 1 comes 1.3 s late, node 2 never (hung). With no pair
    named, the 1 s wait leaves node 1 out too; when nodes 1 and 2 were the last round's pair, rank 0 waits on while
    both are out, takes node 1 when it comes, and stops waiting for node 2 at once (its partner got free of it)."""
    import time

    import torch.distributed as dist

    from gpuprobe.cluster.run import Coordinator

    def check_in(tag: str, pairs: list[tuple[int, int]]) -> tuple[list[int], float]:
        store = dist.HashStore()
        coord = Coordinator(store, 0, 3, timeout_s=0.1)
        coord.step_wait_s = 1.0
        _late_check_in(store, tag, 1, 1.3)
        t0 = time.monotonic()
        alive = coord.sync(tag, [0, 1, 2], pairs=pairs)
        assert json.loads(store.get(f"{tag}/alive")) == alive
        return alive, time.monotonic() - t0

    alone, took = check_in("round1", [])
    assert alone == [0] and took < 1.3
    paired, took = check_in("round1", [(1, 2)])
    assert paired == [0, 1] and 1.3 <= took < 1.9
