"""``gpuprobe qualify`` in-process: verdicts and exit codes on the real H100 capture and on DERIVED degraded
inputs (built from the real capture by tests/unit/qualify_derived.py, each change named there), the files it
writes, and the no-GPU error."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gpuprobe.cli.app import main
from gpuprobe.results import save_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import qualify_derived as D


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps tables at 80 columns when not at a terminal


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def saved(tmp_path: Path, results, name: str = "derived.json") -> str:
    path = tmp_path / name
    save_results(results, path)
    return str(path)


def test_help_documents_exit_codes(capsys) -> None:
    code, out, _ = run(capsys, "qualify", "--help")
    assert code == 0 and "10 WARN" in out and "11 FAIL" in out and "--thresholds" in out


def test_real_capture_passes_with_expectations_shown(capsys, h100_results_path: Path) -> None:
    code, out, _ = run(capsys, "qualify", "--input", str(h100_results_path))
    assert code == 0
    assert "verdict: PASS" in out and "exit code 0" in out
    assert "54.81 GB/s" in out and "PCIe Gen5 x16" in out  # the expectation and how it was derived


def test_real_capture_json(capsys, h100_results_path: Path) -> None:
    code, out, err = run(capsys, "qualify", "--input", str(h100_results_path), "--json")
    assert code == 0
    data = json.loads(out)  # stdout is exactly one JSON document
    assert data["kind"] == "gpuprobe.qualification" and data["verdict"] == "PASS" and data["exit_code"] == 0
    assert "verdict: PASS" in err


@pytest.mark.parametrize(("make", "code", "test", "words"), [
    (lambda: D.lowered("host_to_device_memcpy_ce", 0.70), 11, "host_to_device_memcpy_ce", ["virtual machine"]),
    (lambda: D.lowered("host_to_device_memcpy_ce", 0.80), 10, "host_to_device_memcpy_ce", ["virtual machine"]),
    (lambda: D.downtrained(gen=4, figures=0.5), 11, "pcie_link", ["downtrained slot", "Gen4"]),
    (lambda: D.downtrained(width=8, figures=0.5), 11, "host_to_device_memcpy_ce", ["downtrained slot", "x8"]),
    (lambda: D.downtrained(gen=4), 0, "pcie_link", ["downclocked at idle"]),
    (lambda: D.mismatch(), 11, "device_to_host_memcpy_ce", ["did not verify"]),
    (lambda: D.with_device("replays", pcie_replay_counter=5), 10, "pcie_replay", ["replays"]),
    (lambda: D.with_device("ECC", ecc_errors_uncorrected=2), 11, "ecc", ["uncorrected ECC"]),
    (lambda: D.multi_gpu(n=2, path="PXB", cuda_peer=False), 11, "peer_access", ["ACS", "IOMMU", "VM"]),
    (lambda: D.nvlink_down(D.multi_gpu(), 3), 11, "nvlink", ["NVLink down", "fabric"]),
    (lambda: D.slow_pair(D.multi_gpu(), 2, 5, 300.0), 10, "device_to_device_memcpy_read_ce", ["NVLink"]),
])
def test_derived_cases_give_verdict_cause_and_exit_code(capsys, tmp_path: Path, make, code, test, words) -> None:
    path = saved(tmp_path, make())
    got, out, err = run(capsys, "qualify", "--input", path, "--json")
    assert got == code, err
    q = json.loads(out)
    assert q["exit_code"] == code
    verdict = {0: "PASS", 10: "WARN", 11: "FAIL"}[code]
    assert q["verdict"] == verdict
    explained = [c for c in q["checks"] if c["test"] == test and all(w in (c["cause"] or "") for w in words)]
    assert explained, [c["cause"] for c in q["checks"] if c["test"] == test]
    if code:
        assert all(c["next_step"] for c in explained)


def test_terminal_names_cause_next_step_and_outliers(capsys, tmp_path: Path) -> None:
    path = saved(tmp_path, D.slow_pair(D.multi_gpu(), 2, 5, 300.0))
    code, out, _ = run(capsys, "qualify", "--input", path)
    assert code == 10
    assert "outliers" in out and "gpu2->gpu5" in out and "nvidia-smi nvlink" in out
    assert "verdict: WARN" in out


def test_writes_junit_and_prometheus(capsys, tmp_path: Path) -> None:
    path = saved(tmp_path, D.lowered("host_to_device_memcpy_ce", 0.70))
    junit, prom = tmp_path / "ci" / "q.xml", tmp_path / "textfile" / "gpuprobe.prom"
    code, _, err = run(capsys, "qualify", "--input", path, "--junit", str(junit), "--prometheus", str(prom))
    assert code == 11
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "1"
    assert "gpuprobe_verdict 2" in prom.read_text().splitlines()
    assert "JUnit XML written" in err and "Prometheus textfile written" in err
    assert not list(prom.parent.glob(".*.tmp"))  # written atomically, no leftovers


def test_thresholds_file_changes_the_exit_code(capsys, tmp_path: Path) -> None:
    path = saved(tmp_path, D.lowered("host_to_device_memcpy_ce", 0.80))  # WARN with the defaults
    limits = tmp_path / "limits.toml"
    limits.write_text("[tests.host_to_device_memcpy_ce]\nwarn = 0.7\nfail = 0.6\n")
    assert run(capsys, "qualify", "--input", path)[0] == 10
    code, out, _ = run(capsys, "qualify", "--input", path, "--thresholds", str(limits), "--json")
    assert code == 0 and json.loads(out)["thresholds_source"] == str(limits)


def test_bad_thresholds_file_is_one_error_line(capsys, tmp_path: Path, h100_results_path: Path) -> None:
    limits = tmp_path / "limits.json"
    limits.write_text('{"wran": 0.9}')
    code, _, err = run(capsys, "qualify", "--input", str(h100_results_path), "--thresholds", str(limits))
    assert code == 1 and err.count("Error:") == 1 and "wran" in err and "Traceback" not in err


def test_bad_results_file_is_one_error_line(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "r.json"
    bad.write_text("{}")
    code, _, err = run(capsys, "qualify", "--input", str(bad))
    assert code == 1 and err.count("Error:") == 1


def test_no_gpu_and_no_input_is_the_probe_error(capsys) -> None:
    code, _, err = run(capsys, "qualify")
    _, _, probe_err = run(capsys, "probe")
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert code == 3 and len(errors) == 1 and "Traceback" not in err
    assert errors == [line for line in probe_err.splitlines() if line.startswith("Error:")]
    assert "--input" in err
