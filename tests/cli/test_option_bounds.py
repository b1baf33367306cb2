"""Every number option is checked at the CLI boundary: finite and in range, the range in the message, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprobe.cli.app import main

DATA = Path(__file__).resolve().parents[1] / "data"
H100 = str(DATA / "h100-probe-2026-11-25.json")
CONFIG = str(DATA / "configs" / "llama-3.2-1b.json")
REC = ["recommend", "--model", CONFIG, "--gpu", "H100-SXM", "--num-gpus", "1"]
VAL = ["validate", "--model", CONFIG, "--layout", "tp=1", "-o", "OUT"]

CASES = {
    "compare-k-nan": (["compare", H100, H100, "--k", "nan"], "--k", "[0, 1,000]"),
    "compare-k-negative": (["compare", H100, H100, "--k", "-1"], "--k", "[0, 1,000]"),
    "compare-floor-negative": (["compare", H100, H100, "--floor-pct", "-5"], "--floor-pct", "[0, 10,000]"),
    "recommend-ttft-nan": ([*REC, "--max-ttft-ms", "nan"], "--max-ttft-ms", "(0, "),
    "recommend-tpot-inf": ([*REC, "--max-tpot-ms", "inf"], "--max-tpot-ms", "(0, "),
    "recommend-gmu": ([*REC, "--gpu-memory-utilization", "7"], "--gpu-memory-utilization", "(0, 1]"),
    "recommend-rate-nan": ([*REC, "--request-rate", "nan"], "--request-rate", "(0, "),
    "recommend-range-ratio": ([*REC, "--range-ratio", "1.5"], "--range-ratio", "[0, 1)"),
    "recommend-input-len": ([*REC, "--input-len", "0"], "--input-len", "[1, "),
    "recommend-num-gpus": (["recommend", "--model", CONFIG, "--gpu", "H100-SXM", "--num-gpus", "0"], "--num-gpus",
                           "[1, 256]"),
    "recommend-max-model-len": ([*REC, "--max-model-len", "-5"], "--max-model-len", "[1, "),
    "validate-timeout-nan": ([*VAL, "--timeout-s", "nan"], "--timeout-s", "(0, "),
    "validate-max-model-len": ([*VAL, "--max-model-len", "-5"], "--max-model-len", "[1, "),
    "validate-gmu": ([*VAL, "--gpu-memory-utilization", "7"], "--gpu-memory-utilization", "(0, 1]"),
    "validate-top": ([*VAL, "--top", "0"], "--top", "[1, 1,000]"),
    "probe-buffer": (["probe", "-b", "0"], "--buffer-size", "[1, "),
    "probe-samples": (["probe", "--samples", "-3"], "--samples", "[1, "),
    "qualify-samples": (["qualify", "--samples", "0"], "--samples", "[1, "),
}


@pytest.mark.parametrize("case", CASES)
def test_out_of_range_option_is_exit_2_with_the_range(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      case: str) -> None:
    argv, option, allowed = CASES[case]
    argv = [str(tmp_path / "v.json") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if "Error" in ln]
    assert len(errors) == 1 and errors[0].startswith("Error: "), err
    assert option in errors[0] and allowed in errors[0], errors[0]


@pytest.mark.parametrize("tests", [[""], ["all_reduce", " "]])
def test_probe_tests_that_do_not_resolve(capsys: pytest.CaptureFixture[str], tests: list[str]) -> None:
    argv = ["probe", "--backend", "gloo"]
    for t in tests:
        argv += ["--tests", t]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("Error: ") and "--tests" in err, err


def test_validate_python_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--model", CONFIG, "--layout", "tp=1", "-o", str(tmp_path / "v.json"),
                 "--python", "/nonexistent/python"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("Error: ") and "/nonexistent/python" in err, err


def test_options_in_range_still_work(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", H100, H100, "--k", "0", "--floor-pct", "0"]) == 0
    assert main([*REC, "--gpu-memory-utilization", "0.95", "--max-ttft-ms", "500", "--range-ratio", "0.5"]) == 0
