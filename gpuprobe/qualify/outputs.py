"""A Qualification as text for machines: JSON, JUnit XML (CI systems), Prometheus textfile (node_exporter).

All three are pure functions of the Qualification; none reads or writes files.

JUnit XML: one ``<testsuite>`` per category (bandwidth, latency, collective, health, data, run), one
``<testcase>`` per check, named by its subject (``host->gpu0``, ``gpu0,gpu1``) with the test key as
classname (``gpuprobe.bandwidth.host_to_device_memcpy_ce``), so names stay stable from run to run and CI
history lines them up. FAIL is a ``<failure>`` (message: the cause; text: figure, expectation, basis,
next step). WARN is a passing testcase whose ``<system-out>`` starts with ``WARN``: CI systems show it
without failing the pipeline (the exit code 10 decides that). SKIP is ``<skipped>`` with the reason. Every
testcase that ran carries its one-line figure, expectation and basis in ``<system-out>`` (PASS and INFO too).
Only elements of the common JUnit schema are used (properties on the testsuite, not on testcases). A cluster
file adds a ``gpuprobe.qualify.cluster`` suite: one testcase per node (``<failure>`` for a node to drain, its
findings in the text) and one per node-to-node link found worse than the cluster median.

Prometheus: the text exposition format (HELP and TYPE per metric, label values escaped), for the
node_exporter textfile collector. Latencies are in seconds (Prometheus base unit), bandwidth in GB/s as in
the metric name; ``gpuprobe_verdict`` is 0 PASS, 1 WARN, 2 FAIL. A cluster file adds
``gpuprobe_cluster_verdict``, ``gpuprobe_cluster_node_drain{node}`` (1: take the node out of service) and
``gpuprobe_cluster_ratio_to_median{subject,test}`` for every node or link worse than the cluster median.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import xml.etree.ElementTree as ET
from typing import Any

from gpuprobe.results.qualification import Check, ClusterFinding, ClusterQualification, Qualification, severity
from gpuprobe.results.serde import to_data

CATEGORIES = ("bandwidth", "latency", "collective", "health", "data", "run")


def to_json(q: Qualification) -> str:
    """The qualification document (``kind: gpuprobe.qualification``) as indented JSON text."""
    return json.dumps(to_data(q), indent=1, allow_nan=False) + "\n"


def _fmt(value: float | None, unit: str | None = None) -> str:
    if value is None:
        return "—"
    text = f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return f"{text} {unit}" if unit else text


def describe(c: Check) -> str:
    """One line: figure, expectation, ratio and basis."""
    parts = [f"{c.verdict} {c.test} {c.subject}: {_fmt(c.value, c.unit)}"]
    if c.expected is not None:
        parts.append(f"expected {_fmt(c.expected, c.unit)}")
    if c.ratio is not None:
        parts.append(f"ratio {c.ratio:.2f} (WARN < {c.warn_below}, FAIL < {c.fail_below})"
                     if c.warn_below is not None else f"ratio {c.ratio:.2f}")
    line = ", ".join(parts)
    if c.expectation_basis:
        line += f" [{c.expectation_basis}]"
    return line


def to_junit(q: Qualification) -> str:
    """JUnit XML text: one testcase per check (see the module docstring for how verdicts map)."""
    cluster = _cluster_cases(q.cluster) if q.cluster is not None else []
    root = ET.Element("testsuites", name="gpuprobe qualify", tests=str(len(q.checks) + len(cluster)),
                      failures=str(q.counts.get("FAIL", 0) + sum(drain for _, _, drain in cluster)), errors="0",
                      skipped=str(q.counts.get("SKIP", 0)))
    for cat in CATEGORIES:
        checks = [c for c in q.checks if c.category == cat]
        if not checks:
            continue
        suite = ET.SubElement(root, "testsuite", name=f"gpuprobe.qualify.{cat}", tests=str(len(checks)),
                              failures=str(sum(c.verdict == "FAIL" for c in checks)), errors="0",
                              skipped=str(sum(c.verdict == "SKIP" for c in checks)), time="0",
                              hostname=q.host or "unknown", timestamp=(q.judged_utc or "")[:19])
        props = ET.SubElement(suite, "properties")
        for name, value in (("verdict", q.verdict), ("host", q.host or ""), ("results", q.results_source or ""),
                            ("thresholds", q.thresholds_source), ("gpus", "; ".join(q.gpus))):
            ET.SubElement(props, "property", name=name, value=value)
        for c in checks:
            case = ET.SubElement(suite, "testcase", classname=f"gpuprobe.{cat}.{c.test}", name=c.subject, time="0")
            body = describe(c)
            if c.cause:
                body += f"\ncause: {c.cause}"
            if c.next_step:
                body += f"\nnext step: {c.next_step}"
            if c.detail:
                body += f"\ndetail: {c.detail}"
            if c.verdict == "FAIL":
                failure = ET.SubElement(case, "failure", message=(c.cause or "below the FAIL threshold"), type="FAIL")
                failure.text = body
            elif c.verdict == "SKIP":
                ET.SubElement(case, "skipped", message=c.cause or "not measured")
            if c.verdict != "SKIP":
                ET.SubElement(case, "system-out").text = body
    if q.cluster is not None:
        _junit_cluster(root, q, q.cluster, cluster)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _finding_line(f: ClusterFinding) -> str:
    figure = f" {_fmt(f.value, f.unit)} (cluster median {_fmt(f.median, f.unit)})" if f.value is not None else ""
    ratio = f", {f.ratio_to_median:.2f} of the median" if f.ratio_to_median is not None else ""
    return f"{f.verdict} {f.test} {f.subject}:{figure}{ratio}" + (f"; {f.reason}" if f.reason else "")


_Case = tuple[str, list[ClusterFinding], bool]


def _cluster_cases(c: ClusterQualification) -> list[_Case]:
    """(subject, its findings, drain it) for every node and every weak node-to-node link."""
    links = sorted({f.subject for f in c.findings if "->" in f.subject})
    cases = [(n, [f for f in c.findings if f.subject == n], n in c.drain) for n in c.nodes]
    return cases + [(link, [f for f in c.findings if f.subject == link], False) for link in links]


def _junit_cluster(root: ET.Element, q: Qualification, c: ClusterQualification, cases: list[_Case]) -> None:
    """One testcase per node (a failure when it is to be drained) and one per weak node-to-node link."""
    suite = ET.SubElement(root, "testsuite", name="gpuprobe.qualify.cluster", tests=str(len(cases)),
                          failures=str(sum(drain for _, _, drain in cases)), errors="0", skipped="0", time="0",
                          hostname=q.host or "unknown", timestamp=(q.judged_utc or "")[:19])
    props = ET.SubElement(suite, "properties")
    for name, value in (("verdict", c.verdict), ("nodes", " ".join(c.nodes)), ("drain", " ".join(c.drain)),
                        ("below_median", f"{c.below_median:g}")):
        ET.SubElement(props, "property", name=name, value=value)
    for subject, findings, drain in cases:
        kind = "link" if "->" in subject else "node"
        case = ET.SubElement(suite, "testcase", classname=f"gpuprobe.cluster.{kind}", name=subject, time="0")
        body = "\n".join(_finding_line(f) for f in findings) or f"PASS {kind} {subject}: within the cluster median"
        if drain:
            failure = ET.SubElement(case, "failure", message=f"drain {subject}: worse than the cluster median",
                                    type="FAIL")
            failure.text = body
        ET.SubElement(case, "system-out").text = body


# -- Prometheus ---------------------------------------------------------------------------------------------
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metrics:
    def __init__(self) -> None:
        self.order: list[str] = []
        self.meta: dict[str, tuple[str, str]] = {}
        self.samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}

    def declare(self, name: str, help_text: str, kind: str = "gauge") -> None:
        if name not in self.meta:
            self.order.append(name)
            self.meta[name] = (help_text, kind)
            self.samples[name] = {}

    def add(self, name: str, labels: dict[str, Any], value: float | None) -> None:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return
        key = tuple((k, str(v)) for k, v in labels.items() if v is not None)
        self.samples[name].setdefault(key, float(value))  # first figure wins on a duplicate series

    def text(self) -> str:
        lines = []
        for name in self.order:
            help_text, kind = self.meta[name]
            if not self.samples[name]:
                continue
            lines.append(f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in self.samples[name].items():
                lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{lab}}} {_num(value)}" if lab else f"{name} {_num(value)}")
        return "\n".join(lines) + "\n"


def to_prometheus(q: Qualification) -> str:
    """Prometheus text exposition format for node_exporter's textfile collector."""
    m = _Metrics()
    m.declare("gpuprobe_verdict", "Overall qualification verdict: 0 PASS, 1 WARN, 2 FAIL.")
    m.add("gpuprobe_verdict", {}, severity(q.verdict))
    m.declare("gpuprobe_checks", "Number of checks per verdict.")
    for verdict, n in sorted(q.counts.items()):
        m.add("gpuprobe_checks", {"verdict": verdict}, n)
    m.declare("gpuprobe_info", "Qualification metadata (always 1).")
    m.add("gpuprobe_info", {"host": q.host or "", "gpuprobe_version": q.gpuprobe_version or "",
                            "thresholds": q.thresholds_source, "results": q.results_source or ""}, 1)
    m.declare("gpuprobe_bandwidth_gbps", "Measured bandwidth in GB/s (1e9 bytes/s), median of the samples.")
    m.declare("gpuprobe_expected_bandwidth_gbps", "Expected bandwidth in GB/s derived from the link or device.")
    m.declare("gpuprobe_latency_seconds", "Measured latency in seconds, median of the samples.")
    m.declare("gpuprobe_expected_latency_seconds", "Expected (upper) latency in seconds.")
    m.declare("gpuprobe_allreduce_busbw_gbps", "Peak all-reduce bus bandwidth of a GPU group in GB/s.")
    m.declare("gpuprobe_check_ratio", "Figure relative to its expectation (1 = as expected, below 1 = worse).")
    m.declare("gpuprobe_check_verdict", "Verdict of one judged check: 0 PASS, 1 WARN, 2 FAIL.")
    m.declare("gpuprobe_outlier_ratio_to_median", "Outlier figure relative to the median of the same test.")
    for c in q.checks:
        labels = {"test": c.test, "src": c.src or "", "dst": c.dst or "", "subject": c.subject}
        if c.category == "bandwidth" and c.unit == "GB/s":
            m.add("gpuprobe_bandwidth_gbps", labels, c.value)
            m.add("gpuprobe_expected_bandwidth_gbps", labels, c.expected)
        elif c.category == "latency" and c.unit in ("us", "ns"):
            scale = 1e-6 if c.unit == "us" else 1e-9
            m.add("gpuprobe_latency_seconds", labels, c.value * scale if c.value is not None else None)
            m.add("gpuprobe_expected_latency_seconds", labels, c.expected * scale if c.expected is not None else None)
        elif c.category == "collective":
            m.add("gpuprobe_allreduce_busbw_gbps", {"test": c.test, "ranks": c.subject}, c.value)
        if c.verdict in ("PASS", "WARN", "FAIL"):
            vlabels = {"test": c.test, "subject": c.subject, "category": c.category}
            m.add("gpuprobe_check_verdict", vlabels, severity(c.verdict))
            m.add("gpuprobe_check_ratio", vlabels, c.ratio)
    for o in q.outliers:
        m.add("gpuprobe_outlier_ratio_to_median", {"test": o.test, "subject": o.subject, "rank": o.rank},
              o.ratio_to_median)
    if q.cluster is not None:
        cq = q.cluster
        m.declare("gpuprobe_cluster_verdict", "Cluster verdict (nodes and links against the median): 0 PASS, 1 WARN, "
                  "2 FAIL.")
        m.add("gpuprobe_cluster_verdict", {}, severity(cq.verdict))
        m.declare("gpuprobe_cluster_node_drain", "1 when the node is to be taken out of service, else 0.")
        for node in cq.nodes:
            m.add("gpuprobe_cluster_node_drain", {"node": node}, 1 if node in cq.drain else 0)
        m.declare("gpuprobe_cluster_ratio_to_median", "Figure of a node or link relative to the cluster median "
                  "(below 1 = worse).")
        for f in cq.findings:
            m.add("gpuprobe_cluster_ratio_to_median", {"subject": f.subject, "test": f.test}, f.ratio_to_median)
    m.declare("gpuprobe_qualify_timestamp_seconds", "Unix time the qualification was judged.")
    if q.judged_utc:
        with contextlib.suppress(ValueError):
            m.add("gpuprobe_qualify_timestamp_seconds", {}, dt.datetime.fromisoformat(q.judged_utc).timestamp())
    return m.text()
