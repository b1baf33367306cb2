"""CLI contract of report, compare and import (in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuprobe.cli.app import main
from gpuprobe.results import load_results

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
H100, RUN2 = DATA / "h100-probe-2026-11-25.json", DATA / "h100-probe-2026-11-25-run2.json"


def test_report_writes_html_and_markdown(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    val = ROOT / "reports" / "h100-2026-11-25" / "validation-8b.json"
    assert main(["report", str(H100), str(DATA / "nccl-tests" / "nccl-tests-all_reduce-h100x1.txt"),
                 "--validation", str(val), "--html", str(html), "--markdown", str(md), "--no-qualify"]) == 0
    page = html.read_text()
    assert "<h2>All-reduce</h2>" in page and "nccl-tests" in page
    assert list(tmp_path.glob("r-*.png"))


def test_report_needs_an_output_and_a_readable_file(tmp_path: Path, capsys) -> None:
    assert main(["report", str(H100)]) == 2
    assert main(["report", str(tmp_path / "missing.json"), "--html", str(tmp_path / "x.html")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_compare_table_and_json(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["compare", str(H100), str(RUN2)]) == 0
    out = capsys.readouterr().out  # 60 tests: the changes beyond the spread, the rest summarised
    assert "host_to_device_pageable_memcpy_ce" in out and "tests matched" in out and "--all lists them" in out
    assert "host_to_device_memcpy_ce" not in out
    assert main(["compare", str(H100), str(RUN2), "--all"]) == 0
    assert "host_to_device_memcpy_ce" in capsys.readouterr().out
    assert main(["compare", str(H100), str(RUN2), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["a"] == H100.name and data["summary"]["matched"] > 40


def test_import_writes_a_results_file_other_commands_read(tmp_path: Path, capsys) -> None:
    out = tmp_path / "nvb.json"
    assert main(["import", str(DATA / "nvbandwidth" / "nvbandwidth-h100-2026-11-25.json"), "-o", str(out)]) == 0
    res = load_results(out)
    assert res.run.source == "nvbandwidth" and res.find("host_to_device_memcpy_ce")[0].value == 52.5877
    assert main(["compare", str(out), str(H100), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["matched"] == 2
    assert main(["import", str(DATA / "nvidia-smi-topo" / "dgx1-v100-8gpu.txt"), "--kind", "topo"]) == 0
    assert "GPU0-GPU1 NV1" in capsys.readouterr().out
    assert main(["import", str(H100), "--kind", "bogus"]) == 2
    bad = tmp_path / "x.txt"
    bad.write_text("nothing here\n")
    assert main(["import", str(bad)]) == 1
