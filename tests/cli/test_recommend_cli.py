"""``gpuprobe recommend`` run in-process: exit codes, one-line errors, the --json contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuprobe.cli.app import main

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"
LAYOUT_KEYS = {"tp", "pp", "replicas", "gpus", "fits", "reason", "kv_cache_tokens", "max_concurrency",
               "allreduce_backend", "predicted", "vllm_command"}


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["recommend", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--model", str(CONFIGS / "llama-3.1-8b.json"), "--gpu", "H100-SXM",
                        "--num-gpus", "8", "--max-model-len", "8192", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["kind"] == "gpuprobe.recommendation" and doc["vllm_version"] == "0.26.0"
    assert len(doc["layouts"]) == 38
    for layout in doc["layouts"]:
        assert set(layout) >= LAYOUT_KEYS
    best = doc["layouts"][0]
    assert best["fits"] and best["reason"] is None
    assert {"ttft_ms", "tpot_ms", "output_tokens_per_s"} <= set(best["predicted"])
    assert best["vllm_command"][0].startswith("CUDA_VISIBLE_DEVICES=")
    assert "--tensor-parallel-size" in best["vllm_command"][0]
    bad = [x for x in doc["layouts"] if not x["fits"]]
    assert bad and all(x["reason"] for x in bad) and all(x["predicted"] is None for x in bad)


def test_table_and_output_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    dest = tmp_path / "rec.json"
    code, out, _ = _run(capsys, "--model", str(CONFIGS / "llama-3.2-1b.json"), "--gpu", "L40S", "--num-gpus", "2",
                        "--objective", "latency", "--max-tpot-ms", "50", "-o", str(dest))
    assert code == 0 and "vllm serve" in out and "TP" in out
    assert json.loads(dest.read_text())["objective"] == "latency"


def test_no_system_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "--model", str(CONFIGS / "llama-3.1-8b.json"))
    assert code == 2 and out == ""
    assert "--system" in err and "--gpu H100-SXM --num-gpus 8" in err and "Traceback" not in err


def test_fits_nowhere_names_the_requirement(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "--model", str(CONFIGS / "deepseek-v3.json"), "--gpu", "H100-SXM",
                          "--num-gpus", "8", "--json")
    assert code == 1 and out == ""
    first = err.splitlines()[0]
    assert first.startswith("Error: ") and "fits no layout" in first and "GiB" in first and "largest layout" in first


@pytest.mark.parametrize("content", ["{", "[]", '{"architectures": ["BertModel"]}', '{"hidden_size": NaN}'])
def test_bad_configs_exit_1_without_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                              content: str) -> None:
    (tmp_path / "config.json").write_text(content)
    code, _, err = _run(capsys, "--model", str(tmp_path), "--gpu", "H100-SXM", "--num-gpus", "1")
    assert code == 1 and err.startswith("Error: ") and "Traceback" not in err


def test_bad_results_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "r.json"
    bad.write_text('{"kind": "something else"}')
    code, _, err = _run(capsys, "--model", str(CONFIGS / "llama-3.1-8b.json"), "--system", str(bad))
    assert code == 1 and "not a gpuprobe results file" in err


def test_no_system_says_how_to_give_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "--model", str(CONFIGS / "llama-3.1-8b.json"))
    assert code == 2 and err.count("Error:") == 1 and "--system" in err and "--probe" in err


def test_probe_first_without_a_gpu_is_one_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed here; this checks the machine without CUDA")
    except ImportError:
        pass
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, "--model", str(CONFIGS / "llama-3.1-8b.json"), "--probe")
    assert code == 3 and err.count("Error:") == 1 and "Traceback" not in err
    assert not (tmp_path / "gpuprobe-probe.json").exists()  # nothing measured: no empty results file left
