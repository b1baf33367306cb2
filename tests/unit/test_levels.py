"""The levels' orchestration on the CPU: a fake probe run (DERIVED results from the real H100 capture), a
simulated clock, the NVML sampler over a CONSTRUCTED sequence and the simulated burn-in backend."""

from __future__ import annotations

import json

import pytest

from gpuprobe.qualify import judge
from gpuprobe.qualify.burnin import SimulatedBurnIn, judge_burn_in, matmul_ratios
from gpuprobe.qualify.confirm import confirm, failing_probes
from gpuprobe.qualify.levels import LevelError, LevelRun, parse_duration, run_level, stability_checks
from gpuprobe.qualify.outputs import to_json
from gpuprobe.qualify.peers import peer_outliers
from gpuprobe.results.qualification import BurnIn, load_qualification, qualification_from_data
from gpuprobe.system.sampler import Sampler
from tests.unit import qualify_derived as qd
from tests.unit.health_sequences import sequence


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def _probe_runs(results_list, clock, seconds=5.0):
    calls = []

    def probe(keys, quick):
        calls.append((list(keys), quick))
        clock.advance(seconds)
        return results_list[min(len(calls) - 1, len(results_list) - 1)]
    return probe, calls


def test_parse_duration():
    assert parse_duration("10m") == 600 and parse_duration("1h30m") == 5400 and parse_duration("4h") == 14400
    assert parse_duration("1m") == 60 and parse_duration("90s") == 90
    for bad in ("", "10", "5s", "5h", "ten minutes"):
        with pytest.raises(LevelError):
            parse_duration(bad)


def test_quick_level_runs_the_quick_suite_once_with_a_timeline():
    clock = Clock()
    probe, calls = _probe_runs([qd.real()], clock)
    sampler = Sampler(sequence(steps=3), [0], interval_s=0.01, clock=clock, constructed=True)
    q, _ = run_level(LevelRun("quick", probe, sampler=sampler, clock=clock))
    assert calls == [([], True)]
    assert q.level == "quick" and q.verdict == "PASS"
    assert q.timeline is not None and q.timeline.samples and q.timeline.phases[0].name == "probes (quick suite)"
    level = next(c for c in q.checks if c.test == "level")
    assert level.value == 5.0 and level.expected == 30.0
    assert any(c.test == "xid" and c.verdict == "PASS" for c in q.checks)


def test_quick_level_health_fault_fails_the_level():
    clock = Clock()
    probe, _ = _probe_runs([qd.real()], clock)
    seq = sequence(steps=2, at=0, fault={"nvmlDeviceGetTotalEccErrors(gpu0,1,0)": {"value": 1}})
    q, _ = run_level(LevelRun("quick", probe, sampler=Sampler(seq, [0], interval_s=0.01, clock=clock), clock=clock))
    assert q.verdict == "FAIL" and q.exit_code == 11
    assert next(c for c in q.checks if c.test == "ecc_uncorrected").verdict == "FAIL"


def test_standard_level_runs_the_full_suite_three_times_and_judges_stability():
    clock = Clock()
    runs = [qd.real(), qd.lowered("device_local_copy", 0.80), qd.real()]
    probe, calls = _probe_runs(runs, clock, seconds=50)
    q, judged = run_level(LevelRun("standard", probe, clock=clock))
    assert calls == [([], False)] * 3 and judged is runs[2]
    stab = {c.test: c for c in q.checks if c.category == "stability"}
    assert stab["host_to_device_memcpy_ce"].verdict == "PASS"
    local = stab["device_local_copy"]
    assert local.verdict == "WARN" and local.value == 10.1  # 1, 0.8, 1: population cv 10.1 %
    assert "unstable figure" in local.cause
    assert q.verdict == "WARN" and next(c for c in q.checks if c.test == "level").value == 150.0


def test_stability_fails_above_fifteen_percent():
    checks = stability_checks([qd.real(), qd.lowered("device_local_copy", 0.5), qd.real()])
    assert next(c for c in checks if c.test == "device_local_copy").verdict == "FAIL"


def test_pageable_copies_spread_is_recorded_not_judged():
    # the real H200 standard level: pageable copies moved 16 % between three runs of a healthy machine
    checks = stability_checks([qd.real(), qd.lowered("host_to_device_pageable_memcpy_ce", 0.6), qd.real()])
    c = next(c for c in checks if c.test == "host_to_device_pageable_memcpy_ce")
    assert c.verdict == "INFO" and c.value > 15 and "not judged" in c.cause


def test_a_failing_figure_is_measured_again_and_confirmed():
    clock = Clock()
    low = qd.lowered("host_to_device_memcpy_ce", 0.5)
    probe, calls = _probe_runs([low, low], clock)
    q, _ = run_level(LevelRun("quick", probe, clock=clock))
    assert calls == [([], True), (["host_to_device_memcpy_ce"], True)]
    c = next(c for c in q.checks if c.test == "host_to_device_memcpy_ce")
    assert c.verdict == "FAIL" and c.confirmed is True and "confirmed: measured again" in c.detail
    assert q.verdict == "FAIL"


def test_a_transient_failure_is_not_called_fail():
    clock = Clock()
    probe, _calls = _probe_runs([qd.lowered("host_to_device_memcpy_ce", 0.5), qd.real()], clock)
    q, _ = run_level(LevelRun("quick", probe, clock=clock))
    c = next(c for c in q.checks if c.test == "host_to_device_memcpy_ce")
    assert c.verdict == "PASS" and c.confirmed is False and "first measurement" in c.detail
    assert q.verdict == "PASS" and q.counts["FAIL"] == 0


def test_confirm_without_the_second_figure_leaves_it_unconfirmed():
    q1 = judge(qd.lowered("host_to_device_memcpy_ce", 0.5))
    assert failing_probes(q1) == ["host_to_device_memcpy_ce"]
    q2 = judge(qd.real())
    q2.checks = [c for c in q2.checks if c.test != "host_to_device_memcpy_ce"]
    assert confirm(q1, q2) == 0
    c = next(c for c in q1.checks if c.test == "host_to_device_memcpy_ce")
    assert c.verdict == "FAIL" and c.confirmed is None and "not measured again" in c.detail


@pytest.mark.parametrize(("under", "verdict"), [(760.0, "PASS"), (720.0, "PASS"), (700.0, "WARN"), (500.0, "FAIL")])
def test_burn_in_matmul_ratio(under, verdict):
    b = BurnIn(duration_s=300, ran_s=300, matmul=matmul_ratios({0: 800.0}, {0: under}))
    assert b.matmul[0].ratio == round(under / 800.0, 4)
    [c] = [c for c in judge_burn_in(b) if c.test == "matmul_under_load"]
    assert c.verdict == verdict and c.value == round(under / 800, 4) and c.expected == 0.90


def test_burn_in_ratio_missing_and_peer_gap():
    figs = matmul_ratios({0: 800.0, 1: 650.0}, {0: 790.0})
    assert [(m.gpu, m.ratio) for m in figs] == [(0, 0.9875), (1, None)]
    checks = judge_burn_in(BurnIn(duration_s=60, ran_s=60, matmul=figs))
    assert [(c.subject, c.test, c.verdict) for c in checks] == [
        ("gpu0", "matmul_under_load", "PASS"), ("gpu1", "matmul_under_load", "WARN")]
    figs = matmul_ratios({0: 800.0, 1: 650.0}, {0: 790.0, 1: 640.0})
    checks = judge_burn_in(BurnIn(duration_s=60, ran_s=30, matmul=figs))
    assert ("gpu1", "matmul_alone", "WARN") in [(c.subject, c.test, c.verdict) for c in checks]
    assert any(c.test == "burn-in" and "ran 30 s of the 60 s" in c.cause for c in checks)


def test_burn_in_level_on_the_simulated_backend():
    clock = Clock()
    probe, calls = _probe_runs([qd.real()], clock)
    backend = SimulatedBurnIn({0: 800.0}, {0: 744.0}, clock.advance)
    sampler = Sampler(sequence(steps=4), [0], interval_s=0.01, clock=clock, constructed=True)
    q, _ = run_level(LevelRun("burn-in", probe, sampler=sampler, burn_in=lambda: backend, duration_s=120,
                              clock=clock))
    b = q.burn_in
    assert b is not None and b.backend == "simulated" and b.ran_s == 120 and b.matmul[0].ratio == 0.93
    assert [p.name for p in q.timeline.phases][:3] == ["probes (quick suite)", "matmul alone",
                                                       "load: matmul + copies + all-reduce"]
    assert next(c for c in q.checks if c.test == "matmul_under_load").verdict == "PASS"
    assert next(c for c in q.checks if c.test == "level").value == 5 + 10 + 120
    assert q.level == "burn-in" and calls == [([], True)]


def test_burn_in_backend_that_cannot_start_is_a_problem_not_a_crash():
    clock = Clock()
    probe, _ = _probe_runs([qd.real()], clock)

    def broken():
        raise RuntimeError("torch sees no CUDA device")
    q, _ = run_level(LevelRun("burn-in", probe, burn_in=broken, duration_s=60, clock=clock))
    assert q.burn_in is not None and "torch sees no CUDA device" in q.burn_in.problems[0]
    assert any(c.test == "burn-in" and c.verdict == "WARN" for c in q.checks)


def test_timeline_and_burn_in_survive_the_json_round_trip_and_old_files_load(tmp_path):
    clock = Clock()
    probe, _ = _probe_runs([qd.real()], clock)
    sampler = Sampler(sequence(steps=3, fault={"xidEvents()": {"value": [[0, 79]]}}, at=0, once={"xidEvents()"}),
                      [0], interval_s=0.01, clock=clock, constructed=True)
    backend = SimulatedBurnIn({0: 800.0}, {0: 744.0}, clock.advance)
    q, _ = run_level(LevelRun("burn-in", probe, sampler=sampler, burn_in=lambda: backend, duration_s=60,
                              clock=clock))
    path = tmp_path / "q.json"
    path.write_text(to_json(q))
    back = load_qualification(path)
    assert back == q and back.schema_version == 2 and back.timeline.xid_events[0].xid == 79
    old = json.loads(to_json(judge(qd.real())))
    old["schema_version"] = 1
    for k in ("level", "reference", "reference_note", "timeline", "burn_in"):
        old.pop(k)
    for c in old["checks"]:
        for k in ("confirmed", "reference", "line_rate"):
            c.pop(k)
    v1 = qualification_from_data(old)
    assert v1.level == "input" and v1.timeline is None and v1.schema_version == 1


def test_peer_outlier_names_a_gpu_ten_percent_below_the_best():
    r = qd.multi_gpu(4, 18)
    qd.scale(qd.find(r, "host_to_device_memcpy_ce", dst="gpu2"), 0.88)
    q = judge(r)
    named = [o for o in q.outliers if o.subject == "host->gpu2" and o.test == "host_to_device_memcpy_ce"]
    assert named and named[0].ratio_to_best == pytest.approx(0.88, abs=0.001) and named[0].best is not None
    c = next(c for c in q.checks if c.subject == "host->gpu2" and c.test == "host_to_device_memcpy_ce")
    assert c.verdict == "WARN" and "below the best of 4 peers" in c.cause


def test_peers_within_ten_percent_are_not_named():
    r = qd.multi_gpu(4, 18)
    qd.scale(qd.find(r, "host_to_device_memcpy_ce", dst="gpu2"), 0.92)
    q = judge(r)
    assert not [o for o in q.outliers if o.subject == "host->gpu2"]
    assert peer_outliers(q) == []


def test_burn_in_threads_stop_on_ctrl_c_before_it_is_raised_again() -> None:
    """Ctrl-C (SIGINT here; SIGTERM and SIGHUP become the same) while the load's threads run: every thread is told
    to stop and has ended before the interrupt reaches the caller, which then saves and exits."""
    import os
    import signal
    import threading

    from gpuprobe.qualify.burnin import run_all

    stop = threading.Event()
    ran: list[int] = []

    def work(i: int) -> None:
        while not stop.wait(0.01):
            pass
        ran.append(i)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(3)]
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        run_all(threads, stop)
    assert stop.is_set() and sorted(ran) == [0, 1, 2] and not any(t.is_alive() for t in threads)
