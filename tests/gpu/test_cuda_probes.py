"""CUDA probes on a real GPU (skipped where there is none). Run on the GPU machine:
``PYTHONPATH=. python -m pytest tests/gpu -q``."""

from __future__ import annotations

import pytest

cupy = pytest.importorskip("cupy")
try:
    HAVE_GPU = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:  # noqa: BLE001 - no driver, no runtime: whatever CuPy raises means no GPU
    HAVE_GPU = False
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not HAVE_GPU, reason="no CUDA GPU")]

from gpuprobe.options import ProbeOptions  # noqa: E402
from gpuprobe.probes import copy, latency, local, p2p  # noqa: E402,F401
from gpuprobe.probes.core.cuda import Cuda  # noqa: E402
from gpuprobe.probes.core.registry import REGISTRY, ProbeContext  # noqa: E402


@pytest.fixture(scope="module")
def cuda():
    with Cuda() as c:
        c.preload([0])
        yield c


def _ctx(cuda, **kw) -> ProbeContext:
    opts = ProbeOptions(quick=True, samples=2, **kw)
    return ProbeContext(options=opts, gpus=[0], cuda=cuda)


SANE = {"GB/s": (1.0, 10_000.0), "ns": (100.0, 20_000.0), "us": (0.1, 100.0)}


@pytest.mark.parametrize("spec", [s for s in REGISTRY if s.needs == "cuda" and s.min_gpus == 1], ids=lambda s: s.key)
def test_single_gpu_probe_runs_and_verifies(cuda, spec):
    ms = list(spec.run(_ctx(cuda)))
    assert ms, spec.key
    for m in ms:
        assert m.status == "ok", (m.probe, m.reason)
        assert m.verified in (True, None)
        if m.unit == "GB/s" or m.probe.endswith("copy_latency_ce") or m.probe == "host_kernel_launch":
            assert m.verified is True and m.wrong_elements == 0
        lo, hi = SANE[m.unit]
        assert lo < m.value < hi, (m.probe, m.value, m.unit)
        assert len(m.samples) == 2 and m.stat.min <= m.stat.median <= m.stat.max
        if m.traffic == "bidirectional" and "host" in (m.src, m.dst):  # the reverse rate, typed and in a note
            assert m.reverse_gbps is not None and m.reverse_gbps > 0 and m.reverse_rate_gbps() == m.reverse_gbps


def test_verification_catches_a_wrong_pattern(cuda):
    """The check kernel must count words that differ: a buffer filled with another seed is all wrong."""
    n = 1 << 20
    ptr = cuda.device_alloc(0, n)
    cuda.fill(0, ptr, n, 7)
    assert cuda.check(0, ptr, n, 7) == 0
    assert cuda.check(0, ptr, n, 8) > n // 4 * 0.99
    cuda.free(ptr)


class SelfPairs(ProbeContext):
    """GPU 0 paired with itself: exercises the pairwise code on a one-GPU machine (copies stay local)."""

    def pairs(self):
        return [(0, 0)]


@pytest.mark.parametrize("key", ["device_to_device_memcpy_read_ce", "device_to_device_memcpy_write_sm",
                                 "device_to_device_bidirectional_memcpy_read_ce", "device_to_device_memcpy_staged_ce",
                                 "device_to_device_latency_sm", "device_to_device_copy_latency_ce"])
def test_pair_code_paths_on_one_gpu(cuda, key, monkeypatch):
    monkeypatch.setattr(p2p, "peer_ok", lambda ctx, a, b: True)
    monkeypatch.setattr(latency, "peer_ok", lambda ctx, a, b: True)
    monkeypatch.setattr(cuda, "set_peer_access", lambda *a: None)
    spec = next(s for s in REGISTRY if s.key == key)
    ctx = SelfPairs(options=ProbeOptions(quick=True, samples=2), gpus=[0], cuda=cuda)
    ms = list(spec.run(ctx))
    assert len(ms) == 1 and ms[0].status == "ok", ms[0].reason
    assert ms[0].value > 0
