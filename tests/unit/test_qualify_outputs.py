"""Thresholds files and the machine outputs of a qualification (JSON, JUnit XML, Prometheus textfile).

Inputs are the real H100 capture or DERIVED cases built from it (qualify_derived.py).
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import qualify_derived as D

from gpuprobe.qualify import ThresholdsError, judge, load_thresholds, thresholds_from_data
from gpuprobe.qualify.outputs import to_json, to_junit, to_prometheus
from gpuprobe.results.qualification import qualification_from_data


def check(q, test, subject=None):
    (c,) = [c for c in q.checks if c.test == test and (subject is None or c.subject == subject)]
    return c


# -- thresholds ------------------------------------------------------------------------------------------------
TOML = """
warn = 0.85
fail = 0.75

[tests.host_to_device_memcpy_ce]
warn = 0.95
fail = 0.90

[tests."device_to_host_*"]
skip = true

[gpus."H100"]
warn = 0.80

[gpus."H100".tests.device_local_copy]
expected = 2000
"""


def test_thresholds_file_overrides_per_test_glob_and_gpu_model(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(TOML)
    t = load_thresholds(path)
    r = D.lowered("host_to_device_memcpy_ce", 0.92)  # DERIVED: 50.6 of 54.8 GB/s, ratio 0.92
    assert check(judge(r), "host_to_device_memcpy_ce").verdict == "PASS"
    q = judge(r, t)
    c = check(q, "host_to_device_memcpy_ce")
    assert c.verdict == "WARN" and (c.warn_below, c.fail_below) == (0.95, 0.90)
    assert check(q, "device_to_host_memcpy_ce").verdict == "SKIP"  # glob
    local = check(q, "device_local_copy")  # GPU model + test: absolute expectation 2000 GB/s
    assert local.expected == 2000 and local.verdict == "FAIL" and "thresholds file" in local.expectation_basis
    assert "derived: 1424" in local.expectation_basis
    sm = check(q, "device_to_host_memcpy_sm")  # skipped by the glob too
    assert sm.verdict == "SKIP"
    h2d_sm = check(q, "host_to_device_memcpy_sm")  # the GPU model's band (warn 0.80) applies
    assert h2d_sm.warn_below == 0.80 and h2d_sm.fail_below == 0.75
    assert q.thresholds_source == str(path)


def test_thresholds_json_and_health_limits(tmp_path: Path) -> None:
    path = tmp_path / "limits.json"
    path.write_text(json.dumps({"replay_fail": 3, "gpus": {"A100": {"warn": 0.99}}}))
    t = load_thresholds(path)
    q = judge(D.with_device("replay counter 5", pcie_replay_counter=5), t)
    assert check(q, "pcie_replay").verdict == "FAIL"  # 5 > 3
    assert check(q, "host_to_device_memcpy_ce").warn_below == 0.85  # the A100 rule does not match an H100


def test_thresholds_nvlinks_expected_is_enforced() -> None:
    r = D.multi_gpu()
    r.devices[5].nvlinks = r.devices[5].nvlinks[:12]  # DERIVED: gpu5 reports only 12 links
    q = judge(r, thresholds_from_data({"nvlinks_expected": 18}))
    c = check(q, "nvlink", "gpu5")
    assert c.verdict == "FAIL" and "18 required" in c.cause


@pytest.mark.parametrize("data", [{"wran": 0.9}, {"warn": "high"}, {"tests": {"x": {"expected": -1}}},
                                  {"gpus": {"(": {}}}, {"warn": 50}])
def test_bad_thresholds_are_one_clear_error(data) -> None:
    with pytest.raises(ThresholdsError):
        thresholds_from_data(data)


def test_bad_thresholds_file_syntax(tmp_path: Path) -> None:
    bad = tmp_path / "t.toml"
    bad.write_text("warn = = 1")
    with pytest.raises(ThresholdsError, match="not valid TOML"):
        load_thresholds(bad)
    with pytest.raises(ThresholdsError, match="does not exist"):
        load_thresholds(tmp_path / "missing.json")


# -- JSON ------------------------------------------------------------------------------------------------------
def test_json_round_trips_through_the_contract() -> None:
    q = judge(D.nvlink_down(D.multi_gpu(), 3))
    data = json.loads(to_json(q))
    assert data["kind"] == "gpuprobe.qualification" and data["schema_version"] == 2
    back = qualification_from_data(data)
    assert back == q


# -- JUnit XML -------------------------------------------------------------------------------------------------
def test_junit_counts_and_verdicts() -> None:
    r = D.lowered("host_to_device_memcpy_ce", 0.70)
    r.devices[0].persistence_mode = False  # DERIVED: persistence mode off (WARN)
    q = judge(r)
    root = ET.fromstring(to_junit(q))
    cases = root.findall(".//testcase")
    assert len(cases) == len(q.checks) == int(root.get("tests"))
    assert int(root.get("failures")) == q.counts["FAIL"] == len(root.findall(".//testcase/failure")) == 1
    assert int(root.get("skipped")) == q.counts["SKIP"] == len(root.findall(".//testcase/skipped"))
    assert sum(int(s.get("tests")) for s in root.findall("testsuite")) == len(q.checks)
    failure = root.find(".//testcase/failure")
    assert "virtual machine" in failure.get("message") and "expected 54.81 GB/s" in failure.text
    warn = next(c for c in cases if c.get("classname") == "gpuprobe.health.persistence_mode")
    assert warn.find("system-out").text.startswith("WARN") and warn.find("failure") is None
    names = {(c.get("classname"), c.get("name")) for c in cases}
    assert ("gpuprobe.bandwidth.host_to_device_memcpy_ce", "host->gpu0") in names


def test_junit_escapes_text_from_results_files() -> None:
    r = D.mismatch()
    D.find(r, "device_to_host_memcpy_ce").reason = 'bad <data> & "quotes" ]]>'
    text = to_junit(judge(r))
    root = ET.fromstring(text)  # parses: every special character was escaped
    assert 'bad <data> & "quotes" ]]>' in root.find(".//failure").get("message")


# -- Prometheus ------------------------------------------------------------------------------------------------
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*,?)?\}})? (\S+)(?: (-?\d+))?$")
HELP = re.compile(rf"^# HELP ({NAME}) (.*)$")
TYPE = re.compile(rf"^# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)$")


def parse_exposition(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A strict reader of the Prometheus text format: every line must be HELP, TYPE or a sample; TYPE comes
    before a metric's samples and at most once; a metric's samples are contiguous; no series twice."""
    assert text.endswith("\n") and "\n\n" not in text
    metrics: dict[str, list[tuple[dict[str, str], float]]] = {}
    typed, helped, closed = set(), set(), set()
    current = None
    for line in text.splitlines():
        if m := HELP.match(line):
            assert m.group(1) not in helped, line
            helped.add(m.group(1))
            continue
        if m := TYPE.match(line):
            name = m.group(1)
            assert name not in typed and name not in metrics, line
            typed.add(name)
            continue
        assert not line.startswith("#"), line
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels_text, value = m.group(1), m.group(2) or "", m.group(3)
        assert name in typed, f"sample before its TYPE: {line}"
        if name != current:
            assert name not in closed, f"samples of {name} are not contiguous"
            if current:
                closed.add(current)
            current = name
        labels = {}
        for lm in re.finditer(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels_text):
            raw = lm.group(2)
            labels[lm.group(1)] = raw.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        number = float(value) if value not in ("+Inf", "-Inf", "NaN") else float(value.replace("Inf", "inf"))
        assert not math.isnan(number) or value == "NaN"
        series = metrics.setdefault(name, [])
        assert labels not in [s[0] for s in series], f"duplicate series {line}"
        series.append((labels, number))
    return metrics


def test_prometheus_textfile_is_valid_exposition_format() -> None:
    q = judge(D.slow_pair(D.multi_gpu(), 2, 5, 300.0))
    metrics = parse_exposition(to_prometheus(q))
    assert metrics["gpuprobe_verdict"] == [({}, 1.0)]
    bw = {(lab["test"], lab["src"], lab["dst"]): v for lab, v in metrics["gpuprobe_bandwidth_gbps"]}
    assert bw[("device_to_device_memcpy_read_ce", "gpu2", "gpu5")] == 300.0
    assert bw[("host_to_device_memcpy_ce", "host", "gpu0")] == pytest.approx(55.03, abs=0.01)
    ratios = {(lab["test"], lab["subject"]): v for lab, v in metrics["gpuprobe_check_ratio"]}
    assert ratios[("device_to_device_memcpy_read_ce", "gpu2->gpu5")] == pytest.approx(300 / 396, abs=1e-3)
    lat = {lab["test"]: v for lab, v in metrics["gpuprobe_latency_seconds"]}
    assert lat["host_device_latency_sm"] == pytest.approx(1.187e-6, rel=1e-2)
    assert metrics["gpuprobe_outlier_ratio_to_median"][0][0]["subject"] == "gpu2->gpu5"
    assert metrics["gpuprobe_allreduce_busbw_gbps"][0][1] == 365.0


def test_prometheus_escapes_label_values() -> None:
    r = D.real()
    r.run.hostname = 'node"7\\a\nb'  # DERIVED: a host name with characters that must be escaped
    metrics = parse_exposition(to_prometheus(judge(r)))
    assert metrics["gpuprobe_info"][0][0]["host"] == 'node"7\\a\nb'
    assert metrics["gpuprobe_verdict"] == [({}, 0.0)]


@pytest.mark.parametrize("bad", [
    'm{a="x"} 1\n',                                   # sample before its TYPE
    '# TYPE m gauge\nm{a="x"y"} 1\n',                 # unescaped quote
    '# TYPE m gauge\nm{a="x"} 1\nm{a="x"} 2\n',       # duplicate series
    '# TYPE m gauge\nm{a="x"} one\n',                 # not a number
    '# TYPE m gauge\n# TYPE n gauge\nm 1\nn 1\nm{a="y"} 2\n',  # samples of m not contiguous
    '# TYPE 1m gauge\n1m 1\n',                        # bad metric name
])
def test_the_exposition_checker_is_strict(bad: str) -> None:
    with pytest.raises((AssertionError, ValueError)):
        parse_exposition(bad)


CLUSTER = Path(__file__).resolve().parents[1] / "data" / "gloo" / "cluster-2nodes-srun-cpu.json"


def _cluster_qualification():
    from gpuprobe.qualify.cluster import add_cluster
    from gpuprobe.results import load_results

    res = load_results(CLUSTER)
    q = judge(res)
    assert res.cluster is not None
    add_cluster(q, res.cluster)
    assert q.cluster is not None
    return q


def test_cluster_nodes_and_weak_links_in_junit_and_prometheus() -> None:
    """A real two-node cluster file (gloo): JUnit gets a cluster suite with one testcase per node and per link found
    worse than the median (its figure and the median in the text); Prometheus a drain gauge per node and the
    ratio to the median of each finding; a node marked for draining becomes a failure and a 1."""
    q = _cluster_qualification()
    cq = q.cluster
    root = ET.fromstring(to_junit(q))
    (suite,) = [s for s in root if s.get("name") == "gpuprobe.qualify.cluster"]
    links = sorted({f.subject for f in cq.findings if "->" in f.subject})
    assert [c.get("name") for c in suite.findall("testcase")] == [*cq.nodes, *links]
    assert int(root.get("tests")) == len(q.checks) + len(cq.nodes) + len(links)
    for case in suite.findall("testcase"):
        text = case.find("system-out").text
        for f in (f for f in cq.findings if f.subject == case.get("name")):
            assert f.test in text and f"{f.ratio_to_median:.2f} of the median" in text
    metrics = parse_exposition(to_prometheus(q))
    assert {lab["node"]: v for lab, v in metrics["gpuprobe_cluster_node_drain"]} == {n: 0.0 for n in cq.nodes}
    ratios = {(lab["subject"], lab["test"]): v for lab, v in metrics["gpuprobe_cluster_ratio_to_median"]}
    assert ratios == {(f.subject, f.test): f.ratio_to_median for f in cq.findings if f.ratio_to_median is not None}
    cq.drain = [cq.nodes[1]]  # DERIVED: the same judgement with node1 to be drained
    root = ET.fromstring(to_junit(q))
    (suite,) = [s for s in root if s.get("name") == "gpuprobe.qualify.cluster"]
    failed = [c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None]
    assert failed == [cq.nodes[1]] and suite.get("failures") == "1"
    drain = {lab["node"]: v for lab, v in parse_exposition(to_prometheus(q))["gpuprobe_cluster_node_drain"]}
    assert drain == {cq.nodes[0]: 0.0, cq.nodes[1]: 1.0}
