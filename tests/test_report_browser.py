"""The HTML report opens in a real headless browser: the screenshot is a non-blank page, the DOM has the headings."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from gpuprobe.cli.app import main

ROOT = Path(__file__).resolve().parents[1]
BROWSER = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome"))
                if p), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HEADINGS = ["Summary", "Host and software", "Topology", "Bandwidth", "Latency", "All-reduce",
            "Predicted vs measured (real vLLM runs)"]


def _browser(*args: str) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(prefix="gpuprobe-chromium-")
    try:
        return subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "HOME": profile})
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.skipif(BROWSER is None, reason="no chromium binary (Debian package 'chromium') on PATH")
def test_html_report_renders_in_chromium(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    val = ROOT / "reports" / "h100-2026-11-25" / "validation-8b.json"
    assert main(["report", str(ROOT / "tests" / "data" / "h100-probe-2026-11-25.json"), "--validation", str(val),
                 "--html", str(page)]) == 0
    shot = tmp_path / "shot.png"
    run = _browser(f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    assert shot.exists(), run.stderr[-2000:]
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(shot)[..., :3]
    assert img.shape[:2] == (2000, 1280)
    non_white = float((img.min(axis=2) < 0.94).mean())
    colours = len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert non_white > 0.05, f"page looks blank ({non_white:.3f} non-white)"
    assert colours > 50, f"only {colours} distinct colours"
    dom = _browser("--dump-dom", page.as_uri()).stdout
    for h in HEADINGS:
        assert f"<h2>{h}</h2>" in dom, h
    assert "<h1>gpuprobe report — NVIDIA H100 80GB HBM3</h1>" in dom
    assert dom.count("data:image/png;base64,") >= 4
