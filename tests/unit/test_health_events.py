"""Every health judgement on a CONSTRUCTED NVML sequence (tests/unit/health_sequences.py): the fault appears part
way through a replayed run; the sampler records it and the judgement names verdict, cause and next step."""

from __future__ import annotations

import pytest

from gpuprobe.qualify.health_events import judge_timeline
from tests.unit.health_sequences import sampled, sequence


def _only(checks, test):
    found = [c for c in checks if c.test == test]
    assert found, f"no {test} check in {[c.test for c in checks]}"
    return found


def test_healthy_sequence_has_nothing_to_say():
    tl = sampled(sequence())
    checks = judge_timeline(tl)
    assert tl.constructed and len(tl.samples) == 6 and tl.xid_supported
    assert {c.verdict for c in checks} <= {"PASS", "INFO"}
    assert {c.test for c in checks} >= {"xid", "ecc_uncorrected", "row_remap", "throttle", "pcie_replay_live",
                                        "clocks_under_load"}


@pytest.mark.parametrize(("xid", "cause", "step"), [
    (48, "double-bit ECC", "ROW_REMAPPER"),
    (63, "row remapping", "reset the GPU"),
    (64, "FAILED", "RMA"),
    (74, "NVLink error", "nvlink -e"),
    (79, "fallen off the bus", "reboot"),
    (94, "contained ECC error", "reset the GPU"),
    (95, "uncontained ECC error", "drain the node"),
])
def test_each_known_xid_fails_with_its_meaning_and_next_step(xid, cause, step):
    tl = sampled(sequence(fault={"xidEvents()": {"value": [[0, xid]]}}, once={"xidEvents()"}))
    assert [(e.gpu, e.xid, e.t_s) for e in tl.xid_events] == [(0, xid, 3.0)]
    [c] = _only(judge_timeline(tl), "xid")
    assert c.verdict == "FAIL" and c.subject == "gpu0" and c.value == xid
    assert cause in c.cause and f"XID {xid} at 3 s" in c.cause
    assert step in c.next_step


def test_other_xid_is_a_generic_warning():
    tl = sampled(sequence(fault={"xidEvents()": {"value": [[0, 13]]}}, once={"xidEvents()"}))
    [c] = _only(judge_timeline(tl), "xid")
    assert c.verdict == "WARN" and "XID 13" in c.cause and "catalogue" in c.next_step


def test_xid_unsupported_is_said():
    seq = sequence()
    for calls in seq.steps:
        del calls["xidEvents()"]
    tl = sampled(seq)
    assert not tl.xid_supported
    [c] = _only(judge_timeline(tl), "xid")
    assert c.verdict == "INFO" and "not watched" in c.cause and "dmesg" in c.next_step


def test_uncorrected_ecc_during_the_run_fails():
    [c] = _only(judge_timeline(sampled(sequence(fault={"nvmlDeviceGetTotalEccErrors(gpu0,1,0)": {"value": 2}}))),
                "ecc_uncorrected")
    assert c.verdict == "FAIL" and c.value == 2 and "2 during the run" in c.cause and "dcgmi diag" in c.next_step


def test_corrected_ecc_climbing_warns():
    [c] = _only(judge_timeline(sampled(sequence(fault={"nvmlDeviceGetTotalEccErrors(gpu0,0,0)": {"value": 7}}))),
                "ecc_corrected")
    assert c.verdict == "WARN" and c.value == 7 and "climbing" in c.cause


@pytest.mark.parametrize(("rows", "verdict", "words"), [
    ([0, 1, 1, 0], "WARN", "pending"),
    ([0, 1, 0, 1], "FAIL", "failed"),
])
def test_row_remap_pending_or_failed(rows, verdict, words):
    [c] = _only(judge_timeline(sampled(sequence(fault={"nvmlDeviceGetRemappedRows(gpu0)": {"value": rows}}))),
                "row_remap")
    assert c.verdict == verdict and words in c.cause


@pytest.mark.parametrize(("bit", "test", "verdict"), [
    (0x8, "throttle_hw_slowdown", "FAIL"),
    (0x40, "throttle_hw_thermal", "FAIL"),
    (0x80, "throttle_hw_power_brake", "FAIL"),
    (0x20, "throttle_sw_thermal", "WARN"),
    (0x4, "throttle_sw_power_cap", "INFO"),
])
def test_each_throttle_reason(bit, test, verdict):
    checks = judge_timeline(sampled(sequence(fault={"nvmlDeviceGetCurrentClocksEventReasons(gpu0)": {"value": bit}})))
    [c] = _only(checks, test)
    assert c.verdict == verdict and c.value == 3 and "3 of 6 samples, first at 3 s" in c.cause
    if verdict != "INFO":
        assert c.next_step


def test_throttle_reasons_from_the_older_nvml_call():
    seq = sequence(fault={"nvmlDeviceGetCurrentClocksThrottleReasons(gpu0)": {"value": 0x40}})
    for calls in seq.steps:
        calls["nvmlDeviceGetCurrentClocksEventReasons(gpu0)"] = {"error": "NVML_ERROR_FUNCTION_NOT_FOUND"}
    assert _only(judge_timeline(sampled(seq)), "throttle_hw_thermal")[0].verdict == "FAIL"


@pytest.mark.parametrize(("count", "verdict"), [(5, "WARN"), (200, "FAIL")])
def test_replay_counter_climbing(count, verdict):
    [c] = _only(judge_timeline(sampled(sequence(fault={"nvmlDeviceGetPcieReplayCounter(gpu0)": {"value": count}}))),
                "pcie_replay_live")
    assert c.verdict == verdict and c.value == count and f"0 → {count}" in c.cause


def test_clocks_down_under_load_warns_with_the_reasons_seen():
    # the power cap named while the GPU draws 400 W of its 700 W limit: something else holds the clock down
    tl = sampled(sequence(at=1, fault={"nvmlDeviceGetClockInfo(gpu0,1)": {"value": 1100},
                                       "nvmlDeviceGetPowerUsage(gpu0)": {"value": 400_000},
                                       "nvmlDeviceGetCurrentClocksEventReasons(gpu0)": {"value": 0x4}}))
    [c] = _only(judge_timeline(tl), "clocks_under_load")
    assert c.verdict == "WARN" and c.value == 1100 and c.expected == 1980
    assert "clocks down under load" in c.cause and "sw_power_cap" in c.cause


def test_clocks_down_with_no_reason_warn():
    tl = sampled(sequence(at=1, fault={"nvmlDeviceGetClockInfo(gpu0,1)": {"value": 1100}}))
    [c] = _only(judge_timeline(tl), "clocks_under_load")
    assert c.verdict == "WARN" and "no throttle reason" in c.cause


def test_clocks_set_by_the_power_limit_are_recorded_not_judged():
    # as on the H200 under the burn-in's matmul: ~1,500 MHz, SW power cap alone, ~690 W of the 700 W limit
    tl = sampled(sequence(at=1, fault={"nvmlDeviceGetClockInfo(gpu0,1)": {"value": 1500},
                                       "nvmlDeviceGetCurrentClocksEventReasons(gpu0)": {"value": 0x4}}))
    [c] = _only(judge_timeline(tl), "clocks_under_load")
    assert c.verdict == "INFO" and c.value == 1500
    assert "power limit" in c.cause and "690 W of the 700 W" in c.cause


def test_clocks_at_the_power_limit_through_a_dip_at_a_phase_change():
    # the H200's burn-in: 313 of 315 clock-down samples at the limit, two at a phase change (321 W, 655 W)
    from gpuprobe.qualify.health_events import _at_power_limit
    from gpuprobe.results.qualification import HealthSample

    def sample(t: float, w: float, reasons: int = 0x4) -> HealthSample:
        return HealthSample(t_s=t, gpu=0, sm_clock_mhz=1500, power_w=w, clocks_event_reasons=reasons)

    down = [sample(t, 692.0) for t in range(28)] + [sample(28, 321.0), sample(29, 655.0)]
    assert _at_power_limit(down, 700.0)
    assert not _at_power_limit(down[:2] + [sample(30, 400.0)] * 5, 700.0)  # mostly below the limit
    assert not _at_power_limit([*down, sample(31, 692.0, 0x4 | 0x40)], 700.0)  # HW thermal too


def test_clocks_down_at_idle_are_not_judged():
    tl = sampled(sequence(at=0, fault={"nvmlDeviceGetClockInfo(gpu0,1)": {"value": 345},
                                       "nvmlDeviceGetUtilizationRates(gpu0)": {"value": {"gpu": 0, "memory": 0}}}),
                 loaded=False)
    assert not [c for c in judge_timeline(tl) if c.test == "clocks_under_load"]


def test_fault_on_one_gpu_of_two_names_that_gpu():
    tl = sampled(sequence(gpus=2, fault={"xidEvents()": {"value": [[1, 79]]}}, once={"xidEvents()"}), gpus=2)
    checks = judge_timeline(tl)
    assert [(c.subject, c.verdict) for c in checks if c.test == "xid"] == [("gpu1", "FAIL"), ("gpu0", "PASS")]


def test_sampler_failure_is_a_note_not_an_error():
    class Broken:
        unavailable: tuple[str, ...] = ()

        def query(self, *a, **k):
            raise RuntimeError("driver went away")

    from gpuprobe.system.sampler import Sampler

    s = Sampler(Broken(), [0], clock=lambda: 0.0)
    s.open()
    s.sample_once()
    tl = s.stop()
    assert not tl.samples and any("driver went away" in n for n in tl.notes)


def test_sampler_thread_runs_and_stops():
    from gpuprobe.system.sampler import Sampler

    seq = sequence(steps=3)
    s = Sampler(seq, [0], interval_s=0.01)
    with s:
        s.phase("load", loaded=True)
        import time
        time.sleep(0.1)
    assert len(s.timeline.samples) >= 3 and s.timeline.phases[0].end_s is not None


def test_the_real_h200_burn_in_timeline_judged_again():
    """The 5-minute burn-in recorded on one H200 (tests/data/qualify-h200-2026-12-01: 2026-12-01, driver
    580.159.04, torch 2.11): the GPU held its 700 W limit at ~1,500 MHz (SW power cap alone) and nothing else
    happened; judged with the power-limit rule, the clocks are recorded and every health check passes."""
    from pathlib import Path

    from gpuprobe.results.qualification import load_qualification

    q = load_qualification(Path(__file__).parents[1] / "data" / "qualify-h200-2026-12-01" / "burn-in-qual.json")
    assert q.timeline is not None and q.timeline.constructed is False and len(q.timeline.samples) > 300
    checks = judge_timeline(q.timeline)
    [clocks] = _only(checks, "clocks_under_load")
    assert clocks.verdict == "INFO" and 1400 <= clocks.value <= 1600 and "power limit" in clocks.cause
    assert {c.verdict for c in checks} <= {"PASS", "INFO"}, [(c.test, c.verdict) for c in checks]
    assert q.burn_in is not None and q.burn_in.ran_s >= 300
    assert all(m.ratio is not None and m.ratio >= 0.90 for m in q.burn_in.matmul)
