"""Qualification levels, as DCGM's diagnostic has them: quick, standard and burn-in.

==========  ===========  ==================================================================================
level       takes        what it runs and judges
==========  ===========  ==================================================================================
quick       <= 30 s      the quick probe suite once; every figure against its expectation and reference
standard    <= 3 min     the full probe suite three times; the last run judged, and each bandwidth figure's
                         stability across the three (coefficient of variation: WARN above 5 %, FAIL above 15 %)
burn-in     1 m ... 4 h  the quick suite, a bf16 matmul alone on every GPU (the baseline), then the
            (10 m or     sustained load: matmul, copies and all-reduce on every GPU at once for the duration;
            more advised) the matmul's rate under load / alone (target >= 0.90)
==========  ===========  ==================================================================================

Every level runs the NVML sampler (``system/sampler.py``) from start to end and judges its timeline
(``health_events.py``): XIDs, ECC, row remaps, throttle reasons, PCIe replays, clocks under load. A figure
below its fail band is measured again before it is called FAIL (``confirm.py``).

``run_level`` takes the probe run as a function (``ProbeRun``: test keys and quick -> Results), so the CLI
wires in the real probes and tests a fake one; the clock, the sampler and the burn-in backend are injected too.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuprobe.qualify.burnin import TARGET_RATIO, judge_burn_in, matmul_ratios
from gpuprobe.qualify.confirm import confirm, failing_probes
from gpuprobe.qualify.health_events import judge_timeline
from gpuprobe.qualify.judge import judge
from gpuprobe.qualify.judge_base import subject_of
from gpuprobe.qualify.thresholds import Thresholds
from gpuprobe.results.model import Measurement, Results
from gpuprobe.results.qualification import BurnIn, Check, Level, Qualification, Timeline, Verdict

LEVELS = ("quick", "standard", "burn-in")
_LEVEL: dict[str, Level] = {"quick": "quick", "standard": "standard", "burn-in": "burn-in"}
BUDGET_S = {"quick": 30.0, "standard": 180.0}
STANDARD_RUNS = 3
CV_WARN = 0.05
CV_FAIL = 0.15
MIN_BURN_IN_S = 60.0
RECOMMENDED_BURN_IN_S = 600.0
MAX_BURN_IN_S = 4 * 3600.0
MiB = 1 << 20

ProbeRun = Callable[[list[str], bool], Results]
"""(probe keys or [] for the level's suite, quick) -> Results."""


class LevelError(ValueError):
    """A level asked for with values it cannot run with (one line)."""


def parse_duration(text: str) -> float:
    """``90s``, ``10m``, ``1h30m``, ``4h`` -> seconds, between 1 minute and 4 hours."""
    parts = re.fullmatch(r"\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?\s*", text or "")
    if not text or not text.strip() or parts is None or not any(parts.groups()):
        raise LevelError(f"bad duration {text!r}: write it like 10m, 1h30m or 4h")
    h, m, s = (int(x) if x else 0 for x in parts.groups())
    seconds = float(h * 3600 + m * 60 + s)
    if not MIN_BURN_IN_S <= seconds <= MAX_BURN_IN_S:
        raise LevelError(f"burn-in duration {text} is outside 1m ... 4h (10m or more is recommended)")
    return seconds


@dataclass
class LevelRun:
    level: str
    probe: ProbeRun
    thresholds: Thresholds | None = None
    sampler: Any = None
    """A ``system.sampler.Sampler`` (started and stopped here), or None to run without one."""
    burn_in: Any = None
    """A burn-in backend (``burnin.TorchBurnIn`` or ``SimulatedBurnIn``), or a zero-argument function making
    one (its error is recorded, not raised); only for the burn-in level."""
    duration_s: float = RECOMMENDED_BURN_IN_S
    clock: Callable[[], float] = time.monotonic
    environment: Mapping[str, str] | None = None
    source: str = "live run"
    confirm: bool = True
    runs: list[Results] = field(default_factory=list)
    """Every results file measured (the standard level's three runs, the confirmation run)."""


def stability_checks(runs: list[Results]) -> list[Check]:
    """Each bandwidth figure's spread across the runs (coefficient of variation), one check per figure."""
    series: dict[tuple, list[float]] = {}
    first: dict[tuple, Measurement] = {}
    for r in runs:
        largest = max((m.size_bytes or 0 for m in r.measurements if m.probe == "all_reduce"), default=0)
        for m in r.measurements:
            if m.status != "ok":
                continue
            if m.probe == "all_reduce":
                if m.size_bytes != largest or not m.busbw_gbps:
                    continue
                value = m.busbw_gbps
            elif m.unit == "GB/s" and m.value and (m.size_bytes is None or m.size_bytes >= MiB):
                value = m.value
            else:
                continue
            key = (m.probe, m.src, m.dst, m.size_bytes, tuple(m.ranks or []))
            series.setdefault(key, []).append(value)
            first.setdefault(key, m)
    checks = []
    for key, values in series.items():
        if len(values) < 2:
            continue
        m = first[key]
        mean = statistics.fmean(values)
        cv = statistics.pstdev(values) / mean if mean else 0.0
        # a pageable copy's spread is the host's page handling and CPU, not the GPU or its link: recorded only
        verdict: Verdict = "INFO" if m.host_memory == "pageable" else \
            "FAIL" if cv > CV_FAIL else "WARN" if cv > CV_WARN else "PASS"
        c = Check(subject=subject_of(m), test=m.probe, verdict=verdict, category="stability",
                  value=round(cv * 100, 2), unit="% cv", expected=CV_WARN * 100, src=m.src, dst=m.dst,
                  path_class=m.path_class, size_bytes=m.size_bytes, higher_is_better=False,
                  expectation_basis=f"spread of {len(values)} runs; WARN above {CV_WARN:.0%}, FAIL above "
                                    f"{CV_FAIL:.0%}",
                  detail="runs: " + ", ".join(f"{v:.4g}" for v in values) + " GB/s")
        if verdict == "INFO":
            c.cause = (f"{cv:.1%} spread over {len(values)} runs, recorded, not judged: a pageable copy goes through "
                       "the host's page handling and CPU, which move it by 10-30 % between runs on a healthy machine")
        elif verdict != "PASS":
            c.cause = (f"unstable figure: {cv:.1%} spread over {len(values)} runs (another job on the machine, "
                       "clocks changing, a link retraining, NUMA placement varying)")
            c.next_step = ("make sure the machine is idle, pin the run to the GPU's NUMA node, check the timeline's "
                           "clocks and throttle reasons; run the standard level again")
        checks.append(c)
    return checks


def _burn_in(run: LevelRun, sampler: Any) -> BurnIn:
    b = BurnIn(duration_s=run.duration_s, target_ratio=TARGET_RATIO)
    try:
        backend = run.burn_in() if callable(run.burn_in) and not hasattr(run.burn_in, "load") else run.burn_in
        if backend is None:
            raise RuntimeError("no burn-in backend")
    except Exception as exc:  # noqa: BLE001 - recorded as a burn-in problem
        b.problems.append(f"the burn-in load could not start: {exc}")
        return b
    b.backend = backend.name
    alone_s = min(30.0, max(10.0, run.duration_s * 0.05))
    try:
        if sampler is not None:
            sampler.phase("matmul alone", loaded=True)
        alone, problems = backend.matmul_alone(alone_s)
        b.problems.extend(problems)
        if sampler is not None:
            sampler.phase("load: matmul + copies + all-reduce", loaded=True)
        figures = backend.load(run.duration_s, threading.Event())
    except Exception as exc:  # noqa: BLE001 - recorded; the figures so far are kept
        b.problems.append(f"the burn-in load failed: {type(exc).__name__}: {exc}")
        return b
    finally:
        if sampler is not None:
            sampler.phase("after the load")
    b.ran_s = figures.ran_s
    b.iterations = figures.iterations
    b.matmul = matmul_ratios(alone, figures.matmul_tflops)
    b.copies_gbps = {f"gpu{g}": v for g, v in sorted(figures.copies_gbps.items())}
    b.allreduce_busbw_gbps = figures.allreduce_busbw_gbps
    b.problems.extend(figures.problems)
    b.notes.extend(figures.notes)
    return b


def run_level(run: LevelRun) -> tuple[Qualification, Results]:
    """Run ``run.level``; the qualification (with timeline) and the results file it judged."""
    if run.level not in LEVELS:
        raise LevelError(f"unknown level {run.level!r}: choose one of {', '.join(LEVELS)}")
    t0 = run.clock()
    sampler = run.sampler
    if sampler is not None:
        sampler.start()
    burn: BurnIn | None = None
    timeline: Timeline | None = None
    try:
        quick = run.level in ("quick", "burn-in")
        if run.level == "standard":
            for i in range(1, STANDARD_RUNS + 1):
                if sampler is not None:
                    sampler.phase(f"probes run {i} of {STANDARD_RUNS}")
                run.runs.append(run.probe([], False))
        else:
            if sampler is not None:
                sampler.phase("probes (quick suite)")
            run.runs.append(run.probe([], True))
        results = run.runs[-1]
        if run.level == "burn-in":
            burn = _burn_in(run, sampler)
        q = judge(results, run.thresholds, source=run.source, environment=run.environment)
        fails = failing_probes(q) if run.confirm else []
        if fails:
            if sampler is not None:
                sampler.phase("measuring failing figures again")
            again = run.probe(fails, quick)
            run.runs.append(again)
            confirm(q, judge(again, run.thresholds, source=run.source, environment=run.environment))
    finally:
        if sampler is not None:
            timeline = sampler.stop()
    if run.level == "standard":
        q.checks.extend(stability_checks(run.runs[:STANDARD_RUNS]))
    if burn is not None:
        q.burn_in = burn
        q.checks.extend(judge_burn_in(burn))
    if timeline is not None:
        q.timeline = timeline
        q.checks.extend(judge_timeline(timeline))
    elapsed = run.clock() - t0
    budget = BUDGET_S.get(run.level)
    q.checks.append(Check(subject="run", test="level", verdict="INFO", category="run", value=round(elapsed, 1),
                          unit="s", expected=budget,
                          detail=f"{run.level} level took {elapsed:.0f} s"
                                 + (f" (budget {budget:.0f} s)" if budget else "")))
    q.level = _LEVEL[run.level]
    q.recount()
    return q, results
