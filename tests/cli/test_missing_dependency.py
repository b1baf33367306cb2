"""A missing package is exit code 3 with one ``Error:`` line and the exact line that installs it into this Python.

The packages are hidden from ``importlib.util.find_spec`` (how gpuprobe looks for them) or from ``import``."""

from __future__ import annotations

import builtins
import importlib.util
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gpuprobe import load_results
from gpuprobe.cli.app import main
from gpuprobe.errors import REQUIREMENTS

ROOT = Path(__file__).resolve().parents[2]
H100 = ROOT / "tests" / "data" / "h100-probe-2026-11-25.json"


def _hide(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    real_find, real_import = importlib.util.find_spec, builtins.__import__

    def find_spec(name, *args, **kwargs):
        return None if name.split(".")[0] == module else real_find(name, *args, **kwargs)

    def hidden_import(name, *args, **kwargs):
        if name.split(".")[0] == module:
            raise ImportError(f"No module named '{module}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(builtins, "__import__", hidden_import)


def _install_line(requirement: str) -> str:
    return f"{shlex.quote(sys.executable)} -m pip install {shlex.quote(requirement)}"


def test_the_requirements_are_the_extras_of_pyproject() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert sorted(extras["gpu"]) == sorted(REQUIREMENTS.values())  # the whole main job in one extra
    assert extras["report"] == [REQUIREMENTS["matplotlib"]] and extras["collectives"] == [REQUIREMENTS["torch"]]
    assert {"vllm", "all"} <= set(extras)


def test_all_reduce_without_torch(monkeypatch, capsys, tmp_path: Path) -> None:
    _hide(monkeypatch, "torch")
    out = tmp_path / "r.json"
    code = main(["probe", "--tests", "all_reduce", "--backend", "gloo", "--cpu-ranks", "2", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 3 and err.count("Error:") == 1 and "Traceback" not in err
    assert "all_reduce did not run" in err and _install_line("torch>=2.4") in err
    record = load_results(out).find("all_reduce")[0]  # the run is recorded, with the reason
    assert record.status == "error" and "torch>=2.4 is not installed" in (record.reason or "")


def test_cuda_probes_without_cupy(monkeypatch, capsys) -> None:
    _hide(monkeypatch, "cupy")
    code = main(["probe", "--tests", "host_to_device_memcpy_ce"])
    out, err = capsys.readouterr()
    assert code == 3 and err.count("Error:") == 1 and _install_line("cupy-cuda13x>=13") in err
    assert "NVIDIA H100 80GB HBM3" in out  # the recorded capture is still shown


def test_report_without_matplotlib(tmp_path: Path) -> None:
    """In a process of its own, where ``import matplotlib`` fails from the start."""
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from gpuprobe.cli.app import main\n"
            f"sys.exit(main(['report', {str(H100)!r}, '--html', {str(tmp_path / 'r.html')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 3 and proc.stderr.count("Error:") == 1, proc.stderr[-2000:]
    assert _install_line("matplotlib>=3.7") in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r.html").exists()
