"""Every command at 80 columns and in a pipe: no figure cut, commands and paths whole, on the real recorded data.

Each command runs twice: with ``COLUMNS=80`` and piped with no width set (rich's pipe width). Its ``--json`` output
gives the figures the text shows (formatted as the text formats them), and each must appear there whole: not cut
behind an ellipsis, not split across lines, not part of a longer number. Commands and paths must be whole lines.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprobe.cli.app import app, main

DATA = Path(__file__).resolve().parents[1] / "data"
H100 = DATA / "h100-probe-2026-11-25.json"
RUN2 = DATA / "h100-probe-2026-11-25-run2.json"
GLOO = DATA / "gloo" / "gloo-allreduce-3ranks-cpu.json"
CONFIGS = DATA / "configs"
VALIDATION = DATA / "vllm" / "validation-cpu-tp1-tp2.json"
NARROW = ["80", None]  # COLUMNS=80, and a pipe with no width set


def run(capsys, monkeypatch, columns: str | None, *args: str) -> tuple[int, str, str]:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def whole(text: str, figure: str) -> bool:
    """``figure`` appears in ``text`` with no digit, separator or ellipsis glued to either side."""
    return re.search(rf"(?<![\d.,]){re.escape(figure)}(?![\d…]|[.,]\d)", text) is not None


def assert_whole(text: str, figures: list[str]) -> None:
    missing = [f for f in figures if not whole(text, f)]
    assert not missing, f"figures cut or missing: {missing[:10]}"
    assert not re.search(r"\S…", text), "a value cut behind an ellipsis"


def flat(text: str) -> str:
    """The text with every run of white space (line breaks included) as one space."""
    return " ".join(text.split())


def lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines()}


def fmt(value: float | None, unit: str) -> str:
    return f"{value:,.0f}" if unit == "ns" else f"{value:,.2f}"


def probe_figures(doc: dict, every_size: bool = True) -> list[str]:
    figures = []
    groups: dict[tuple, list[dict]] = {}
    for m in doc["measurements"]:
        if m["status"] != "ok":
            continue
        if m["direction"] == "collective":
            groups.setdefault(tuple(m["ranks"]), []).append(m)
            continue
        s = m["stat"]
        figures += [fmt(s["median"], m["unit"]), fmt(s["min"], m["unit"]), fmt(s["max"], m["unit"]),
                    f"{s['cv'] * 100:.1f}%"]
    whole_group = max(groups, key=len, default=())
    for ranks, ms in groups.items():
        largest = max(m["size_bytes"] for m in ms)
        for m in ms:
            if every_size or ranks == whole_group or m["size_bytes"] == largest:
                figures += [f"{m['stat']['median']:,.2f}", f"{m['algbw_gbps']:,.2f}", f"{m['busbw_gbps']:,.2f}"]
    return figures


@pytest.mark.parametrize("columns", NARROW)
@pytest.mark.parametrize("path", [H100, GLOO])
def test_probe_input(capsys, monkeypatch, columns, path) -> None:
    code, js, _ = run(capsys, monkeypatch, columns, "probe", "--input", str(path), "--json")
    doc = json.loads(js)
    for every in (False, True):
        args = ["probe", "--input", str(path)] + (["--all"] if every else [])
        code, out, _ = run(capsys, monkeypatch, columns, *args)
        assert code == 0
        assert_whole(out, probe_figures(doc, every_size=every))
        assert (path == GLOO and not every) == ("--all" in out)  # the pairs' smaller messages are summarised
        for m in doc["measurements"]:
            assert m["probe"] in out  # probe keys whole


@pytest.mark.parametrize("columns", NARROW)
def test_probe_without_gpu_shows_the_capture_whole(capsys, monkeypatch, columns) -> None:
    doc = json.loads(run(capsys, monkeypatch, columns, "probe", "--input", str(H100), "--json")[1])
    code, out, err = run(capsys, monkeypatch, columns, "probe")
    assert code == 3 and err.count("Error:") == 1
    assert_whole(out, probe_figures(doc, every_size=False))


def test_wide_keeps_the_table(capsys, monkeypatch) -> None:
    code, out, _ = run(capsys, monkeypatch, "80", "probe", "--input", str(H100), "--wide")
    assert code == 0 and "min–max" in out.splitlines()[2]  # one header line, the full table
    assert max(len(line) for line in out.splitlines()) > 80
    doc = json.loads(run(capsys, monkeypatch, "80", "probe", "--input", str(H100), "--json")[1])
    assert_whole(out, probe_figures(doc, every_size=False))


@pytest.mark.parametrize("columns", NARROW)
def test_probe_list(capsys, monkeypatch, columns) -> None:
    keys = [p["key"] for p in json.loads(run(capsys, monkeypatch, columns, "probe", "--list", "--json")[1])]
    code, out, _ = run(capsys, monkeypatch, columns, "probe", "--list")
    assert code == 0 and all(re.search(rf"(?<!\w){k}(?!\w)", out) for k in keys)


@pytest.mark.parametrize("columns", NARROW)
def test_qualify(capsys, monkeypatch, columns) -> None:
    from gpuprobe.report.terminal_qualify import _fmt

    code, js, _ = run(capsys, monkeypatch, columns, "qualify", "--input", str(H100), "--json")
    checks = [c for c in json.loads(js)["checks"] if c["verdict"] != "SKIP"]
    code, out, _ = run(capsys, monkeypatch, columns, "qualify", "--input", str(H100))
    assert code == 0
    grouped: dict[tuple, list[dict]] = {}
    for c in checks:
        grouped.setdefault((c["test"], c["verdict"]), []).append(c)
    figures = []
    for (_, verdict), cs in grouped.items():
        values = sorted(c["value"] for c in cs if c["value"] is not None)
        if len(cs) > 1 and verdict in ("PASS", "INFO"):  # one row for the group: its range
            values = values[:1] + values[-1:]
        unit = cs[0]["unit"]
        figures += [_fmt(v, unit).split(" ")[0] for v in values]
        figures += [f"{c['ratio']:.0%}" for c in cs if c["ratio"] is not None and len(cs) == 1]
        figures += [_fmt(c["expected"], unit).split(" ")[0] for c in cs if c["expected"] is not None and len(cs) == 1]
    assert_whole(out, figures)


@pytest.mark.parametrize("columns", NARROW)
def test_compare(capsys, monkeypatch, columns) -> None:
    from gpuprobe.report.compare import _fmt

    doc = json.loads(run(capsys, monkeypatch, columns, "compare", str(H100), str(RUN2), "--json")[1])
    code, out, _ = run(capsys, monkeypatch, columns, "compare", str(H100), str(RUN2), "--all")
    assert code == 0
    figures = []
    for r in doc["rows"]:
        figures += [_fmt(side["value"], r["unit"]) for side in (r["a"], r["b"]) if side["value"] is not None]
        if r["change_pct"] is not None:
            figures.append(f"{r['change_pct']:+.1f}")
    assert_whole(out, figures)
    code, short, _ = run(capsys, monkeypatch, columns, "compare", str(H100), str(RUN2))
    real = [r for r in doc["rows"] if r["exceeds_spread"]]
    assert code == 0 and "--all lists them" in flat(short)
    assert_whole(short, [f"{r['change_pct']:+.1f}" for r in real])


def recommend_figures(doc: dict, count: int | None = None) -> list[str]:
    figures = []
    for r in [x for x in doc["layouts"] if x["fits"]][:count]:
        p = r["predicted"]
        figures += [f"{r['kv_cache_tokens']:,}", f"{r['max_concurrency']:,.2f}", f"{p['ttft_ms']:,.1f}",
                    f"{p['tpot_ms']:,.2f}", f"{p['output_tokens_per_s']:,.0f}"]
    return figures


@pytest.mark.parametrize("columns", NARROW)
@pytest.mark.parametrize("args", [
    ["--model", str(CONFIGS / "llama-3.1-70b.json"), "--gpu", "H100-SXM", "--num-gpus", "8"],
    ["--model", str(CONFIGS / "qwen2.5-7b-instruct.json"), "--system", str(H100), "--max-model-len", "8192",
     "--max-num-seqs", "128", "--kv-cache-dtype", "fp8", "--max-ttft-ms", "500"],
    ["--model", str(CONFIGS / "mixtral-8x7b-v0.1.json"), "--gpu", "L40S", "--num-gpus", "4", "--enforce-eager",
     "--gpu-memory-utilization", "0.85", "--objective", "latency"],
])
def test_recommend(capsys, monkeypatch, columns, args) -> None:
    doc = json.loads(run(capsys, monkeypatch, columns, "recommend", *args, "--json")[1])
    code, out, _ = run(capsys, monkeypatch, columns, "recommend", *args, "--all")
    assert code == 0
    assert_whole(out, recommend_figures(doc))
    for r in doc["layouts"]:
        if not r["fits"]:
            assert r["reason"] in flat(out)  # each reason whole (wrapped between words only)
    fitting = [r for r in doc["layouts"] if r["fits"]]
    for r in fitting[:3]:
        assert set(r["vllm_command"]) <= lines(out)  # each command one whole line
    code, short, _ = run(capsys, monkeypatch, columns, "recommend", *args)
    assert code == 0 and len(short.splitlines()) < 120
    assert_whole(short, recommend_figures(doc, 10))
    assert ("--all lists them" in flat(short)) == (len(fitting) > 10)


def test_recommend_says_which_vllm(capsys, monkeypatch) -> None:
    args = ["recommend", "--model", str(CONFIGS / "llama-3.1-8b.json"), "--gpu", "H100-SXM", "--num-gpus", "1"]
    doc = json.loads(run(capsys, monkeypatch, "80", *args, "--json")[1])
    out = run(capsys, monkeypatch, "80", *args)[1]
    assert f"vLLM {doc['vllm_version']} rules" in flat(out)
    installed = doc["vllm_installed"]
    assert (f"installed here: vLLM {installed}" in flat(out)) == bool(
        installed and installed != doc["vllm_version"])


def test_recommend_serves_a_folder_or_says_what_to_replace(capsys, monkeypatch, tmp_path) -> None:
    folder = tmp_path / "my models" / "Llama 8B"
    folder.mkdir(parents=True)
    shutil.copy(CONFIGS / "llama-3.1-8b.json", folder / "config.json")
    base = ["recommend", "--gpu", "H100-SXM", "--num-gpus", "1", "--json"]
    for model in (folder, folder / "config.json"):
        doc = json.loads(run(capsys, monkeypatch, "80", *base, "--model", str(model))[1])
        assert f"vllm serve '{folder}' " in doc["layouts"][0]["vllm_command"][0]
    code, out, _err = run(capsys, monkeypatch, "80", *base[:-1], "--model", str(CONFIGS / "llama-3.1-8b.json"))
    assert code == 0 and "vllm serve MODEL " in out and "replace MODEL" in flat(out)
    doc = json.loads(run(capsys, monkeypatch, "80", *base, "--model", str(CONFIGS / "llama-3.1-8b.json"),
                         "--serve-model", "meta-llama/Llama-3.1-8B")[1])
    assert "vllm serve meta-llama/Llama-3.1-8B " in doc["layouts"][0]["vllm_command"][0]


@pytest.mark.parametrize("columns", NARROW)
def test_import_and_topo(capsys, monkeypatch, columns, tmp_path) -> None:
    nvb = DATA / "nvbandwidth" / "nvbandwidth-h100-2026-11-25.txt"
    doc = json.loads(run(capsys, monkeypatch, columns, "import", str(nvb), "--json")[1])
    code, out, _ = run(capsys, monkeypatch, columns, "import", str(nvb))
    assert code == 0
    assert_whole(out, [fmt(m["stat"]["median"], m["unit"]) for m in doc["measurements"] if m["status"] == "ok"])
    topo = DATA / "nvidia-smi-topo" / "dgx1-v100-8gpu.txt"
    code, out, _ = run(capsys, monkeypatch, columns, "import", str(topo), "--all")
    assert code == 0 and "GPU6-GPU7 NV1" in out and "GPU0-GPU1 NV1" in out
    saved = tmp_path / "dgx1.json"
    assert run(capsys, monkeypatch, columns, "import", str(topo), "-o", str(saved))[0] == 0
    code, out, _ = run(capsys, monkeypatch, columns, "topo", "--results", str(saved))
    assert code == 0 and str(saved) in lines(out) | {w for line in out.splitlines() for w in line.split()}
    assert "12-23,36-47" in out and all(f"GPU{i}" in out for i in range(8))
    assert not re.search(r"\S…", out)


def test_recommend_on_files_it_cannot_use(capsys, monkeypatch, tmp_path) -> None:
    topo = tmp_path / "dgx1.json"
    assert run(capsys, monkeypatch, "80", "import", str(DATA / "nvidia-smi-topo" / "dgx1-v100-8gpu.txt"), "-o",
               str(topo))[0] == 0
    model = ["recommend", "--model", str(CONFIGS / "llama-3.1-8b.json")]
    for system, words in ((GLOO, "lists no GPUs"), (topo, "no memory size")):
        code, out, err = run(capsys, monkeypatch, "80", *model, "--system", str(system))
        assert code == 1 and out == "" and err.startswith("Error: ") and words in err
        assert "hint: " in err and "--gpu NAME --num-gpus N" in err and "Traceback" not in err


@pytest.mark.parametrize("columns", NARROW)
def test_validate_compare(capsys, monkeypatch, columns, tmp_path) -> None:
    runs = tmp_path / "runs.json"
    shutil.copy(VALIDATION, runs)
    code, js, _ = run(capsys, monkeypatch, columns, "validate", "--compare", str(runs), "--json")
    assert code == 0
    figures = []
    for lay in json.loads(js)["runs"][0]["layouts"]:
        m = lay["measured"]
        figures.append(f"{m['kv_cache']['tokens']:,.0f}")
        for w in m["workloads"]:
            figures += [f"{w['output_tokens_per_s']:,.1f}", f"{w['ttft']['median_ms']:,.1f}",
                        f"{w['tpot']['median_ms']:,.2f}"]
    code, out, err = run(capsys, monkeypatch, columns, "validate", "--compare", str(runs))
    assert code == 0 and str(runs) in err
    assert_whole(out, figures)


@pytest.mark.parametrize("command", [c.name for c in app.registered_commands])
def test_help_keeps_option_names_whole(capsys, monkeypatch, command) -> None:
    import typer.main

    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    code, out, _ = run(capsys, monkeypatch, "80", command, "--help")
    assert code == 0
    names = [opt for p in click_command.params for opt in [*p.opts, *p.secondary_opts] if opt.startswith("-")]
    assert names and all(re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", out) for n in names)
    assert max(len(line) for line in out.splitlines()) <= 80


def test_a_real_pipe(tmp_path) -> None:
    """The same through an operating-system pipe (the gpuprobe process writes into a pipe, no COLUMNS)."""
    env = {k: v for k, v in __import__("os").environ.items() if k != "COLUMNS"}
    args = ["recommend", "--model", str(CONFIGS / "llama-3.1-70b.json"), "--gpu", "H100-SXM", "--num-gpus", "8"]
    proc = subprocess.run([sys.executable, "-m", "gpuprobe", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, check=False)
    doc = json.loads(subprocess.run([sys.executable, "-m", "gpuprobe", *args, "--json"], capture_output=True,
                                    text=True, env=env, cwd=tmp_path, check=True).stdout)
    assert proc.returncode == 0
    assert_whole(proc.stdout, recommend_figures(doc, 10))
    for r in [x for x in doc["layouts"] if x["fits"]][:3]:
        assert set(r["vllm_command"]) <= lines(proc.stdout)


def test_text_from_files_is_not_markup(capsys, monkeypatch, tmp_path) -> None:
    """A host name in brackets (rich's markup syntax) is printed as it is, not taken as a style."""
    doc = json.loads(H100.read_text())
    doc["run"]["hostname"] = "[red]rack-1[/red] [bold]"
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    for command in (["probe", "--input", str(path)], ["qualify", "--input", str(path)]):
        code, out, _ = run(capsys, monkeypatch, "200", *command)
        assert code == 0 and "[red]rack-1[/red] [bold]" in out


BURN_IN = DATA / "qualify-h200-2026-12-01" / "burn-in-qual.json"


@pytest.mark.parametrize("columns", NARROW)
def test_qualify_level_output(capsys, monkeypatch, columns) -> None:
    """A saved burn-in qualification (real H200 run): each check's figure, ratio and expectation, the level, the
    burn-in's matmul ratio and the verdict line whole at 80 columns and in a pipe; the exit code is the verdict's."""
    from gpuprobe.report.terminal_qualify import _fmt

    code, js, _ = run(capsys, monkeypatch, columns, "qualify", "--from-qualification", str(BURN_IN), "--json")
    doc = json.loads(js)
    code, out, _ = run(capsys, monkeypatch, columns, "qualify", "--from-qualification", str(BURN_IN))
    assert code == doc["exit_code"] == 10
    figures = []
    for c in doc["checks"]:
        if c["verdict"] == "SKIP":
            continue
        figures += [_fmt(v, c["unit"]).split(" ")[0] for v in (c["value"], c["expected"]) if v is not None]
        figures += [f"{c['ratio']:.0%}"] if c["ratio"] is not None else []
    figures += [f"{m['ratio']:.2f}" for m in doc["burn_in"]["matmul"]]
    assert_whole(out, figures)
    text = flat(out)
    assert f"level: {doc['level']}" in text
    assert f"verdict: {doc['verdict']} (" in text and "exit code 10" in text
    assert all(len(line) <= 80 for line in out.splitlines()) or columns is None


CLUSTER = DATA / "gloo" / "cluster-2nodes-srun-cpu.json"


@pytest.mark.parametrize("columns", NARROW)
def test_cluster_file(capsys, monkeypatch, columns) -> None:
    """A real two-node cluster file (gloo on loopback): probe shows every node-to-node figure and every all-reduce
    time whole, qualify its cluster section and drain line; nothing wider than 80 columns at 80 columns."""
    doc = json.loads(CLUSTER.read_text())
    c = doc["cluster"]
    code, out, _ = run(capsys, monkeypatch, columns, "probe", "--input", str(CLUSTER))
    assert code == 0
    figures = []
    for m in c["links"]:
        v = m["stat"]["median"]
        figures.append(f"{v:,.2f}" if m["unit"] == "GB/s" else f"{v:,.1f}")
    figures += [f"{m['stat']['median']:,.1f}" for m in c["collectives"]]
    assert_whole(out, figures)
    assert "All-reduce over nodes node0, node1" in flat(out)
    code, js, err = run(capsys, monkeypatch, columns, "qualify", "--input", str(CLUSTER), "--json")
    q = json.loads(js)
    assert q["cluster"]["nodes"] == ["node0", "node1"] and "drain: " in err
    code, out, _ = run(capsys, monkeypatch, columns, "qualify", "--input", str(CLUSTER))
    assert code == q["exit_code"] and "drain: " in out and "Cluster: 2 nodes against the median" in flat(out)
    if columns == "80":
        assert max(len(line) for line in out.splitlines()) <= 80


@pytest.mark.parametrize("columns", NARROW)
def test_compare_two_cluster_files(capsys, monkeypatch, columns) -> None:
    """Two real cluster runs compared: every changed row (node links, all-reduce over the nodes, each node's own
    figures) shows its route, both figures and the change whole."""
    from gpuprobe.report.compare import _fmt

    run2 = DATA / "gloo" / "cluster-2nodes-srun-cpu-run2.json"
    code, js, _ = run(capsys, monkeypatch, columns, "compare", str(CLUSTER), str(run2), "--json")
    rows = [r for r in json.loads(js)["rows"] if r["exceeds_spread"]]
    code, out, _ = run(capsys, monkeypatch, columns, "compare", str(CLUSTER), str(run2))
    assert code == 0 and rows
    text = flat(out)
    for r in rows:
        assert r["route"] in text
    assert_whole(out, [f for r in rows for f in (_fmt(r["a"]["value"], r["unit"]), _fmt(r["b"]["value"], r["unit"]),
                                                  f"{r['change_pct']:+.1f}")])
