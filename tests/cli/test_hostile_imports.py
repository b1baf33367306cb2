"""Another tool's damaged output is one ``Error:`` line naming the file and the field (exit 1), never a traceback,
and nothing non-finite or negative is imported. Every case mutates a real capture from tests/data."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpuprobe.cli.app import main

DATA = Path(__file__).resolve().parents[1] / "data"
NVB_JSON = DATA / "nvbandwidth" / "nvbandwidth-h100-2026-11-25.json"
NVB_TXT = DATA / "nvbandwidth" / "nvbandwidth-h100-2026-11-25.txt"
NCCL_JSON = DATA / "nccl-tests" / "nccl-tests-all_reduce-h100x1.json"
NCCL_TXT = DATA / "nccl-tests" / "nccl-tests-all_reduce-h100x1.txt"
TOPO = DATA / "nvidia-smi-topo" / "dgx1-v100-8gpu.txt"


def one_error_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    """The command's stderr is one ``Error:`` line (and at most a hint line) that contains ``words``."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("Error: "), err
    assert len(lines) <= 2 and all(ln.startswith("  hint: ") for ln in lines[1:]), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _import_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, *words: str) -> str:
    src, out = tmp_path / name, tmp_path / "out.json"
    src.write_text(text)
    assert main(["import", str(src), "-o", str(out)]) == 1
    assert not out.exists()
    return one_error_line(capsys, name, *words)


def _nvb(edit: Callable[[dict[str, Any]], None]) -> str:
    doc = json.loads(NVB_JSON.read_text())
    edit(doc["nvbandwidth"])
    return json.dumps(doc)


def _cell(value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda root: root["testcases"][0]["bandwidth_matrix"][0].__setitem__(0, value)


NVB_JSON_CASES = {
    "testcases-not-a-list": (lambda root: root.__setitem__("testcases", 5), "testcases"),
    "testcase-a-string": (lambda root: root.__setitem__("testcases", ["x"]), "testcases"),
    "device-list-a-number": (lambda root: root.__setitem__("GPU Device list", 5), "GPU Device list"),
    "matrix-a-string": (lambda root: root["testcases"][0].__setitem__("bandwidth_matrix", "abc"), "bandwidth_matrix"),
    "row-a-number": (lambda root: root["testcases"][0].__setitem__("bandwidth_matrix", [7]), "bandwidth_matrix"),
    "nan-cell": (_cell("nan"), "not a finite"),
    "inf-cell": (_cell("inf"), "not a finite"),
    "negative-cell": (_cell("-5"), "negative"),
    "word-cell": (_cell("fast"), "'fast'"),
    "huge-matrix": (lambda root: root["testcases"][0].__setitem__("bandwidth_matrix", [["1"] * 5000]), "5000"),
}


@pytest.mark.parametrize("case", NVB_JSON_CASES)
def test_damaged_nvbandwidth_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    edit, word = NVB_JSON_CASES[case]
    _import_fails(tmp_path, capsys, f"{case}.json", _nvb(edit), word)


def _nvb_text_cell(value: str) -> str:
    return NVB_TXT.read_text().replace(" 0     52.78", f" 0     {value}", 1)


@pytest.mark.parametrize(("case", "text", "word"), [
    ("nan", _nvb_text_cell("nan"), "not a finite"),
    ("negative", _nvb_text_cell("-52.78"), "negative"),
    ("huge-row", NVB_TXT.read_text().replace(" 0     52.78", " 20000000     52.78", 1), "20000000"),
])
def test_damaged_nvbandwidth_text(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, text: str,
                                  word: str) -> None:
    line = _import_fails(tmp_path, capsys, f"{case}.txt", text, word)
    assert "host_to_device_memcpy_ce" in line


def _nccl_row(col: int, value: str) -> str:
    lines = NCCL_TXT.read_text().splitlines(keepends=True)
    i = next(k for k, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#"))
    cols = lines[i].split()
    cols[col] = value
    lines[i] = "  ".join(cols) + "\n"
    return "".join(lines)


@pytest.mark.parametrize(("case", "text", "word"), [
    ("time-nan", _nccl_row(5, "nan"), "time"),
    ("busbw-negative", _nccl_row(7, "-1.5"), "busbw"),
    ("wrong-inf", _nccl_row(8, "inf"), "#wrong"),
    ("size-word", _nccl_row(1, "many"), "count"),
])
def test_damaged_nccl_tests_text(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, text: str,
                                 word: str) -> None:
    _import_fails(tmp_path, capsys, f"{case}.txt", text, word)


def _nccl(edit: Callable[[dict[str, Any]], None]) -> str:
    doc = json.loads(NCCL_JSON.read_text())
    edit(doc)
    return json.dumps(doc)


NCCL_JSON_CASES = {
    "entry-a-string": (lambda d: d["results"].__setitem__(0, "x"), "results[0]"),
    "size-missing": (lambda d: d["results"][0].pop("size"), "size"),
    "time-a-word": (lambda d: d["results"][0]["in_place"].__setitem__("time", "abc"), "time"),
    "time-negative": (lambda d: d["results"][0]["in_place"].__setitem__("time", -1), "time"),
    "busbw-infinite": (lambda d: d["results"][0]["in_place"].__setitem__("bus_bw", 1e999), "bus_bw"),
    "nwrong-infinite": (lambda d: d["results"][0]["in_place"].__setitem__("nwrong", 1e999), "nwrong"),
    "config-a-list": (lambda d: d.__setitem__("config", [1]), "config"),
    "rank-a-word": (lambda d: d["config"]["devices"][0].__setitem__("rank", "x"), "rank"),
    "args-a-number": (lambda d: d.__setitem__("args", 5), "args"),
}


@pytest.mark.parametrize("case", NCCL_JSON_CASES)
def test_damaged_nccl_tests_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    edit, word = NCCL_JSON_CASES[case]
    _import_fails(tmp_path, capsys, f"{case}.json", _nccl(edit), word)


@pytest.mark.parametrize(("case", "text", "word"), [
    ("huge-affinity", re.sub(r"0-11,24-35", "0-2000000000", TOPO.read_text(), count=1), "CPU Affinity"),
    ("huge-gpu-index", TOPO.read_text().replace("\nGPU7", "\nGPU20000000", 1), "GPU20000000"),
])
def test_damaged_nvidia_smi_topo(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, text: str,
                                 word: str) -> None:
    assert text != TOPO.read_text()
    _import_fails(tmp_path, capsys, f"{case}.txt", text, word)


def test_real_captures_still_import(tmp_path: Path) -> None:
    for src in (NVB_JSON, NVB_TXT, NCCL_JSON, NCCL_TXT, TOPO):
        assert main(["import", str(src), "-o", str(tmp_path / f"{src.name}.json")]) == 0
