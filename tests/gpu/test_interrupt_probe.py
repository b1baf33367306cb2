"""A probe on a real GPU stopped part-way by SIGINT, SIGTERM or SIGHUP keeps every figure finished before the
signal (skipped where there is no GPU). Run on the GPU machine: ``PYTHONPATH=. python -m pytest tests/gpu -q``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

cupy = pytest.importorskip("cupy")
try:
    HAVE_GPU = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:  # noqa: BLE001 - no driver, no runtime: whatever CuPy raises means no GPU
    HAVE_GPU = False
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not HAVE_GPU, reason="no CUDA GPU")]

from gpuprobe.results.io import load_results  # noqa: E402


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        r = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True)
        kids = [int(x) for x in r.stdout.split()]
        out += kids
        todo += kids
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_keeps_the_figures_measured_before_it(tmp_path: Path, sig: signal.Signals) -> None:
    out_file = tmp_path / "probe.json"
    proc = subprocess.Popen([sys.executable, "-m", "gpuprobe", "probe", "-o", str(out_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The whole suite takes about 10 s on one H200; after 6 s the host-copy probes are done and others run.
    time.sleep(6.0)
    assert proc.poll() is None, "the suite ended before the signal"
    children_before = _descendants(proc.pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig.value, err
    assert "Traceback" not in err
    assert sig.name in err.strip().splitlines()[-1]
    res = load_results(out_file)
    assert res.status == "interrupted"
    ok = [m for m in res.measurements if m.status == "ok"]
    assert ok, "no figure was kept"
    assert all(m.verified is not False for m in ok)
    assert all(m.value is not None and m.value > 0 for m in ok)
    for pid in children_before:  # every worker the probe had started is gone
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
