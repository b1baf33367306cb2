"""``gpuprobe.qualify.judge`` on the real H100 capture and on DERIVED degraded inputs (see qualify_derived.py).

The real capture must pass with the expectations shown; every derived case is a real capture changed on
purpose (the change is named in the test and in the results' notes) and must get the right verdict and cause.
"""

from __future__ import annotations

import pytest
import qualify_derived as D

from gpuprobe.qualify import EXIT_FAIL, EXIT_PASS, EXIT_WARN, judge
from gpuprobe.qualify.expect import Facts, expectation, pcie_line_gbps
from gpuprobe.results.qualification import Qualification


def one(q: Qualification, test: str, subject: str | None = None):
    found = [c for c in q.checks if c.test == test and (subject is None or c.subject == subject)]
    assert len(found) == 1, (test, subject, [(c.test, c.subject) for c in found])
    return found[0]


# -- the real capture ------------------------------------------------------------------------------------------
def test_real_h100_capture_passes_with_its_expectations_shown() -> None:
    q = judge(D.real())
    assert q.verdict == "PASS" and q.exit_code == EXIT_PASS
    h2d = one(q, "host_to_device_memcpy_ce")
    assert h2d.expected == pytest.approx(63.0 * 0.87)
    assert "PCIe Gen5 x16" in h2d.expectation_basis and "0.87" in h2d.expectation_basis
    assert 1.0 < h2d.ratio < 1.01  # 55.03 of 54.81 GB/s
    local = one(q, "device_local_copy")
    assert local.expected == pytest.approx(3350 / 2 * 0.85) and "3.35 TB/s" in local.expectation_basis
    chase = one(q, "host_device_latency_sm")
    assert chase.expected == 1200 and not chase.higher_is_better and chase.ratio > 1
    # every judged figure carries its expectation and basis; pageable copies are recorded, not judged
    for c in q.checks:
        if c.verdict in ("PASS", "WARN", "FAIL") and c.category in ("bandwidth", "latency"):
            assert c.expected is not None and c.expectation_basis
    assert one(q, "host_to_device_pageable_memcpy_ce").verdict == "INFO"
    assert one(q, "pcie_link").verdict == "PASS" and one(q, "persistence_mode").verdict == "PASS"
    assert one(q, "all_reduce").verdict == "SKIP"  # one rank: busbw is 0 by definition
    waived = [c for c in q.checks if c.verdict == "SKIP" and c.test.startswith("device_to_device")]
    assert waived and all("needs at least 2 GPUs" in c.cause for c in waived)


def test_all_real_h100_captures_pass_or_warn_only_on_bidirectional_asymmetry() -> None:
    from gpuprobe.results import load_results

    paths = [D.DATA / "h100-probe-2026-11-25-run2.json", D.DATA / "h100-probe-quick-2026-11-25.json",
             *sorted((D.DATA.parents[1] / "reports" / "h100-2026-11-25").glob("probe-earlier-machine-run*.json"))]
    for path in paths:
        q = judge(load_results(path))
        assert q.verdict in ("PASS", "WARN"), path
        for c in q.warned():
            # earlier-machine run 1: H2D bidirectional 33.4 GB/s while H2D alone reached 51.8 (0.95)
            assert c.test == "host_to_device_bidirectional_memcpy_ce", (path, c)
            assert c.cause.startswith("reverse-traffic asymmetry")


# -- derived degraded cases -------------------------------------------------------------------------------------
def test_derived_figure_at_70_percent_fails_with_a_cause() -> None:
    q = judge(D.lowered("host_to_device_memcpy_ce", 0.70))
    c = one(q, "host_to_device_memcpy_ce")
    assert c.verdict == "FAIL" and 0.70 < c.ratio < 0.75
    assert "virtual machine" in c.cause and c.next_step  # the capture is from a VM
    assert q.verdict == "FAIL" and q.exit_code == EXIT_FAIL


def test_derived_figure_at_80_percent_warns() -> None:
    q = judge(D.lowered("host_to_device_memcpy_ce", 0.80))
    assert one(q, "host_to_device_memcpy_ce").verdict == "WARN"
    assert q.verdict == "WARN" and q.exit_code == EXIT_WARN


@pytest.mark.parametrize(("gen", "width", "state"), [(4, None, "PCIe Gen4 x16"), (None, 8, "PCIe Gen5 x8")])
def test_derived_downtrained_link_fails_naming_the_slot(gen, width, state) -> None:
    q = judge(D.downtrained(gen=gen, width=width, figures=0.5))
    h2d = one(q, "host_to_device_memcpy_ce")
    assert h2d.verdict == "FAIL" and h2d.cause.startswith("downtrained slot") and state in h2d.cause
    assert h2d.expected == pytest.approx(63.0 * 0.87)  # expectation from the maximum link, not the current one
    link = one(q, "pcie_link")
    assert link.verdict == "FAIL" and "downtrained slot" in link.cause and link.expected == 63.0
    assert link.value == pytest.approx(31.5)
    assert q.exit_code == EXIT_FAIL


def test_derived_link_read_at_gen4_but_measured_at_gen5_speed_is_an_idle_downclock() -> None:
    q = judge(D.downtrained(gen=4))
    link = one(q, "pcie_link")
    assert link.verdict == "INFO" and "downclocked at idle" in link.cause
    assert q.verdict == "PASS"


def test_derived_downtrained_link_without_host_figures_warns() -> None:
    r = D.downtrained(gen=4)
    r.measurements = [m for m in r.measurements if m.direction not in ("h2d", "d2h")]
    link = one(judge(r), "pcie_link")
    assert link.verdict == "WARN" and "re-read it under load" in link.cause


def test_derived_data_mismatch_fails() -> None:
    q = judge(D.mismatch())
    c = one(q, "device_to_host_memcpy_ce")
    assert c.verdict == "FAIL" and c.category == "data" and "did not verify" in c.cause
    assert q.exit_code == EXIT_FAIL


def test_derived_probe_error_fails() -> None:
    r = D.derived("host_device_latency_sm marked as failed")
    m = D.find(r, "host_device_latency_sm")
    m.status, m.stat, m.samples, m.reason = "error", None, [], "RuntimeError: launch failed"
    c = one(judge(r), "host_device_latency_sm")
    assert c.verdict == "FAIL" and "launch failed" in c.cause


@pytest.mark.parametrize(("replays", "verdict"), [(5, "WARN"), (500, "FAIL")])
def test_derived_replay_counter(replays, verdict) -> None:
    q = judge(D.with_device(f"replay counter {replays}", pcie_replay_counter=replays))
    c = one(q, "pcie_replay")
    assert c.verdict == verdict and "signal integrity" in c.cause and q.verdict == verdict


def test_derived_ecc_errors_fail_and_persistence_off_warns() -> None:
    q = judge(D.with_device("3 uncorrected ECC errors", ecc_errors_uncorrected=3))
    assert one(q, "ecc").verdict == "FAIL" and q.verdict == "FAIL"
    q = judge(D.with_device("persistence mode off", persistence_mode=False))
    assert one(q, "persistence_mode").verdict == "WARN" and q.verdict == "WARN"
    q = judge(D.with_device("SM clock read at 345 MHz", sm_clock_mhz=345))
    clocks = one(q, "clocks")
    assert clocks.verdict == "INFO" and "idle" in clocks.cause and q.verdict == "PASS"  # recorded only


def test_derived_bidirectional_asymmetry_is_at_most_warn() -> None:
    q = judge(D.lowered("host_to_device_bidirectional_memcpy_ce", 0.6))  # 26.6 of 44.1 GB/s: ratio 0.60
    c = one(q, "host_to_device_bidirectional_memcpy_ce")
    assert c.verdict == "WARN" and c.cause.startswith("reverse-traffic asymmetry") and c.ratio < 0.75


# -- derived multi-GPU systems ----------------------------------------------------------------------------------
def test_derived_8gpu_nv18_pair_expectations_and_pass() -> None:
    r = D.multi_gpu()
    q = judge(r)
    assert q.verdict == "PASS", [(c.test, c.subject, c.cause) for c in q.checks if c.verdict != "PASS"][:5]
    read = one(q, "device_to_device_memcpy_read_ce", "gpu0->gpu1")
    assert read.expected == pytest.approx(18 * 25 * 0.88) and "NV18" in read.expectation_basis
    assert "NVLink4" in read.expectation_basis
    staged = one(q, "device_to_device_memcpy_staged_ce", "gpu0->gpu1")
    assert staged.expected == pytest.approx(63.0 * 0.58)
    ar = one(q, "all_reduce")
    assert ar.subject == "gpu0,gpu1,gpu2,gpu3,gpu4,gpu5,gpu6,gpu7" and ar.expected == pytest.approx(450 * 0.80)
    lat = one(q, "device_to_device_latency_sm", "gpu3->gpu4")
    assert lat.expected == 830 and lat.verdict == "PASS"
    assert all(c.verdict == "PASS" for c in q.checks if c.test in ("nvlink", "peer_access"))
    assert len([c for c in q.checks if c.test == "peer_access"]) == 28 and not q.outliers


def test_derived_slow_pairs_are_ranked_outliers() -> None:
    r = D.slow_pair(D.slow_pair(D.multi_gpu(), 2, 5, 300.0), 1, 6, 330.0)
    q = judge(r)
    assert [(o.rank, o.subject) for o in q.outliers] == [(1, "gpu2->gpu5"), (2, "gpu1->gpu6")]
    assert q.outliers[0].median == 395.0 and q.outliers[0].compared_with == 56
    assert one(q, "device_to_device_memcpy_read_ce", "gpu2->gpu5").verdict == "WARN"  # 300 / 396 = 0.76
    assert q.exit_code == EXIT_WARN


def test_derived_outlier_that_passes_its_expectation_becomes_warn() -> None:
    r = D.slow_pair(D.multi_gpu(), 2, 5, 320.0)  # 0.81 of the median of the other pairs
    from gpuprobe.qualify import thresholds_from_data

    t = thresholds_from_data({"tests": {"device_to_device_memcpy_read_ce": {"warn": 0.5, "fail": 0.4}}})
    c = one(judge(r, t), "device_to_device_memcpy_read_ce", "gpu2->gpu5")
    assert c.verdict == "WARN" and c.cause.startswith("outlier: 81% of the median of 56")


def test_derived_nvlink_down_on_nv18_pair_fails_naming_nvlink_and_fabric() -> None:
    q = judge(D.nvlink_down(D.multi_gpu(), 3))
    c = one(q, "device_to_device_memcpy_read_ce", "gpu0->gpu3")
    assert c.verdict == "FAIL" and "NVLink down or unused" in c.cause and "PCIe speed" in c.cause
    assert "fabric" in c.cause and "nvidia-fabricmanager" in c.next_step
    link = one(q, "nvlink", "gpu3")
    assert link.verdict == "FAIL" and "18 of 18 NVLinks down" in link.cause
    assert one(q, "device_to_device_memcpy_read_ce", "gpu0->gpu1").verdict == "PASS"
    assert q.outliers and all("gpu3" in o.subject for o in q.outliers)
    assert q.exit_code == EXIT_FAIL


def test_derived_peer_access_missing_where_nvml_says_ok_fails_naming_acs_iommu_vm() -> None:
    q = judge(D.multi_gpu(n=2, path="PXB", cuda_peer=False))
    c = one(q, "peer_access", "gpu0,gpu1")
    assert c.verdict == "FAIL"
    for word in ("ACS", "IOMMU", "VM"):
        assert word in c.cause
    assert "ACSCtl" in c.next_step
    skipped = [c for c in q.checks if c.test == "device_to_device_memcpy_read_ce"]
    assert skipped and all(s.verdict == "SKIP" and "peer_access" in s.cause for s in skipped)
    assert q.exit_code == EXIT_FAIL


def test_derived_no_p2p_by_design_is_not_a_failure() -> None:
    r = D.multi_gpu(n=2, path="SYS", p2p="chipset not supported", cuda_peer=False)
    q = judge(r)
    assert one(q, "peer_access").verdict == "INFO"
    assert q.verdict == "PASS"


def test_derived_pcie_pair_peer_expectation() -> None:
    r = D.multi_gpu(n=2, path="PXB")
    facts = Facts.from_results(r)
    m = D.find(r, "device_to_device_memcpy_read_ce", src="gpu0", dst="gpu1")
    exp = expectation(m, facts)
    assert exp.kind == "pcie_p2p" and exp.value == pytest.approx(pcie_line_gbps(5, 16) * 0.75)
    assert judge(r).verdict == "PASS"


def test_derived_allreduce_slow_with_nccl_p2p_disabled_names_the_environment() -> None:
    r = D.multi_gpu()
    ar = D.find(r, "all_reduce")
    ar.busbw_gbps = 150.0
    r.notes.append("DERIVED TEST INPUT: all-reduce busbw set to 150 GB/s")
    q = judge(r, environment={"NCCL_P2P_DISABLE": "1"})
    c = one(q, "all_reduce")
    assert c.verdict == "FAIL" and "NCCL_P2P_DISABLE=1" in c.cause and "NCCL_DEBUG=INFO" in c.next_step
    assert one(q, "environment").verdict == "WARN"
