"""A run never replaces a results file holding more successful measurements than it has (nor a file that is not a
results file): its results go to the next free name (FILE.1.json, ...) with one line saying so; --force
overwrites. probe -o, qualify -o and recommend --probe (gpuprobe-probe.json)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
from pathlib import Path

import pytest

from gpuprobe import load_results
from gpuprobe.cli.app import main
from gpuprobe.probes import run as run_mod
from gpuprobe.results.io import save_results
from gpuprobe.results.model import Measurement, Results, RunInfo

ROOT = Path(__file__).resolve().parents[2]
H100 = ROOT / "tests" / "data" / "h100-probe-2026-11-25.json"
CONFIGS = ROOT / "tests" / "data" / "configs"


def _ok(results: Results) -> int:
    return sum(m.status == "ok" for m in results.measurements)


def _fake_run(n_ok: int, interrupt: bool = False):
    """Stands in for run_probes: ``n_ok`` successful figures (written to ``output`` as the real one does)."""

    def run_probes(options, output=None, progress=None, argv=None, on_start=None) -> Results:
        res = Results(run=RunInfo(gpuprobe_version="test", started_utc="2026-12-01T00:00:00Z", hostname="h"))
        res.measurements = [Measurement(probe="all_reduce", status="ok", unit="us", samples=[float(i + 1)],
                                        size_bytes=4 << i, engine="gloo") for i in range(n_ok)]
        res.status = "interrupted" if interrupt else "complete"
        if output:
            save_results(res, output)
        if interrupt:
            os.kill(os.getpid(), signal.SIGTERM)
        return res

    return run_probes


@pytest.fixture
def existing(tmp_path: Path) -> Path:
    path = tmp_path / "r.json"
    shutil.copy(H100, path)
    return path


def test_a_run_without_a_gpu_leaves_the_existing_results_file_alone(existing: Path, capsys) -> None:
    before = existing.read_bytes()
    assert main(["probe", "-o", str(existing)]) == 3  # no GPU here: every CUDA probe is waived
    assert existing.read_bytes() == before
    assert sorted(p.name for p in existing.parent.iterdir()) == ["r.json"]
    assert capsys.readouterr().err.count("Error:") == 1


def test_qualify_without_a_gpu_leaves_it_alone_too(existing: Path) -> None:
    before = existing.read_bytes()
    assert main(["qualify", "-o", str(existing)]) == 3
    assert existing.read_bytes() == before and not (existing.parent / "r.1.json").exists()


def test_recommend_probe_without_a_gpu_keeps_gpuprobe_probe_json(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(H100, tmp_path / "gpuprobe-probe.json")
    before = (tmp_path / "gpuprobe-probe.json").read_bytes()
    assert main(["recommend", "--model", str(CONFIGS / "llama-3.1-8b.json"), "--probe"]) == 3
    assert (tmp_path / "gpuprobe-probe.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpuprobe-probe.json"]


def test_fewer_measurements_go_to_the_next_free_name(existing: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(run_mod, "run_probes", _fake_run(3))
    kept = _ok(load_results(existing))
    before = existing.read_bytes()
    (existing.parent / "r.1.json").write_text("taken")
    assert main(["probe", "-t", "all_reduce", "-o", str(existing)]) == 0
    assert existing.read_bytes() == before
    assert _ok(load_results(existing.parent / "r.2.json")) == 3
    err = capsys.readouterr().err
    assert f"{existing} holds {kept} successful measurements and this run 3: it is kept; this run's results " \
           f"are in {existing.parent / 'r.2.json'} (--force overwrites)" in " ".join(err.split())


def test_force_overwrites(existing: Path, monkeypatch) -> None:
    monkeypatch.setattr(run_mod, "run_probes", _fake_run(3))
    assert main(["probe", "-t", "all_reduce", "-o", str(existing), "--force"]) == 0
    assert _ok(load_results(existing)) == 3
    assert sorted(p.name for p in existing.parent.iterdir()) == ["r.json"]


def test_as_many_measurements_or_more_replace_the_file(existing: Path, monkeypatch) -> None:
    few = load_results(existing)
    save_results(dataclasses.replace(few, measurements=[m for m in few.measurements if m.status == "ok"][:2]),
                 existing)
    monkeypatch.setattr(run_mod, "run_probes", _fake_run(2))
    assert main(["probe", "-t", "all_reduce", "-o", str(existing)]) == 0
    assert load_results(existing).run.hostname == "h"
    assert sorted(p.name for p in existing.parent.iterdir()) == ["r.json"]


def test_a_file_that_is_not_results_is_kept(tmp_path: Path, monkeypatch) -> None:
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}\n')
    monkeypatch.setattr(run_mod, "run_probes", _fake_run(5))
    assert main(["probe", "-t", "all_reduce", "-o", str(notes)]) == 0
    assert notes.read_text() == '{"mine": true}\n'
    assert _ok(load_results(tmp_path / "notes.1.json")) == 5


def test_an_interrupted_run_is_diverted_and_the_stop_line_names_where(existing: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(run_mod, "run_probes", _fake_run(1, interrupt=True))
    before = existing.read_bytes()
    assert main(["probe", "-t", "all_reduce", "-o", str(existing)]) == 143
    assert existing.read_bytes() == before
    assert load_results(existing.parent / "r.1.json").status == "interrupted"
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"Stopped by SIGTERM: the probe was interrupted; results measured so far are in " \
                      f"{existing.parent / 'r.1.json'}."


def test_an_interrupt_without_a_signal_still_says_so(tmp_path: Path, monkeypatch, capsys) -> None:
    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "run_probes", interrupted)
    assert main(["probe", "-t", "all_reduce"]) == 130
    assert capsys.readouterr().err.strip() == "Interrupted."


def test_a_symlinked_results_file_is_protected_and_replaced_through_the_link(tmp_path: Path, monkeypatch) -> None:
    real = tmp_path / "store" / "r.json"
    real.parent.mkdir()
    shutil.copy(H100, real)
    link = tmp_path / "r.json"
    link.symlink_to(real)
    monkeypatch.setattr(run_mod, "run_probes", _fake_run(2))
    assert main(["probe", "-t", "all_reduce", "-o", str(link)]) == 0
    assert _ok(load_results(real.parent / "r.1.json")) == 2 and link.is_symlink()
    assert main(["probe", "-t", "all_reduce", "-o", str(link), "--force"]) == 0
    assert link.is_symlink() and _ok(load_results(real)) == 2
