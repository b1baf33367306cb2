"""Every gpuprobe document read through one validating path: a special file, an oversized or deeply nested one,
non-finite or negative figures, absurd counts and dimensions are one ``Error:`` line and exit 1, never a hang or a
traceback. Each case mutates a real file from tests/data (or a document gpuprobe itself wrote)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpuprobe.cli.app import main
from gpuprobe.predict.calibration import Calibration, save_calibration

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
H100 = DATA / "h100-probe-2026-11-25.json"
NVML = DATA / "nvml-h100-2026-11-25.json"
VALIDATION = DATA / "vllm-h100-2026-11-25" / "machine2-validation-1b.json"
CONFIG = DATA / "configs" / "llama-3.2-1b.json"
ON_GPU = ["--gpu", "H100-SXM", "--num-gpus", "1"]


def one_error_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("Error: "), err
    assert len(lines) <= 2 and all(ln.startswith("  hint: ") for ln in lines[1:]), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _recommendation(tmp_path: Path) -> Path:
    path = tmp_path / "real-rec.json"
    assert main(["recommend", "--model", str(CONFIG), *ON_GPU, "-o", str(path), "--json"]) == 0
    return path


def _calibration(tmp_path: Path) -> Path:
    path = tmp_path / "real-cal.json"
    save_calibration(Calibration(), path)
    return path


THRESHOLDS = 'warn = 0.85\n[gpus."H100"]\nwarn = 0.9\n'

# (what, argv with FILE where the document goes, file suffix)
LOADERS: dict[str, tuple[list[str], str]] = {
    "results": (["probe", "--input", "FILE"], ".json"),
    "system": (["recommend", "--model", str(CONFIG), "--system", "FILE"], ".json"),
    "compared": (["compare", "FILE", str(H100)], ".json"),
    "calibration": (["recommend", "--model", str(CONFIG), *ON_GPU, "--calibration", "FILE"], ".json"),
    "recommendation": (["validate", "--model", str(CONFIG), "--recommendation", "FILE", "-o", "OUT"], ".json"),
    "validation": (["validate", "--compare", "FILE"], ".json"),
    "thresholds": (["qualify", "--input", str(H100), "--thresholds", "FILE"], ".toml"),
    "nvml-snapshot": (["topo", "--nvml-snapshot", "FILE"], ".json"),
    "model-config": (["recommend", "--model", "FILE", *ON_GPU], ".json"),
    "lengths": (["recommend", "--model", str(CONFIG), *ON_GPU, "--lengths", "FILE"], ".txt"),
}


def _argv(what: str, path: Path, tmp_path: Path) -> list[str]:
    argv, _ = LOADERS[what]
    return [str(path) if a == "FILE" else str(tmp_path / "out.json") if a == "OUT" else a for a in argv]


@pytest.mark.parametrize("what", LOADERS)
def test_a_fifo_is_refused_before_it_is_opened(tmp_path: Path, what: str) -> None:
    fifo = tmp_path / f"input{LOADERS[what][1]}"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "gpuprobe", *_argv(what, fifo, tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("Error: ") and "not a regular file" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("what", LOADERS)
def test_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        what: str) -> None:
    big = tmp_path / f"big{LOADERS[what][1]}"
    with big.open("wb") as fh:  # sparse: no disk space used
        fh.truncate(300 << 20)
    assert main(_argv(what, big, tmp_path)) == 1
    one_error_line(capsys, str(big), "MiB")


@pytest.mark.parametrize("what", [w for w in LOADERS if LOADERS[w][1] == ".json"])
def test_deep_nesting_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"kind": ' + "[" * 10000 + "]" * 10000 + "}")
    assert main(_argv(what, deep, tmp_path)) == 1
    one_error_line(capsys, str(deep), "nested")


def _results(tmp_path: Path, edit: Any, text_edit: Any = None) -> Path:
    doc = json.loads(H100.read_text())
    edit(doc)
    text = json.dumps(doc, indent=1)
    if text_edit:
        text = text_edit(text)
    path = tmp_path / "mutated.json"
    path.write_text(text)
    return path


def _first_stat(doc: dict[str, Any]) -> dict[str, Any]:
    return next(m["stat"] for m in doc["measurements"] if m["stat"])


RESULTS_CASES = {
    "nan-median": (lambda d: _first_stat(d).__setitem__("median", "@NAN@"), "median", "finite"),
    "infinite-median": (lambda d: _first_stat(d).__setitem__("median", "@INF@"), "median", "finite"),
    "negative-bandwidth": (lambda d: d["measurements"][0].__setitem__("algbw_gbps", -5.0), "algbw_gbps", "negative"),
    "negative-sample": (lambda d: d["measurements"][0]["samples"].__setitem__(0, -1.0), "samples", "negative"),
    "negative-duration": (lambda d: d["measurements"][0].__setitem__("duration_s", -2.0), "duration_s", "negative"),
    "512-devices": (lambda d: d.__setitem__("devices", [dict(d["devices"][0], index=i) for i in range(512)]),
                    "512", "devices"),
    "kind": (lambda d: d.__setitem__("kind", "gpuprobe.recommendation"), "kind", "results file"),
    # a group of 200,000 copies of one rank (the fuzz suite's huge array): drawn, it took minutes in the report
    "200000-ranks": (lambda d: next(m for m in d["measurements"] if m["ranks"]).__setitem__("ranks", [0] * 200_000),
                     "200,000 ranks", "distinct"),
}


@pytest.mark.parametrize("case", RESULTS_CASES)
@pytest.mark.parametrize("command", [["probe", "--input"], ["compare", str(H100)],
                                     ["recommend", "--model", str(CONFIG), "--system"]])
def test_damaged_results_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str,
                              command: list[str]) -> None:
    edit, *words = RESULTS_CASES[case]
    path = _results(tmp_path, edit, lambda t: t.replace('"@NAN@"', "NaN").replace('"@INF@"', "1e999"))
    assert main([*command, str(path)]) == 1
    one_error_line(capsys, str(path), *words)


COUNT = "nvmlDeviceGetCount()"


def _snapshot(tmp_path: Path, edit: Any) -> Path:
    doc = json.loads(NVML.read_text())
    edit(doc)
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(("case", "edit", "word"), [
    ("a-billion-gpus", lambda d: d["calls"][COUNT].__setitem__("value", 10 ** 9), "nvmlDeviceGetCount"),
    ("count-a-word", lambda d: d["calls"][COUNT].__setitem__("value", "many"), "nvmlDeviceGetCount"),
    ("kind", lambda d: d.__setitem__("kind", "gpuprobe.results"), "kind"),
])
def test_damaged_nvml_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, edit: Any,
                               word: str) -> None:
    path = _snapshot(tmp_path, edit)
    assert main(["topo", "--nvml-snapshot", str(path)]) == 1
    one_error_line(capsys, str(path), word)


def _config(tmp_path: Path, **changes: Any) -> Path:
    doc = json.loads(CONFIG.read_text())
    doc.update(changes)
    path = tmp_path / "model" / "config.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(("changes", "word"), [
    ({"num_hidden_layers": 16_777_216}, "num_hidden_layers"),
    ({"hidden_size": 1 << 40}, "hidden_size"),
    ({"vocab_size": 10 ** 12}, "vocab_size"),
    ({"num_attention_heads": 1 << 20, "num_key_value_heads": 1 << 20}, "num_attention_heads"),
    ({"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 0}}, "group_size"),
])
def test_absurd_model_dimensions(tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, Any],
                                 word: str) -> None:
    path = _config(tmp_path, **changes)
    assert main(["recommend", "--model", str(path.parent), *ON_GPU]) == 1
    one_error_line(capsys, word)


@pytest.mark.parametrize(("field", "value", "word"), [
    ("hbm_efficiency", 0.0, "(0, 1.5]"),
    ("allreduce_efficiency", 7.0, "(0, 1.5]"),
    ("p2p_efficiency", -0.5, "(0, 1.5]"),
    ("step_overhead_ms", -1.0, "step_overhead_ms"),
    ("request_latency_ms", 1e9, "request_latency_ms"),
    ("seq_overhead_us", "@INF@", "seq_overhead_us"),
])
def test_damaged_calibration(tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: Any,
                             word: str) -> None:
    path = _calibration(tmp_path)
    doc = json.loads(path.read_text())
    doc["calibration"][field] = value
    path.write_text(json.dumps(doc).replace('"@INF@"', "1e999"))
    assert main(["recommend", "--model", str(CONFIG), *ON_GPU, "--calibration", str(path)]) == 1
    one_error_line(capsys, str(path), word)


def test_a_recommendation_of_another_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = _recommendation(tmp_path)
    doc = json.loads(rec.read_text())
    doc["kind"] = "gpuprobe.results"
    rec.write_text(json.dumps(doc))
    assert main(["validate", "--model", str(CONFIG), "--recommendation", str(rec), "-o",
                 str(tmp_path / "v.json")]) == 1
    one_error_line(capsys, str(rec), "recommendation")


def test_a_validation_file_with_a_negative_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = VALIDATION.read_text()
    doc = json.loads(text)
    doc["layouts"][0]["measured"]["kv_cache_tokens"] = -5
    path = tmp_path / "v.json"
    path.write_text(json.dumps(doc))
    assert main(["report", str(H100), "--validation", str(path), "--markdown", str(tmp_path / "r.md")]) == 1
    one_error_line(capsys, str(path), "kv_cache_tokens")


@pytest.mark.parametrize(("text", "word"), [
    ('[gpus."(.*.*)*Z"]\nwarn = 0.9\n', "nested"),
    ('[gpus."' + "a" * 300 + '"]\nwarn = 0.9\n', "long"),
    ("warn = nan\n", "warn"),
    ("warn = inf\n", "warn"),
])
def test_hostile_thresholds(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, word: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(text)
    assert main(["qualify", "--input", str(H100), "--thresholds", str(path)]) == 1
    one_error_line(capsys, word)


def test_real_documents_still_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.toml"
    path.write_text(THRESHOLDS)
    assert main(["qualify", "--input", str(H100), "--thresholds", str(path)]) in (0, 10, 11)
    assert main(["topo", "--nvml-snapshot", str(NVML)]) == 0
    assert main(["recommend", "--model", str(CONFIG), *ON_GPU, "--calibration", str(_calibration(tmp_path))]) == 0
    assert main(["report", str(H100), "--validation", str(VALIDATION), "--markdown", str(tmp_path / "r.md")]) == 0


def test_thresholds_expected_must_be_finite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.toml"
    path.write_text("[tests.device_local_copy]\nexpected = nan\n")
    assert main(["qualify", "--input", str(H100), "--thresholds", str(path)]) == 1
    one_error_line(capsys, "expected")


def test_existing_gpu_patterns_still_work() -> None:
    from gpuprobe.qualify.thresholds import thresholds_from_data

    t = thresholds_from_data({"gpus": {"H100": {"warn": 0.9}, "H(100|200)": {"warn": 0.8}, r"A100\s+80GB": {}}})
    assert t.band("device_local_copy", "NVIDIA H100 80GB HBM3").warn == 0.9


def test_zero_figures_do_not_divide_by_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def zero(doc: dict[str, Any]) -> None:
        for m in doc["measurements"]:
            if m["stat"]:
                m["stat"].update(median=0.0, min=0.0, max=0.0, mean=0.0, p95=0.0)
                m["samples"] = [0.0] * len(m["samples"])

    path = _results(tmp_path, zero)
    assert main(["recommend", "--model", str(CONFIG), "--system", str(path)]) == 0
    assert "Traceback" not in capsys.readouterr().err
