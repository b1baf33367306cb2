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


def test_bad_calibration_file_is_exit_1_like_every_bad_file(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    base = ["--model", str(CONFIGS / "llama-3.1-8b.json"), "--gpu", "H100-SXM", "--num-gpus", "1"]
    cases = {"results.json": ('{"kind": "gpuprobe.results", "schema_version": 1}', "not a gpuprobe calibration file"),
             "old.json": ('{"kind": "gpuprobe.calibration", "schema_version": 1}', "schema version 1"),
             "damaged.json": ('{"kind": "gpuprobe.calibration", "schema_version": 2, "calibration": {"x": 1}}',
                              "is damaged"),
             "torn.json": ('{"kind": "gpuprobe.calib', "")}
    for name, (text, why) in cases.items():
        (tmp_path / name).write_text(text)
        code, _, err = _run(capsys, *base, "--calibration", str(tmp_path / name))
        assert code == 1 and err.startswith("Error: ") and why in err and "Traceback" not in err, (name, err)


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


H200 = Path(__file__).resolve().parents[1] / "data" / "vllm-h200-2026-12-01"


def _served(workload_index: int) -> tuple[dict, dict]:
    """The real served Qwen2.5-14B run on the H200 (held out of the calibration): one workload's definition and
    its measurement."""
    runs = json.loads((H200 / "qwen2.5-14b-serve.json").read_text())
    w = runs["layouts"][0]["measured"]["workloads"][workload_index]
    return w["workload"], w


def test_lengths_file_of_a_real_run_predicts_its_throughput(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    """The prompt and output lengths the server counted in a real run, given as a lengths file (with a header and
    a comment), at that run's concurrency and request count on that machine's probe: within 10 % of the measured
    output tokens/s, and the JSON keeps the rows and says what load it was."""
    wl, measured = _served(1)  # 32 requests of ~710 prompt tokens at concurrency 8
    req = measured["requests"]
    rows = list(zip(req["input_tokens"], req["output_tokens"], strict=True))
    lengths = tmp_path / "lengths.csv"
    lengths.write_text("prompt_tokens,output_tokens\n# counted by the server\n"
                       + "".join(f"{i},{o}\n" for i, o in rows))
    code, out, _ = _run(capsys, "--model", str(CONFIGS / "qwen2.5-14b-instruct.json"), "--system",
                        str(H200 / "probe-machine1.json"), "--lengths", str(lengths), "--concurrency",
                        str(wl["concurrency"]), "--num-requests", str(wl["num_requests"]), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["settings"]["length_rows"] == [[i, o, 1.0] for i, o in rows]
    assert doc["settings"]["load"].startswith("8 clients in a closed loop, 32 requests, lengths drawn from 32 rows")
    tps = doc["layouts"][0]["predicted"]["output_tokens_per_s"]
    assert tps == pytest.approx(measured["output_tokens_per_s"], rel=0.10)


def test_lengths_file_with_long_prompts_raises_the_tail_and_checks_max_model_len(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """One request in ten with an 8K prompt (JSON rows with weights): TTFT p99 rises against the short prompts
    alone; a row longer than --max-model-len makes vLLM reject it, so no layout can take the traffic."""
    base = ["--model", str(CONFIGS / "llama-3.1-8b.json"), "--gpu", "H100-SXM", "--num-gpus", "2",
            "--concurrency", "16", "--num-requests", "300", "--json"]
    short = tmp_path / "short.json"
    short.write_text("[[1024, 128]]")
    mixed = tmp_path / "mixed.json"
    mixed.write_text("[[1024, 128, 9], [8192, 128, 1]]")
    p99 = []
    for f in (short, mixed):
        code, out, _ = _run(capsys, *base, "--lengths", str(f))
        assert code == 0
        p99.append(json.loads(out)["layouts"][0]["predicted"]["ttft_p99_ms"])
    assert p99[1] > 1.5 * p99[0]
    code, out, err = _run(capsys, *base[:-1], "--lengths", str(mixed), "--max-model-len", "4096")
    assert code == 1 and "requests of 8320 tokens exceed max_model_len 4096" in err


@pytest.mark.parametrize(("text", "says"), [
    ("1024,128\n1024,abc\n", "lengths.txt:2: not numbers"),
    ("1024,128\n0,5\n", "lengths.txt:2: (0, 5, 1) must be tokens >= 1"),
    ("1024\n", "lengths.txt:1: a row is prompt tokens, output tokens and an optional weight"),
    ("# nothing\n", "holds no request lengths"),
    ("[[1024, 128], {\"a\": 1}]", "row 2"),
    ("[[1024, 128]", "is not valid JSON"),
])
def test_bad_lengths_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str,
                                      says: str) -> None:
    f = tmp_path / "lengths.txt"
    f.write_text(text)
    code, out, err = _run(capsys, "--model", str(CONFIGS / "llama-3.1-8b.json"), "--gpu", "H100-SXM",
                          "--num-gpus", "1", "--lengths", str(f))
    assert code == 1 and out == "" and "Traceback" not in err  # a bad file, as every bad input file
    assert says in err and len([ln for ln in err.splitlines() if ln.startswith("Error")]) == 1
