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
QUALIFICATION_SCHEMA_VERSION = 2
"""Version 2 added the level, the reference matched, the NVML health timeline, the standard level's repeated
runs, the burn-in figures, confirmation of failing figures and peer outliers; version 1 files still load
(every new field has a default)."""

Verdict = Literal["PASS", "WARN", "FAIL", "SKIP", "INFO"]
Overall = Literal["PASS", "WARN", "FAIL"]
"""A qualification's verdict: its worst check's, SKIP and INFO counting as PASS."""
_BY_LEVEL: tuple[Overall, Overall, Overall] = ("PASS", "WARN", "FAIL")
Category = Literal["bandwidth", "latency", "collective", "health", "data", "run", "stability", "burn-in"]
Level = Literal["input", "single", "quick", "standard", "burn-in"]

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
    confirmed: bool | None = None
    """For a figure below its fail band: True when measured again and still failing ("confirmed"), False when
    the second measurement passed (the check is then judged on it and says so), None when not re-measured."""
    reference: float | None = None
    """The figure of the matched reference system for the same test (``Qualification.reference``)."""
    line_rate: float | None = None
    """The theoretical rate of the link (GB/s per direction), where one is known."""


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
    best: float | None = None
    """The best figure of its peers (same test, same link class); set for outliers against the best."""
    ratio_to_best: float | None = None
    """value / best (bandwidth) or best / value (latency): below 0.90 names the GPU or pair."""
    basis: str = "median"
    """``median`` (far below the median of the test) or ``best`` (≥10 % below the best peer on the same link
    class)."""


@dataclass
class ReferenceMatch:
    """The shipped reference system closest to the judged one (``gpuprobe/data/references``)."""

    id: str
    title: str
    source: str
    """Where the figures come from: a capture (tool, machine, date) or a published page (URL, table)."""
    why: str
    """How it was matched (GPU name, count, link classes)."""
    figures: dict[str, float] = field(default_factory=dict)
    """test key -> figure (GB/s, µs or ns as the test's unit)."""


@dataclass
class TimelineDevice:
    """Fixed facts of one sampled GPU."""

    index: int
    name: str | None = None
    sm_clock_max_mhz: int | None = None
    mem_clock_max_mhz: int | None = None
    power_limit_w: float | None = None


@dataclass
class HealthSample:
    """One NVML reading of one GPU (None where NVML did not answer)."""

    t_s: float
    """Seconds since the sampler started."""
    gpu: int
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    power_w: float | None = None
    temperature_c: int | None = None
    util_pct: int | None = None
    clocks_event_reasons: int | None = None
    """NVML's bitmask (``nvmlDeviceGetCurrentClocksEventReasons``)."""
    pcie_replay: int | None = None
    ecc_corrected: int | None = None
    """Volatile corrected ECC errors (since the driver loaded)."""
    ecc_uncorrected: int | None = None
    """Volatile uncorrected ECC errors."""
    remapped_rows_uncorrectable: int | None = None
    remap_pending: bool | None = None
    remap_failed: bool | None = None
    retired_pages: int | None = None
    retired_pending: bool | None = None


@dataclass
class XidEvent:
    t_s: float
    gpu: int
    xid: int


@dataclass
class Phase:
    """A named stretch of the run (``probes run 1``, ``matmul alone``, ``load``); ``loaded`` phases keep the
    GPUs busy, so clocks are judged in them."""

    name: str
    start_s: float
    end_s: float | None = None
    loaded: bool = False


@dataclass
class Timeline:
    """What the NVML sampler recorded during a level (about once a second per GPU)."""

    interval_s: float = 1.0
    devices: list[TimelineDevice] = field(default_factory=list)
    samples: list[HealthSample] = field(default_factory=list)
    xid_events: list[XidEvent] = field(default_factory=list)
    xid_supported: bool = False
    xid_note: str | None = None
    """Why XID events could not be watched (NVML event sets unsupported here, ...)."""
    phases: list[Phase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """NVML queries that were unavailable, sampler problems."""
    constructed: bool = False
    """True for a constructed test sequence (not a measurement)."""


@dataclass
class MatmulFigure:
    gpu: int
    alone_tflops: float | None = None
    under_load_tflops: float | None = None
    ratio: float | None = None
    """under load / alone; target >= ``BurnIn.target_ratio``."""


@dataclass
class BurnIn:
    """The burn-in level's own figures."""

    duration_s: float
    """The sustained-load time asked for."""
    ran_s: float | None = None
    target_ratio: float = 0.90
    matmul: list[MatmulFigure] = field(default_factory=list)
    copies_gbps: dict[str, float] = field(default_factory=dict)
    """Mean rate of the sustained copies per GPU (``gpu0``: device-local, GB/s)."""
    allreduce_busbw_gbps: float | None = None
    iterations: int = 0
    backend: str | None = None
    """``torch`` or ``simulated``."""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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
    level: Level = "input"
    """How the figures were obtained: a results file judged as it is (``input``), the probes run once
    (``single``), or the ``quick``, ``standard`` or ``burn-in`` level."""
    reference: ReferenceMatch | None = None
    reference_note: str | None = None
    """Why no reference was matched (or what differs from the one matched)."""
    timeline: Timeline | None = None
    burn_in: BurnIn | None = None
    cluster: ClusterQualification | None = None
    """For a cluster results file: every node against the cluster median and the links between nodes."""
    kind: str = QUALIFICATION_KIND
    schema_version: int = QUALIFICATION_SCHEMA_VERSION

    def recount(self) -> None:
        """Recompute ``counts``, ``verdict`` and ``exit_code`` after checks were added or changed."""
        self.counts = {v: sum(1 for c in self.checks if c.verdict == v) for v in ("PASS", "WARN", "FAIL", "SKIP",
                                                                                  "INFO")}
        self.verdict = worst([c.verdict for c in self.checks])
        self.exit_code = exit_code(self.verdict)

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
