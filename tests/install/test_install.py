"""Installing gpuprobe as a new user would: the README's quick start as written, and the offline install.

These need a package index (they download wheels) and take a few minutes, so they run only with
``GPUPROBE_INSTALL_TESTS=1`` (``scripts/test.sh`` sets it). Each works on a copy of the repository's tracked
files in a temporary folder and in fresh virtual environments; nothing is installed into this interpreter's.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "offline_install.sh"
CONFIG = ROOT / "tests" / "data" / "configs" / "llama-3.1-8b.json"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("GPUPROBE_INSTALL_TESTS") != "1",
                       reason="installs from a package index: set GPUPROBE_INSTALL_TESTS=1 (scripts/test.sh does)"),
]


def _copy_repo(dest: Path) -> Path:
    """The tracked files of this repository (what a fresh clone has), copied to ``dest``."""
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        names = [n for n in files.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and not {
            ".git", ".venv", "__pycache__"} & set(p.relative_to(ROOT).parts)]
    for name in names:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    return dest


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "COLUMNS")}
    env.update(more)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _quick_start_block() -> str:
    """The first code block of the README's 'Quick start' section, exactly as written."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_quick_start_as_written_in_a_fresh_venv(tmp_path: Path) -> None:
    """The quick start's commands, unchanged, in a fresh virtual environment (``~`` is a temporary home).

    On this machine without a GPU they end as the README says: exit code 3, the recorded capture shown and no
    results file left. pip is held to the PyPI build of PyTorch the tests already use (``PIP_CONSTRAINT``) where
    there is one, so CI does not fetch a CUDA build of several GB; the commands are those of the README."""
    block = _quick_start_block()
    assert "pip install '.[gpu]'" in block and "gpuprobe probe" in block
    repo = _copy_repo(tmp_path / "gpuprobe")
    home = tmp_path / "home"
    home.mkdir()
    env = _env(HOME=str(home))
    try:
        torch = importlib.metadata.version("torch")
        (tmp_path / "constraints.txt").write_text(f"torch=={torch}\n")
        env["PIP_CONSTRAINT"] = str(tmp_path / "constraints.txt")
    except importlib.metadata.PackageNotFoundError:
        pass
    proc = _run(["bash", "-c", block], cwd=repo, env=env, timeout=1500)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 3, tail
    assert "Showing the recorded capture" in proc.stderr and "NVIDIA H100 80GB HBM3" in proc.stdout, tail
    assert proc.stderr.count("Error:") == 1 and "Traceback" not in proc.stderr
    assert not (repo / "results.json").exists()
    venv_python = home / "gpuprobe-venv" / "bin" / "python"
    check = _run([str(venv_python), "-c", "import cupy, torch, matplotlib, gpuprobe; print(gpuprobe.__file__)"],
                 cwd=tmp_path, env=_env())
    assert check.returncode == 0 and str(home) in check.stdout, check.stderr[-2000:]


def test_offline_install_from_a_wheelhouse(tmp_path: Path) -> None:
    """A wheelhouse built here, installed into a fresh environment with the index disabled and nothing else
    visible (``ISOLATED=1``), then ``probe`` (no GPU: the shipped capture), ``recommend`` and ``report`` from it."""
    repo = _copy_repo(tmp_path / "gpuprobe")
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    env = _env(PYTHON=sys.executable)
    built = _run(["bash", str(repo / "scripts" / "offline_install.sh"), "build", str(wheels), "report"], repo, env)
    assert built.returncode == 0, built.stderr[-3000:]
    assert list(wheels.glob("gpuprobe-*.whl")) and list(wheels.glob("matplotlib-*.whl"))
    installed = _run(["bash", str(SCRIPT), "install", str(wheels), str(venv), "report"], tmp_path,
                     _env(PYTHON=sys.executable, ISOLATED="1"))
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-3000:]
    assert "gpuprobe 0.1.0" in installed.stdout
    gpuprobe = str(venv / "bin" / "gpuprobe")
    probe = _run([gpuprobe, "probe"], tmp_path, _env())
    assert probe.returncode == 3 and "NVIDIA H100 80GB HBM3" in probe.stdout, probe.stderr[-2000:]
    capture = _run([str(venv / "bin" / "python"), "-c", "import gpuprobe.cli.probe as p; print(p.RECORDED)"],
                   tmp_path, _env()).stdout.strip()
    assert capture.startswith(str(venv))  # gpuprobe runs from the environment, not from this repository
    rec = _run([gpuprobe, "recommend", "--model", str(CONFIG), "--system", capture, "--serve-model", "x/y"],
               tmp_path, _env())
    assert rec.returncode == 0 and "CUDA_VISIBLE_DEVICES=0 vllm serve x/y " in rec.stdout, rec.stderr[-2000:]
    report = _run([gpuprobe, "report", capture, "--html", str(tmp_path / "r.html")], tmp_path, _env())
    assert report.returncode == 0 and (tmp_path / "r.html").stat().st_size > 10_000, report.stderr[-2000:]


def test_offline_install_uses_what_is_installed(tmp_path: Path) -> None:
    """As on a GPU server that has PyTorch already: a wheelhouse of gpuprobe and its base dependencies only, the
    ``collectives`` extra satisfied by the PyTorch installed for this interpreter, and the all-reduce run with it."""
    pytest.importorskip("torch")
    repo = _copy_repo(tmp_path / "gpuprobe")
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    built = _run(["bash", str(repo / "scripts" / "offline_install.sh"), "build", str(wheels)], repo,
                 _env(PYTHON=sys.executable))
    assert built.returncode == 0, built.stderr[-3000:]
    assert not list(wheels.glob("torch-*.whl"))
    installed = _run(["bash", str(SCRIPT), "install", str(wheels), str(venv), "collectives"], tmp_path,
                     _env(PYTHON=sys.executable))
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-3000:]
    where = _run([str(venv / "bin" / "python"), "-c", "import gpuprobe, torch; print(gpuprobe.__file__)"], tmp_path,
                 _env())
    assert where.returncode == 0 and where.stdout.startswith(str(venv)), where.stderr[-2000:]
    ar = _run([str(venv / "bin" / "gpuprobe"), "probe", "--tests", "all_reduce", "--backend", "gloo",
               "--cpu-ranks", "2", "--allreduce-max-bytes", "4096", "--json"], tmp_path, _env())
    assert ar.returncode == 0, ar.stderr[-3000:]
    measured = [m for m in json.loads(ar.stdout)["measurements"] if m["probe"] == "all_reduce"]
    assert measured and all(m["status"] == "ok" and m["wrong_elements"] == 0 for m in measured)
