"""``gpuprobe qualify --level`` and the node-hook formats in-process. The probes are replaced by the real H100
capture (or a DERIVED copy), the NVML sampler runs over a CONSTRUCTED sequence and the burn-in uses the simulated
backend: the wiring of the command is what is tested here, on the CPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from gpuprobe.cli.app import main
from gpuprobe.qualify.burnin import SimulatedBurnIn
from gpuprobe.results.qualification import load_qualification
from gpuprobe.system.sampler import Sampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import qualify_derived as D
from health_sequences import sequence

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def fake_machine(monkeypatch):
    """Probes answer with ``state['results']``; the sampler reads ``state['sequence']``."""
    import gpuprobe.cli.probe as probe_cli
    import gpuprobe.cli.qualify_levels as levels_cli
    import gpuprobe.qualify.burnin as burnin

    state = {"results": D.real(), "sequence": sequence(steps=3), "calls": []}

    def fake_run(out, options, output, force=False):
        state["calls"].append((options.tests, options.quick, output))
        return state["results"], output

    monkeypatch.setattr(probe_cli, "_run_with_progress", fake_run)
    monkeypatch.setattr(levels_cli, "_sampler", lambda indices: (
        Sampler(state["sequence"], [0], interval_s=0.01, constructed=True), None, None))
    monkeypatch.setattr(burnin, "make_backend", lambda indices=None: SimulatedBurnIn({0: 800.0}, {0: 760.0},
                                                                                      lambda s: None))
    return state


def test_quick_level_writes_a_qualification_with_its_timeline(capsys, tmp_path, fake_machine):
    qpath = tmp_path / "q.json"
    code, out, err = run(capsys, "qualify", "--level", "quick", "--qualification-out", str(qpath))
    assert code == 0, err
    assert fake_machine["calls"] == [([], True, None)]
    q = load_qualification(qpath)
    assert q.level == "quick" and q.timeline is not None and q.timeline.samples and q.timeline.constructed
    assert "level: quick" in out and "health timeline:" in out and "reference: 1 × NVIDIA H100" in out
    assert "reference 52.78 GB/s" in out and "line rate 63.00 GB/s" in out


def test_burn_in_level_in_slurm_format(capsys, tmp_path, fake_machine):
    code, out, err = run(capsys, "qualify", "--level", "burn-in", "--duration", "1m", "--format", "slurm",
                         "--qualification-out", str(tmp_path / "q.json"))
    assert code == 0, err
    assert out.startswith("gpuprobe qualify PASS host=vm level=burn-in pass=") and out.count("\n") == 1
    assert "shorter than the recommended 10m" in err
    q = load_qualification(tmp_path / "q.json")
    assert q.burn_in.matmul[0].ratio == 0.95 and q.burn_in.duration_s == 60


def test_health_fault_in_npd_format_is_a_problem(capsys, fake_machine):
    fake_machine["sequence"] = sequence(steps=2, at=0, fault={"xidEvents()": {"value": [[0, 79]]}},
                                        once={"xidEvents()"})
    code, out, _ = run(capsys, "qualify", "--level", "quick", "--format", "npd")
    assert code == 1
    assert out.startswith("GPU FAIL: gpu0 xid: XID 79") and len(out.strip().encode()) <= 80


def test_failing_figure_in_slurm_format_is_confirmed_and_drains(capsys, tmp_path, fake_machine):
    fake_machine["results"] = D.lowered("host_to_device_memcpy_ce", 0.5)
    out_path = tmp_path / "r.json"
    code, out, _ = run(capsys, "qualify", "--level", "quick", "--format", "slurm", "-o", str(out_path))
    assert code == 11
    assert "FAIL" in out and "worst: host->gpu0 host_to_device_memcpy_ce" in out
    assert fake_machine["calls"][1] == (["host_to_device_memcpy_ce"], True, tmp_path / "r.confirm.json")


def test_errors_in_node_formats(capsys, tmp_path):
    code, out, _ = run(capsys, "qualify", "--input", str(tmp_path / "missing.json"), "--format", "npd")
    assert code == 2 and out.startswith("GPU unknown:") and len(out.strip().encode()) <= 80
    code, out, _ = run(capsys, "qualify", "--input", str(tmp_path / "missing.json"), "--format", "slurm")
    assert code == 1 and out.startswith("gpuprobe qualify ERROR:")
    assert run(capsys, "qualify", "--level", "burn-in", "--duration", "5s")[0] == 2
    assert run(capsys, "qualify", "--level", "soak")[0] == 2
    assert run(capsys, "qualify", "--format", "xml", "--input", str(DATA / "h100-probe-2026-11-25.json"))[0] == 2


def test_saved_qualification_is_shown_again_and_reported(capsys, tmp_path, fake_machine):
    qpath, rpath, html = tmp_path / "q.json", tmp_path / "r.json", tmp_path / "r.html"
    assert run(capsys, "qualify", "--level", "burn-in", "--duration", "1m", "-o", str(rpath),
               "--qualification-out", str(qpath))[0] == 0
    from gpuprobe.results import save_results

    save_results(D.real(), rpath)  # the fake probes wrote nothing
    code, out, _ = run(capsys, "qualify", "--from-qualification", str(qpath), "--format", "npd")
    assert code == 0 and out.startswith("GPU PASS")
    code, _, err = run(capsys, "report", str(rpath), "--qualification", str(qpath), "--html", str(html))
    assert code == 0, err
    text = html.read_text()
    assert "NVML health during the burn-in level" in text and "matmul alone TFLOP/s" in text
    assert "Constructed test sequence" in text and "line rate" in text
    assert run(capsys, "report", str(rpath), "--qualification", str(qpath), "--qualification", str(qpath),
               "--html", str(html))[0] == 2


def test_input_judgement_reports_level_input(capsys):
    code, out, _ = run(capsys, "qualify", "--input", str(DATA / "h100-probe-2026-11-25.json"), "--json")
    assert code == 0 and json.loads(out)["level"] == "input"
