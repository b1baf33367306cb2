"""Nothing from a file, a path or the user is parsed as rich markup, and control characters and escape sequences in
such data are shown as visible text, never sent to the terminal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from gpuprobe.cli.app import main

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
H100 = DATA / "h100-probe-2026-11-25.json"
CONFIG = DATA / "configs" / "llama-3.2-1b.json"
VALIDATION = DATA / "vllm-h100-2026-11-25" / "machine2-validation-1b.json"
MARKUP = "[/x]"
ESC = "\x1b[2J\x1b]0;owned\x07"


def _hostile_results(tmp_path: Path) -> Path:
    doc = json.loads(H100.read_text())
    doc["run"]["hostname"] = f"host{MARKUP}{ESC}"
    for d in doc["devices"]:
        d["name"] = f"NVIDIA H100 {MARKUP}{ESC}"
    doc["problems"].append(f"a problem {MARKUP}{ESC}")
    doc["notes"].append(f"a note [bold]kept[/bold]{ESC}")
    m = next(m for m in doc["measurements"] if m["status"] != "ok" and m["reason"]) if any(
        m["status"] != "ok" and m["reason"] for m in doc["measurements"]) else doc["measurements"][0]
    m["reason"] = f"reason {MARKUP}{ESC}"
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(doc))
    return path


def _clean(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text, repr(text)


@pytest.mark.parametrize("command", [
    ["probe", "--input", "FILE"],
    ["probe", "--input", "FILE", "--all"],
    ["qualify", "--input", "FILE"],
    ["compare", "FILE", str(H100), "--all"],
    ["topo", "--results", "FILE"],
    ["recommend", "--model", str(CONFIG), "--system", "FILE"],
])
def test_hostile_names_in_a_results_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    path = _hostile_results(tmp_path)
    code = main([str(path) if a == "FILE" else a for a in command])
    out = capsys.readouterr()
    assert code in (0, 4, 10, 11), out.err
    assert "Traceback" not in out.err and "MarkupError" not in out.err
    _clean(out.out)
    _clean(out.err)


def test_a_model_folder_named_like_markup_is_printed_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    for name in ("[bold]x[/bold]", "[/x]"):  # the path's text holds the markup (a "/" separates folders)
        folder = tmp_path / name
        folder.mkdir(parents=True)
        shutil.copy(CONFIG, folder / "config.json")
        assert main(["recommend", "--model", str(folder), "--gpu", "H100-SXM", "--num-gpus", "1"]) == 0
        out = capsys.readouterr().out
        assert f"vllm serve {folder}" in out.replace("'", ""), out


def test_qualify_help_keeps_its_brackets(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["qualify", "--help"]) == 0
    assert "[tests.KEY]" in capsys.readouterr().out


def test_a_validation_file_with_escapes_in_its_reasons(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    doc: dict[str, Any] = json.loads(VALIDATION.read_text())
    doc["layouts"][0]["reason"] = f"engine said {MARKUP}{ESC}"
    doc["run"]["hostname"] = f"h{MARKUP}{ESC}"
    path = tmp_path / "v.json"
    path.write_text(json.dumps(doc))
    assert main(["validate", "--compare", str(path)]) == 0
    out = capsys.readouterr()
    _clean(out.out)
    _clean(out.err)


def test_plain_makes_control_characters_visible() -> None:
    from gpuprobe.report.fmt import plain

    assert plain("a\x1b[2Jb\tc\nd\x7f") == "a\\x1b[2Jb c d\\x7f"
    assert plain("NVIDIA H100 80GB HBM3") == "NVIDIA H100 80GB HBM3"
    assert plain(None) == ""
