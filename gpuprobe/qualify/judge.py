"""Judge a results file: every measurement against its expectation, every link-health fact, outliers.

Rules (the band comes from ``Thresholds``: defaults WARN below 0.85, FAIL below 0.75 of the expectation):

- measured figure: ratio = measured / expected (bandwidth) or expected / measured (latency);
  PASS at or above the warn ratio, WARN below it, FAIL below the fail ratio. A bidirectional figure whose
  link reaches its rate one way (the unidirectional figure of the same direction passes) is at most WARN:
  the link works, the reverse traffic slows this direction down.
- ``mismatch`` (copied data did not verify) and ``error`` (the probe failed): FAIL.
- ``waived``: SKIP with the probe's reason, except peer copies waived for lack of peer access where NVML
  says P2P is possible (that is a ``peer_access`` FAIL for the pair).
- no expectation (pageable copies, unknown GPU, ...): INFO, recorded with the reason.
- link health per GPU: PCIe below its maximum generation or width (WARN; FAIL when the measured host
  bandwidth confirms it; INFO when the measured bandwidth exceeds what the reported link could carry, i.e.
  the link was only downclocked at idle when NVML read it), replay counter (WARN above 0, FAIL above
  ``replay_fail``), NVLinks down (FAIL on a GPU with NV# pairs or fewer links than the other GPUs),
  uncorrected ECC errors (FAIL), ECC off (WARN), persistence mode off (WARN), clocks (INFO only: they are
  read before the probes run, when an idle GPU may run slower).
- peer access per pair: CUDA refuses peer access (or the peer probes were waived for it) where NVML says P2P
  is ok or the pair is NV#: FAIL; P2P disabled by a registry key: WARN; not supported on the path: INFO.
- outliers: a GPU or pair below ``outlier_below_median`` of the median of the same test over at least three
  subjects; ranked, furthest below first; a PASS check that is an outlier becomes WARN.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from gpuprobe import __version__
from gpuprobe.qualify import references
from gpuprobe.qualify.diagnosis import Diagnosis
from gpuprobe.qualify.expect import (
    Expectation,
    NoExpectation,
    allreduce_expectation,
    expectation,
    gpu_index,
)
from gpuprobe.qualify.health import Health
from gpuprobe.qualify.judge_base import (
    NEXT_RERUN,
    PEER_WAIVED,
    subject_of,
)
from gpuprobe.qualify.peers import mark_weaker, peer_outliers
from gpuprobe.qualify.thresholds import Applied, Thresholds
from gpuprobe.results.model import CUDA_SKIPPED, Measurement, Results, now_utc
from gpuprobe.results.qualification import Check, Outlier, Qualification, exit_code, worst


class _Judge(Diagnosis, Health):
    """The whole judgement: measurements (here), their diagnosis, health facts, run-level checks."""

    # -- measurements ---------------------------------------------------------------------------------------
    def measurements(self) -> None:
        groups: dict[tuple[int, ...], list[tuple[int, Measurement]]] = {}
        for i, m in enumerate(self.results.measurements):
            if m.probe == "all_reduce" and m.status == "ok":
                groups.setdefault(tuple(m.ranks or []), []).append((i, m))
                continue
            self.measurement(i, m)
        for members in groups.values():
            self.allreduce(members)


    def measurement(self, i: int, m: Measurement) -> None:
        if m.status == "waived":
            reason = m.reason or "waived"
            if PEER_WAIVED in reason:
                a, b = gpu_index(m.src), gpu_index(m.dst)
                if a is not None and b is not None and self.peer_expected(self.facts.pair(a, b)):
                    self.pair_peer_missing.add((min(a, b), max(a, b)))
                    reason += " although NVML reports P2P possible: see the peer_access check of this pair"
            self.add(self.base(i, m, "SKIP", cause=reason))
            return
        if m.status == "error":
            self.add(self.base(i, m, "FAIL", category="run", cause=f"the probe failed: {m.reason}",
                               next_step="re-run with GPUPROBE_DEBUG=1 to see the traceback; fix the setup "
                                         "(packages, GPU busy or in a bad state) and probe again"))
            return
        value = m.value
        if m.status == "mismatch":
            self.add(self.base(i, m, "FAIL", category="data", value=value,
                               cause=f"data corruption: the copied data did not verify ({m.reason or 'mismatch'})",
                               next_step=NEXT_RERUN + "; on switched PCIe a corrupting P2P path (ACS/IOMMU, "
                                         "broken P2P) is a known cause: compare the staged copy of the same pair"))
            return
        if value is None:
            self.add(self.base(i, m, "SKIP", cause=m.reason or "no figure recorded"))
            return
        band = self.band(m.probe, m.dst, m.src)
        if band.skip:
            self.add(self.base(i, m, "SKIP", value=value, cause=f"not judged ({band.origin} says skip)"))
            return
        exp = expectation(m, self.facts)
        self.judge_value(i, m, value, exp, band)

    def judge_value(self, i: int, m: Measurement, value: float, exp: Expectation | NoExpectation,
                    band: Applied, **extra: Any) -> Check:
        higher = exp.higher_is_better if isinstance(exp, Expectation) else m.unit not in ("us", "ns")
        if band.expected is not None:
            derived = f" (derived: {exp.value:.4g} {exp.unit}, {exp.basis})" if isinstance(exp, Expectation) else ""
            exp = Expectation(band.expected, m.unit, f"set by the thresholds file ({band.origin}){derived}",
                              higher_is_better=higher, kind=exp.kind if isinstance(exp, Expectation) else "set")
        if isinstance(exp, NoExpectation):
            return self.add(self.base(i, m, "INFO", value=value, cause=exp.reason, higher_is_better=higher, **extra))
        ratio = value / exp.value if exp.higher_is_better else exp.value / value if value > 0 else 0.0
        verdict = self.grade(ratio, band)
        check = self.base(i, m, verdict, value=value, expected=exp.value, ratio=round(ratio, 4),
                          expectation_basis=exp.basis, warn_below=band.warn, fail_below=band.fail,
                          higher_is_better=exp.higher_is_better, **extra)
        if verdict != "PASS":
            check.cause, check.next_step = self.diagnose(m, value, exp, check)
            if verdict == "FAIL" and check.cause.startswith("reverse-traffic asymmetry"):
                check.verdict = "WARN"  # the link reaches its rate one way: not a link failure
        return self.add(check)

    # -- all-reduce -----------------------------------------------------------------------------------------
    def allreduce(self, members: list[tuple[int, Measurement]]) -> None:
        i, best = max(members, key=lambda im: im[1].busbw_gbps or 0.0)
        exp = allreduce_expectation(best, self.facts)
        subject = subject_of(best)
        if isinstance(exp, NoExpectation):
            self.add(Check(subject=subject, test="all_reduce", verdict="SKIP", category="collective",
                           cause=exp.reason, measurement_index=i, size_bytes=best.size_bytes, unit="GB/s",
                           path_class=best.path_class))
            return
        if best.busbw_gbps is None:
            self.add(Check(subject=subject, test="all_reduce", verdict="SKIP", category="collective",
                           cause="no busbw recorded", measurement_index=i))
            return
        band = self.band("all_reduce", f"gpu{(best.ranks or [0])[0]}")
        if band.skip:
            self.add(Check(subject=subject, test="all_reduce", verdict="SKIP", category="collective",
                           value=best.busbw_gbps, unit="GB/s", cause=f"not judged ({band.origin} says skip)"))
            return
        shadow = Measurement(probe="all_reduce", status="ok", unit="GB/s", direction="collective", engine=best.engine,
                             ranks=best.ranks, size_bytes=best.size_bytes, path_class=best.path_class,
                             notes=best.notes)
        check = self.judge_value(i, shadow, best.busbw_gbps, exp, band,
                                 detail=f"peak busbw over {len(members)} message sizes, at "
                                        f"{best.size_bytes or 0} B per rank ({best.value:.1f} µs)")
        check.test = "all_reduce"

    # -- run -------------------------------------------------------------------------------------------------
    def run_checks(self) -> None:
        r = self.results
        if r.status in ("interrupted", "running"):
            self.add(Check(subject="run", test="run", verdict="WARN", category="run",
                           cause=f"the run is {r.status}: not every probe ran", next_step="run the probes again"))
        cuda = r.cuda_skip_reason()
        for p in r.problems:
            if cuda is not None and p == f"{CUDA_SKIPPED}{cuda}":
                continue
            self.add(Check(subject="run", test="run", verdict="WARN", category="run", cause=p,
                           next_step="fix the problem and run the probes again"))
        if not r.devices:
            self.add(Check(subject="run", test="run", verdict="WARN", category="run",
                           cause="no device facts (NVML) in the results file: links cannot be checked and "
                                 "most expectations cannot be derived",
                           next_step="run on a machine where NVML works (the NVIDIA driver is loaded)"))
        disable = self.env.get("NCCL_P2P_DISABLE", "")
        if disable not in ("", "0") and any(len(m.ranks or []) > 1 for m in r.measurements if m.probe == "all_reduce"):
            self.add(Check(subject="run", test="environment", verdict="WARN", category="run",
                           cause=f"NCCL_P2P_DISABLE={disable} in the environment: the all-reduce ran without "
                                 "peer-to-peer (through host memory)",
                           next_step="unset NCCL_P2P_DISABLE to qualify the links NCCL will use"))

    # -- outliers --------------------------------------------------------------------------------------------
    def outliers(self) -> list[Outlier]:
        by_test: dict[str, list[Check]] = {}
        for c in self.checks:
            if c.category in ("bandwidth", "latency", "collective") and c.value is not None and c.value > 0 and (
                    c.verdict in ("PASS", "WARN", "FAIL", "INFO")) and c.measurement_index is not None:
                by_test.setdefault(c.test, []).append(c)
        found: list[tuple[float, Check, float, int, float]] = []
        for checks in by_test.values():
            if len(checks) < 3:
                continue
            values = [(c, c.value) for c in checks if c.value is not None]
            med = statistics.median(v for _, v in values)
            for c, v in values:
                rel = v / med if c.higher_is_better else med / v
                if rel < self.t.outlier_below_median:
                    found.append((rel, c, med, len(checks), v))
        found.sort(key=lambda x: x[0])
        out = []
        for rank, (rel, c, med, n, value) in enumerate(found, 1):
            out.append(Outlier(rank=rank, test=c.test, subject=c.subject, value=value, unit=c.unit or "",
                               median=round(med, 4), ratio_to_median=round(rel, 4), compared_with=n,
                               path_class=c.path_class))
            text = (f"outlier: {rel:.0%} of the median of {n} subjects ({med:.4g} {c.unit}) for the same test: "
                    "a weaker link, slot, riser or NUMA-remote path")
            mark_weaker(c, text, "compare this GPU's or pair's link state and NUMA placement with the others "
                                 "('nvidia-smi topo -m', 'nvidia-smi -q -d PCIE'); swap slots to see if it follows")
        return out


def judge(results: Results, thresholds: Thresholds | None = None, *, source: str | None = None,
          environment: Mapping[str, str] | None = None) -> Qualification:
    """Judge every measurement and link-health fact of ``results``; never raises for what it finds.

    ``source`` names the results file (shown in the outputs); ``environment`` (the variables the probes
    ran with, when they ran in this process) lets the diagnosis name NCCL settings such as NCCL_P2P_DISABLE.
    """
    t = thresholds or Thresholds()
    j = _Judge(results, t, environment)
    j.measurements()
    j.health()
    j.run_checks()
    outliers = j.outliers()
    verdict = worst([c.verdict for c in j.checks])
    counts = {v: sum(1 for c in j.checks if c.verdict == v) for v in ("PASS", "WARN", "FAIL", "SKIP", "INFO")}
    q = Qualification(
        verdict=verdict, exit_code=exit_code(verdict), checks=j.checks, outliers=outliers, counts=counts,
        host=results.run.hostname, gpus=[f"gpu{d.index} {d.name}" for d in results.devices],
        run_started=results.run.started_utc, results_source=source, thresholds_source=t.source,
        thresholds=t.summary(), gpuprobe_version=__version__, judged_utc=now_utc(),
        notes=[f"virtual machine: {results.run.virtual_machine}"] if results.run.virtual_machine else [],
    )
    references.apply(q, results)
    peer_outliers(q)
    q.recount()
    return q
