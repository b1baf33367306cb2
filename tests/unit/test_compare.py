"""Comparing two results files: matching, the change and whether it exceeds the spread of the samples."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from gpuprobe.importers import import_file
from gpuprobe.report.compare import compare_results, comparison_data
from gpuprobe.results import load_results
from gpuprobe.results.stats import summarize

DATA = Path(__file__).resolve().parents[1] / "data"
RUN1, RUN2 = DATA / "h100-probe-2026-11-25.json", DATA / "h100-probe-2026-11-25-run2.json"


def test_two_real_runs_match_every_measured_test() -> None:
    a, b = load_results(RUN1), load_results(RUN2)
    cmp = compare_results(a, b)
    ok = [m for m in a.measurements if m.status == "ok"]
    assert len([r for r in cmp.rows if r.change_pct is not None]) == len(ok)
    assert not cmp.only_a and not cmp.only_b
    row = next(r for r in cmp.rows if r.probe == "host_to_device_memcpy_ce")
    assert abs(row.change_pct - (row.b.value - row.a.value) / row.a.value * 100) < 1e-9
    data = json.loads(json.dumps(comparison_data(cmp), allow_nan=False))
    assert data["kind"] == "gpuprobe.comparison" and data["summary"]["matched"] == len(cmp.rows)


def test_a_lowered_figure_exceeds_the_spread_and_noise_does_not() -> None:
    a = load_results(RUN1)
    b = copy.deepcopy(a)  # derived test input: run 1 with one figure lowered by 20 %
    m = b.find("host_to_device_memcpy_ce")[0]
    m.samples = [x * 0.8 for x in m.samples]
    m.stat = summarize(m.samples)
    cmp = compare_results(a, b)
    changed = {r.probe for r in cmp.significant}
    assert changed == {"host_to_device_memcpy_ce"}
    row = cmp.significant[0]
    assert row.better is False and round(row.change_pct) == -20 and "apart" in row.basis


def test_overlapping_ranges_are_within_noise() -> None:
    a = load_results(RUN1)
    b = copy.deepcopy(a)
    m = b.find("device_to_host_memcpy_ce")[0]
    lo, hi = m.stat.min, m.stat.max
    m.samples = [lo, (lo + hi) / 2 * 1.0005, hi]
    m.stat = summarize(m.samples)
    row = next(r for r in compare_results(a, b).rows if r.probe == "device_to_host_memcpy_ce")
    assert row.exceeds_spread is False and "overlap" in row.basis


def test_latency_lower_is_better() -> None:
    a = load_results(RUN1)
    b = copy.deepcopy(a)
    m = b.find("host_device_latency_sm")[0]
    m.samples = [x * 0.5 for x in m.samples]
    m.stat = summarize(m.samples)
    row = next(r for r in compare_results(a, b).rows if r.probe == "host_device_latency_sm")
    assert row.exceeds_spread and row.better is True


def test_imported_nvbandwidth_matches_across_the_unrecorded_size() -> None:
    ours = load_results(RUN1)
    nvb = import_file(DATA / "nvbandwidth" / "nvbandwidth-h100-2026-11-25.txt")
    cmp = compare_results(nvb, ours, "nvbandwidth", "gpuprobe")
    got = {r.probe: r for r in cmp.rows}
    assert set(got) == {m.probe for m in nvb.measurements}
    h2d = got["host_to_device_memcpy_ce"]
    assert not h2d.size_matched and h2d.a.value == 52.78 and h2d.exceeds_spread is False  # +4.3 % < 5 % floor
    sm = got["host_to_device_memcpy_sm"]  # 30.65 vs 50.87: far beyond the floor
    assert sm.exceeds_spread and sm.better is True and "floor" in sm.basis
    assert any("device_to_device" not in x for x in cmp.only_b)


GLOO = Path(__file__).resolve().parents[1] / "data" / "gloo"


def test_two_cluster_runs_compare_node_by_node_and_link_by_link() -> None:
    """Two real two-node cluster runs (gloo on loopback): each node's own figures against the same node's, every
    node-to-node link and every all-reduce size over the nodes matched, the changes the files' medians give."""
    a = load_results(GLOO / "cluster-2nodes-srun-cpu.json")
    b = load_results(GLOO / "cluster-2nodes-srun-cpu-run2.json")
    assert a.cluster is not None and b.cluster is not None
    cmp = compare_results(a, b)
    assert not cmp.only_a and not cmp.only_b
    rows = {(r.scope, r.probe, r.route, r.size_bytes): r for r in cmp.rows}
    local = sum(len(n.results.measurements) for n in a.cluster.nodes if n.results is not None)
    cluster = len(a.cluster.links) + len(a.cluster.collectives)
    assert len(cmp.rows) == len(rows) == local + cluster
    assert {r.scope for r in cmp.rows} == {"node0", "node1", "cluster"}
    assert all(r.route.startswith(f"{r.scope}: ") for r in cmp.rows if r.scope != "cluster")
    for ma in a.cluster.links:
        mb = next(m for m in b.cluster.links if (m.probe, m.src, m.dst) == (ma.probe, ma.src, ma.dst))
        r = rows[("cluster", ma.probe, f"{ma.src} → {ma.dst}", ma.size_bytes)]
        assert ma.value is not None and mb.value is not None
        assert r.change_pct == pytest.approx((mb.value - ma.value) / ma.value * 100)
        assert r.better == ((mb.value > ma.value) == (ma.unit == "GB/s"))
    sizes = sorted(r.size_bytes or 0 for r in cmp.rows if r.route == "nodes 0,1")
    assert sizes == sorted(m.size_bytes or 0 for m in a.cluster.collectives) and len(sizes) == 10


def test_a_cluster_file_against_a_single_node_file_compares_its_own_figures() -> None:
    """One cluster file and one single-node file: the cluster file's own figures (rank 0's) against the single
    node's, as for any two results files; no node scope, no links."""
    a = load_results(GLOO / "cluster-2nodes-srun-cpu.json")
    single = copy.deepcopy(a)
    single.cluster = None  # DERIVED: the same figures as a single-node file
    cmp = compare_results(a, single)
    assert len(cmp.rows) == len(a.measurements) and all(r.scope is None for r in cmp.rows)
    assert not cmp.only_a and not cmp.only_b


def test_route_of_a_large_group_reads_as_the_report_writes_it() -> None:
    """A group of more than eight ranks is its span and count, as in the report and plots; small groups list all."""
    from gpuprobe.report.compare import _route

    assert _route(None, None, None, list(range(16))) == "GPUs 0-15 (16 ranks)"
    assert _route("cluster", None, None, [0, 1]) == "nodes 0,1"
    assert _route("node1", None, None, [0, 2, 4, 6, 8, 10, 12, 14, 16]) == "node1: GPUs 0,2,4,6,... (9 ranks)"
