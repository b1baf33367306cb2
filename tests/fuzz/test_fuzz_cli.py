"""The fuzz cases of every command, in-process: mutated real files of tests/data, hostile option values and
hostile output paths (see cases.py). Each case is its own test; the test function names the command."""

from __future__ import annotations

from pathlib import Path

import pytest
from cases import all_cases
from harness import WouldStartVllm, check_common, children_now, run_cli

CASES = all_cases()


def _cases(command: str) -> list:
    chosen = [c for c in CASES if c.command == command]
    return [pytest.param(c, id=c.name) for c in chosen]


def _refuse_to_start_vllm(*args: object, **kwargs: object) -> None:
    raise WouldStartVllm("validate passed its option checks")


def run_case(case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # never measure a GPU that happens to be there
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr("gpuprobe.validate.runner.run_validation", _refuse_to_start_vllm)
    plan = case.build(tmp_path)
    before = children_now()
    outcome = run_cli(plan.argv)
    findings = check_common(outcome, plan.allowed, tmp_path, before)
    for check in plan.checks:
        check(findings)
    findings.raise_if_any()


@pytest.mark.parametrize("case", _cases("probe"))
def test_probe(case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)


@pytest.mark.parametrize("case", _cases("topo"))
def test_topo(case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)


@pytest.mark.parametrize("case", _cases("recommend"))
def test_recommend(case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)


@pytest.mark.parametrize("case", _cases("validate"))
def test_validate(case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)


@pytest.mark.parametrize("case", _cases("qualify"))
def test_qualify(case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)


@pytest.mark.parametrize("case", _cases("report"))
def test_report(case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)


@pytest.mark.parametrize("case", _cases("compare"))
def test_compare(case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)


@pytest.mark.parametrize("case", _cases("import"))
def test_import(case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)
