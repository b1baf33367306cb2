"""``gpuprobe topo`` run in-process: exit codes, one-line errors, JSON/DOT output, snapshot and results inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pynvml
import pytest

from gpuprobe.cli.app import main
from gpuprobe.results import RunInfo, save_results
from gpuprobe.results.model import Measurement, Results, Stat
from gpuprobe.system.inventory import load_system

H100_SNAPSHOT = Path(__file__).parents[1] / "data" / "nvml-h100-2026-11-25.json"


@pytest.fixture
def snapshot() -> Path:
    return H100_SNAPSHOT


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("Error:")]


def _nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def test_topo_without_nvml_library_is_one_error_line(capsys):
    if _nvml_works():
        pytest.skip("NVML works on this machine")
    assert main(["topo"]) == 3
    err = capsys.readouterr().err
    assert len(_error_lines(err)) == 1 and "NVML" in err and "Traceback" not in err
    assert "hint:" in err


def test_topo_without_pynvml_package_is_exit_3(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert main(["topo", "--json"]) == 3
    out, err = capsys.readouterr()
    assert out == "" and len(_error_lines(err)) == 1 and "Traceback" not in err


def test_topo_missing_snapshot_is_exit_1(capsys, tmp_path):
    assert main(["topo", "--nvml-snapshot", str(tmp_path / "missing.json")]) == 1
    err = capsys.readouterr().err
    assert _error_lines(err) == [f"Error: NVML snapshot {tmp_path / 'missing.json'} does not exist"]


def test_topo_results_file_as_snapshot_is_exit_1(capsys, tmp_path):
    path = tmp_path / "r.json"
    save_results(Results(run=RunInfo(gpuprobe_version="0.1.0", started_utc="2026-11-25T00:00:00Z")), path)
    assert main(["topo", "--nvml-snapshot", str(path)]) == 1
    assert "not a gpuprobe NVML snapshot" in capsys.readouterr().err


def test_topo_record_from_snapshot_is_usage_error(capsys, snapshot, tmp_path):
    assert main(["topo", "--nvml-snapshot", str(snapshot), "--record-nvml", str(tmp_path / "x.json")]) == 2
    assert len(_error_lines(capsys.readouterr().err)) == 1


def test_topo_human_output_from_snapshot(capsys, snapshot):
    assert main(["topo", "--nvml-snapshot", str(snapshot)]) == 0
    out = capsys.readouterr().out
    assert "GPU0" in out and "CPU Affinity" in out and "0-15" in out
    assert "NVIDIA H100 80GB HBM3" in out and "x16 / x16" in out
    assert "not available from the driver: nvmlDeviceGetNvLinkState: not supported" in out


def test_topo_json_and_dot_from_snapshot(capsys, snapshot, tmp_path):
    dot = tmp_path / "topo.dot"
    assert main(["topo", "--nvml-snapshot", str(snapshot), "--json", "--dot", str(dot)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"kind", "source", "driver", "devices", "topology", "graph"}
    assert data["kind"] == "gpuprobe.topology"
    assert data["devices"][0]["pci_bus_id"] == "00000000:00:06.0"
    assert data["topology"]["unavailable"] == ["nvmlDeviceGetNvLinkState: not supported"]
    assert dot.read_text().startswith("graph gpuprobe {")


def test_topo_with_results_attaches_measurements(capsys, snapshot, tmp_path):
    facts = load_system(nvml_snapshot=snapshot)
    # nvbandwidth v0.8 on the same H100: host_to_device_memcpy_ce 52.78 GB/s
    # (tests/data/nvbandwidth/nvbandwidth-h100-2026-11-25.txt).
    stat = Stat(n=1, median=52.78, min=52.78, max=52.78, mean=52.78, stdev=0.0, cv=0.0, p95=52.78)
    m = Measurement("host_to_device_memcpy_ce", "ok", "GB/s", src="host", dst="gpu0", stat=stat, samples=[52.78])
    run = RunInfo(gpuprobe_version="0.1.0", started_utc="2026-11-25T00:00:00Z", driver_version="580.159.04")
    path = tmp_path / "results.json"
    save_results(Results(run=run, devices=facts.devices, topology=facts.topology, measurements=[m]), path)
    assert main(["topo", "--results", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == f"results file {path}"
    edge = next(e for e in data["graph"]["edges"] if {e["source"], e["target"]} == {"gpu0", "host"})
    assert edge["measured"][0]["median"] == 52.78


def test_topo_missing_results_is_exit_1(capsys, tmp_path):
    assert main(["topo", "--results", str(tmp_path / "nope.json")]) == 1
    assert len(_error_lines(capsys.readouterr().err)) == 1
