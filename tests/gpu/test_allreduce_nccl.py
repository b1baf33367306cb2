"""NCCL all-reduce sweep on the visible GPUs (skipped without CUDA). On the GPU machine:
``python -m pytest tests/gpu/test_allreduce_nccl.py -q -m gpu``."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")]

from gpuprobe.options import ProbeOptions  # noqa: E402
from gpuprobe.probes.allreduce import all_reduce, collective_groups, run_allreduce_sweep  # noqa: E402
from gpuprobe.probes.core.registry import ProbeContext  # noqa: E402

SIZES = [8, 1024, 64 * 1024, 1 << 20, 16 << 20, 64 << 20]


def _gpus() -> list[int]:
    return list(range(torch.cuda.device_count()))


def test_nccl_sweep_verified() -> None:
    gpus = _gpus()
    groups = collective_groups(gpus)
    ms = run_allreduce_sweep(groups, "nccl", SIZES, iters=20, warmup=5, samples=3)
    assert [(m.ranks, m.size_bytes) for m in ms] == [(g, s) for g in groups for s in SIZES]
    for m in ms:
        assert m.status == "ok", m.reason
        assert m.engine == "nccl" and m.verified is True and m.wrong_elements == 0
        assert m.stat is not None and m.stat.median > 0 and all(s > 0 for s in m.samples)
        n = len(m.ranks)
        assert m.busbw_gbps == pytest.approx(m.algbw_gbps * 2 * (n - 1) / n)
    if len(gpus) == 1:
        small = [m for m in ms if m.size_bytes <= 64 * 1024]
        # one rank: in-place all-reduce moves nothing; the time is torch + NCCL launch overhead per call
        assert all(m.stat.median < 100 for m in small), [(m.size_bytes, m.stat.median) for m in small]
        assert all(m.busbw_gbps == 0.0 for m in ms)


def test_probe_quick_on_gpus() -> None:
    opts = ProbeOptions(quick=True, allreduce_max_bytes=16 << 20)
    labels: list[str] = []
    ctx = ProbeContext(options=opts, gpus=_gpus(), progress=labels.append)
    ms = list(all_reduce(ctx))
    assert ms and all(m.status == "ok" and m.engine == "nccl" for m in ms), [m.reason for m in ms]
    assert {m.size_bytes for m in ms} == set(opts.allreduce_sizes())
    assert labels


def test_nccl_sweep_cuda_graph() -> None:
    gpus = _gpus()
    ms = run_allreduce_sweep([gpus], "nccl", SIZES, iters=20, warmup=5, samples=3, cuda_graph=True)
    assert [m.size_bytes for m in ms] == SIZES
    for m in ms:
        assert m.status == "ok", m.reason
        assert m.verified is True and m.wrong_elements == 0 and m.stat.median > 0
        assert any("CUDA graph" in n for n in m.notes)
