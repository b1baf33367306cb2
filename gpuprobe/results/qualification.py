"""The qualification file: every measurement and link-health fact of a results file judged PASS/WARN/FAIL.

A qualification (``kind: "gpuprobe.qualification"``) is written by ``gpuprobe qualify --json`` and read by
reports. Each ``Check`` carries the figure, the expectation it was judged against and how that expectation
was derived, so a verdict can always be explained without the code that made it.

Verdicts:
  PASS  within the band (ratio >= warn threshold) or a health fact in order
  WARN  below the warn threshold, or a health fact worth fixing (persistence mode off, replays, ...)
  FAIL  below the fail threshold, data that did not verify, a probe that failed, a link that is down
  SKIP  not measured (waived probe, with its reason) or no expectation can be derived
  INFO  recorded, not judged (pageable copies, clocks read at idle, ...)
The overall verdict is the worst PASS/WARN/FAIL of the checks (SKIP and INFO count as PASS).

``ratio`` is 1.0 when the figure equals the expectation and below 1 when it is worse, for either kind of
figure: measured / expected for bandwidth, expected / measured for latency.

This module imports nothing from gpuprobe outside ``gpuprobe.results``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

QUALIFICATION_KIND = "gpuprobe.qualification"
QUALIFICATION_SCHEMA_VERSION = 1

Verdict = Literal["PASS", "WARN", "FAIL", "SKIP", "INFO"]
Overall = Literal["PASS", "WARN", "FAIL"]
"""A qualification's verdict: its worst check's, SKIP and INFO counting as PASS."""
_BY_LEVEL: tuple[Overall, Overall, Overall] = ("PASS", "WARN", "FAIL")
Category = Literal["bandwidth", "latency", "collective", "health", "data", "run"]

EXIT_PASS = 0
EXIT_WARN = 10
EXIT_FAIL = 11
"""Exit codes of ``gpuprobe qualify`` for each overall verdict (1, 2, 3 stay errors, as for every command)."""

_SEVERITY = {"PASS": 0, "SKIP": 0, "INFO": 0, "WARN": 1, "FAIL": 2}


def severity(verdict: str) -> int:
    """0 for PASS/SKIP/INFO, 1 for WARN, 2 for FAIL (the value of the ``gpuprobe_verdict`` gauge)."""
    return _SEVERITY[verdict]


def worst(verdicts: list[str]) -> Overall:
    """The overall verdict of several checks: FAIL if any failed, else WARN if any warned, else PASS."""
    return _BY_LEVEL[max((severity(v) for v in verdicts), default=0)]


def exit_code(verdict: str) -> int:
    return {"PASS": EXIT_PASS, "WARN": EXIT_WARN, "FAIL": EXIT_FAIL}.get(verdict, EXIT_PASS)


@dataclass
class Check:
    """One judged figure or fact."""

    subject: str
    """What was judged: ``host->gpu0``, ``gpu0->gpu1``, ``gpu0`` (a device fact or local copy),
    ``gpu0,gpu1`` (a pair or all-reduce group), ``run``."""
    test: str
    """Probe key (``host_to_device_memcpy_ce``, ``all_reduce``) or health key (``pcie_link``, ``pcie_replay``,
    ``nvlink``, ``peer_access``, ``ecc``, ``persistence_mode``, ``clocks``, ``run``)."""
    verdict: Verdict
    value: float | None = None
    unit: str | None = None
    expected: float | None = None
    ratio: float | None = None
    """1.0 = as expected; below 1 = worse (measured/expected for bandwidth, expected/measured for latency)."""
    expectation_basis: str | None = None
    """How ``expected`` was derived, in one line (link, efficiency, source of the figure)."""
    cause: str | None = None
    """The likely cause of a WARN/FAIL (or why a check was skipped)."""
    next_step: str | None = None
    """What to do next."""
    category: Category = "bandwidth"
    src: str | None = None
    dst: str | None = None
    path_class: str | None = None
    size_bytes: int | None = None
    warn_below: float | None = None
    """The band used: WARN below this ratio ..."""
    fail_below: float | None = None
    """... FAIL below this one."""
    higher_is_better: bool = True
    measurement_index: int | None = None
    """Index of the judged measurement in the results file's ``measurements`` (None for device facts)."""
    detail: str | None = None
    """Further facts shown with the check (link state, the reverse direction's figure, ...)."""


@dataclass
class Outlier:
    """A figure far below the median of the same test across GPUs or pairs (rank 1 = furthest below)."""

    rank: int
    test: str
    subject: str
    value: float
    unit: str
    median: float
    ratio_to_median: float
    """value / median for bandwidth, median / value for latency: below 1 = worse than the others."""
    compared_with: int
    """How many subjects (GPUs or pairs) the median is taken over."""
    path_class: str | None = None


@dataclass
class ClusterFinding:
    """A node or a node-to-node link of a cluster results file that is worse than the cluster's median."""

    subject: str
    """A node name, or ``a->b`` for a link (a sends, b receives)."""
    test: str
    """The figure: a probe key with its route, ``node_p2p_bandwidth``, ``node_p2p_latency``, or ``node``
    (missing or lost) and ``links`` (most of a node's links weak or failed)."""
    verdict: Verdict
    value: float | None = None
    unit: str | None = None
    median: float | None = None
    ratio_to_median: float | None = None
    """value / median for rates, median / value for times: below 1 = worse than the median."""
    reason: str | None = None


@dataclass
class ClusterQualification:
    """The cluster part of a qualification: nodes against the cluster median, weak links, the nodes to drain."""

    verdict: Overall
    nodes: list[str] = field(default_factory=list)
    findings: list[ClusterFinding] = field(default_factory=list)
    drain: list[str] = field(default_factory=list)
    """Nodes to take out of service (Slurm: ``scontrol update nodename=... state=drain``)."""
    below_median: float = 0.10
    """A figure this fraction (or more) worse than the cluster median names its node or link."""


@dataclass
class Qualification:
    """The judgement of one results file."""

    verdict: Overall
    exit_code: int
    checks: list[Check] = field(default_factory=list)
    outliers: list[Outlier] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    """Checks per verdict (PASS, WARN, FAIL, SKIP, INFO)."""
    host: str | None = None
    gpus: list[str] = field(default_factory=list)
    """``gpu0 NVIDIA H100 80GB HBM3``, one per device in the results file."""
    run_started: str | None = None
    results_source: str | None = None
    """The results file judged, or ``live run``."""
    thresholds_source: str = "defaults"
    """``defaults`` or the thresholds file that was applied."""
    thresholds: dict[str, Any] = field(default_factory=dict)
    """The default band and health limits used (per-test or per-GPU overrides are in each check's band)."""
    gpuprobe_version: str | None = None
    judged_utc: str | None = None
    notes: list[str] = field(default_factory=list)
    cluster: ClusterQualification | None = None
    """For a cluster results file: every node against the cluster median and the links between nodes."""
    kind: str = QUALIFICATION_KIND
    schema_version: int = QUALIFICATION_SCHEMA_VERSION

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == "FAIL"]

    def warned(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == "WARN"]


def qualification_from_data(data: Any, origin: str = "qualification") -> Qualification:
    """Build a Qualification from parsed JSON (checks kind and version; one ResultsFileError line if bad)."""
    from gpuprobe.results.io import document_from_data

    return document_from_data(Qualification, data, kind=QUALIFICATION_KIND,
                              schema_version=QUALIFICATION_SCHEMA_VERSION, what="qualification file",
                              origin=origin, hint="re-create it with 'gpuprobe qualify --json'")


def load_qualification(path: str | os.PathLike[str]) -> Qualification:
    """Load a file written from ``gpuprobe qualify --json`` (or ``outputs.to_json``)."""
    from gpuprobe.results.io import read_json

    return qualification_from_data(read_json(path, what="qualification file"), origin=str(path))
