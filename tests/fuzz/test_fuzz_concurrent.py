"""Two processes writing the same output path at once, over and over, while this one reads it: every read sees a
whole document (never half of one), both writers succeed, and no temporary file is left behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from cases import CONFIG, NVML_SOURCE, QUICK, TEXT_SOURCES, VALIDATION_SOURCES
from harness import DATA, PYTHON, REPO, partial_files, python_env, strict_json

ROUNDS = 12
"""Invocations of the command by each writer process."""

DRIVER = """
import contextlib, io, json, sys
from gpuprobe.cli.app import main
argv, rounds = json.loads(sys.argv[1]), int(sys.argv[2])
codes = []
for _ in range(rounds):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        codes.append(main(list(argv)))
print(json.dumps(codes))
"""


def _json_doc(kind: str) -> Callable[[str], None]:
    def check(text: str) -> None:
        data = strict_json(text)
        assert isinstance(data, dict) and data.get("kind") == kind, f"not a {kind} document"

    return check


def _xml(text: str) -> None:
    ET.fromstring(text)


def _prometheus(text: str) -> None:
    assert text.endswith("\n"), "no final newline"
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            assert name, f"line without a value: {line!r}"
            float(value)


def _dot(text: str) -> None:
    assert "graph" in text.split("{", 1)[0] and text.rstrip().endswith("}"), "not a whole DOT graph"


def _validation(text: str) -> None:
    _json_doc("gpuprobe.validation")(text)


WRITERS: dict[str, tuple[Callable[[Path], list[str]], str, Callable[[str], None], set[int]]] = {
    "import-o": (lambda d: ["import", str(DATA / TEXT_SOURCES[0]), "-o", str(d / "out.json")], "out.json",
                 _json_doc("gpuprobe.results"), {0}),
    "recommend-o": (lambda d: ["recommend", "--model", str(CONFIG), "--system", str(QUICK), "-o", str(d / "rec.json")],
                    "rec.json", _json_doc("gpuprobe.recommendation"), {0}),
    "qualify-junit": (lambda d: ["qualify", "--input", str(QUICK), "--junit", str(d / "q.xml")], "q.xml", _xml,
                      {0, 10, 11}),
    "qualify-prometheus": (lambda d: ["qualify", "--input", str(QUICK), "--prometheus", str(d / "q.prom")], "q.prom",
                           _prometheus, {0, 10, 11}),
    "topo-dot": (lambda d: ["topo", "--nvml-snapshot", str(DATA / NVML_SOURCE), "--dot", str(d / "g.dot")], "g.dot",
                 _dot, {0}),
    "validate-compare": (lambda d: ["validate", "--compare", str(d / "runs.json")], "runs.json", _validation, {0}),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_concurrent(name: str, tmp_path: Path) -> None:
    make_argv, filename, validate, success = WRITERS[name]
    if name == "validate-compare":
        shutil.copy(DATA / VALIDATION_SOURCES[0], tmp_path / "runs.json")
    argv = make_argv(tmp_path)
    target = tmp_path / filename
    procs = [subprocess.Popen([PYTHON, "-c", DRIVER, json.dumps(argv), str(ROUNDS)], cwd=REPO, env=python_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    problems: list[str] = []
    reads = 0
    deadline = time.monotonic() + 120
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            try:
                text = target.read_text(encoding="utf-8")
            except FileNotFoundError:
                if name == "validate-compare":
                    problems.append("PARTIAL: the file being rewritten disappeared for a moment")
                time.sleep(0.002)
                continue
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"PARTIAL: a read failed: {exc}")
                continue
            reads += 1
            try:
                validate(text)
            except Exception as exc:  # noqa: BLE001 - the finding
                problems.append(f"PARTIAL: a reader saw a partial document ({len(text)} bytes): {exc}"[:300])
            time.sleep(0.002)
    finally:
        outs = []
        for p in procs:
            try:
                outs.append(p.communicate(timeout=60))
            except subprocess.TimeoutExpired:
                p.kill()
                outs.append(p.communicate())
    for p, (out, err) in zip(procs, outs, strict=True):
        if "Traceback (most recent call last)" in err:
            last = next((x for x in reversed(err.splitlines()) if x and not x.startswith(" ")), "")
            problems.append(f"TRACEBACK: a writer crashed: {last}")
            continue
        try:
            codes = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            problems.append(f"EXIT: a writer ended with {p.returncode} without reporting its exit codes")
            continue
        if set(codes) - success:
            problems.append(f"EXIT: writer exit codes {sorted(set(codes))}, expected {sorted(success)}")
    try:
        validate(target.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001
        problems.append(f"UNREADABLE: the final file is not whole: {type(exc).__name__}: {exc}"[:300])
    left = partial_files(tmp_path)
    if left:
        problems.append(f"PARTIAL: temporary files left: {left[:3]}")
    if problems:
        unique = list(dict.fromkeys(problems))
        pytest.fail("\n".join([*unique[:5], f"command (two writers, {ROUNDS} times each, {reads} reads): gpuprobe "
                               + " ".join(argv)]), pytrace=False)
