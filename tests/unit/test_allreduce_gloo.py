"""The all-reduce probe for real: gloo over 2 and 3 CPU processes, its failure paths, and its planning helpers."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("torch")

from gpuprobe.errors import UsageError
from gpuprobe.options import MiB, ProbeOptions
from gpuprobe.probes import allreduce
from gpuprobe.probes.allreduce import (
    collective_groups,
    element_counts,
    probe_sizes,
    run_allreduce_sweep,
)
from gpuprobe.probes.allreduce_world import group_timeout_s
from gpuprobe.probes.busbw import bus_factor
from gpuprobe.probes.core.registry import REGISTRY, ProbeContext
from gpuprobe.results.model import Measurement

QUICK = {"iters": 3, "warmup": 1, "samples": 2}


def _check_measured(m: Measurement, ranks: list[int]) -> None:
    assert m.status == "ok", m.reason
    assert m.probe == "all_reduce" and m.unit == "us" and m.engine == "gloo" and m.direction == "collective"
    assert m.ranks == ranks and m.path_class is None
    assert m.verified is True and m.wrong_elements == 0
    assert m.samples and all(s > 0 for s in m.samples) and m.stat is not None and m.stat.n == len(m.samples)
    t = m.stat.median * 1e-6
    assert m.algbw_gbps == pytest.approx(m.size_bytes / t / 1e9)
    assert m.busbw_gbps == pytest.approx(m.algbw_gbps * 2 * (len(ranks) - 1) / len(ranks))
    assert m.busbw_gbps == pytest.approx(m.algbw_gbps * bus_factor("all_reduce", len(ranks)))
    assert any("nccl-tests" in n for n in m.notes)


def test_library_two_processes() -> None:
    sizes = [4, 64, 4096, 64 * 1024]
    t0 = time.monotonic()
    ms = run_allreduce_sweep([[0, 1]], "gloo", sizes, **QUICK)
    assert time.monotonic() - t0 < 60
    assert [m.size_bytes for m in ms] == sizes
    for m in ms:
        _check_measured(m, [0, 1])
        assert m.busbw_gbps == pytest.approx(m.algbw_gbps)  # factor 2(n-1)/n = 1 for two ranks


def test_library_rounds_tiny_sizes_to_one_element() -> None:
    ms = run_allreduce_sweep([[0]], "gloo", [1, 2, 4, 10], iters=2, warmup=0, samples=1)
    assert [m.size_bytes for m in ms] == [4, 8]  # 1, 2 and 4 B are one float32; 10 B holds two
    for m in ms:
        _check_measured(m, [0])
        assert m.busbw_gbps == 0.0  # one rank: busbw is 0 by definition, like nccl-tests
        assert any("one rank" in n for n in m.notes)


@pytest.mark.slow
def test_probe_three_processes_sweeps_every_pair() -> None:
    opts = ProbeOptions(collective_backend="gloo", cpu_ranks=3, allreduce_min_bytes=8, allreduce_max_bytes=512,
                        allreduce_step_factor=8, allreduce_iters=2, allreduce_warmup_iters=1, allreduce_samples=2)
    labels: list[str] = []
    ctx = ProbeContext(options=opts, gpus=[], progress=labels.append)
    spec = next(s for s in REGISTRY if s.key == "all_reduce")
    assert spec.group == "collective" and spec.needs == "dist" and spec.unit == "us"
    ms = list(spec.run(ctx))
    groups = [[0, 1, 2], [0, 1], [0, 2], [1, 2]]
    assert [(m.ranks, m.size_bytes) for m in ms] == [(g, s) for g in groups for s in (8, 64, 512)]
    for m in ms:
        _check_measured(m, m.ranks)
    whole = ms[0]
    assert whole.busbw_gbps == pytest.approx(whole.algbw_gbps * 4 / 3)
    assert any("[1, 2]" in label for label in labels)


def test_prestarted_workers_settle_then_sweep() -> None:
    """Workers started early hold before their sweep; ``settle`` returns once every rank is held (the latency
    probes run then), and the probe picks the same workers up."""
    opts = ProbeOptions(collective_backend="gloo", cpu_ranks=2, allreduce_min_bytes=8, allreduce_max_bytes=64,
                        allreduce_step_factor=8, allreduce_iters=2, allreduce_warmup_iters=1, allreduce_samples=2,
                        allreduce_pairs=False)
    ctx = ProbeContext(options=opts, gpus=[])
    allreduce.prestart(ctx)
    try:
        world = ctx.cache[allreduce.PRESTART_KEY]
        waited = allreduce.settle(ctx, timeout_s=60)
        assert waited < 60
        assert all((world.directory / f"held{r}").exists() for r in range(2))
        assert not (world.directory / "go").exists()  # held, not yet sweeping
        spec = next(s for s in REGISTRY if s.key == "all_reduce")
        ms = list(spec.run(ctx))
        assert [m.size_bytes for m in ms] == [8, 64]
        for m in ms:
            _check_measured(m, [0, 1])
    finally:
        allreduce.discard(ctx)
    assert allreduce.settle(ctx) == 0.0  # nothing prestarted any more


@pytest.mark.slow
def test_forced_timeout_yields_errors_and_goes_on() -> None:
    # two groups, each with a deadline too short to finish: the first world is killed, a fresh one runs the second
    t0 = time.monotonic()
    ms = run_allreduce_sweep([[0, 1], [1, 2]], "gloo", [4096, 1 * MiB, 4 * MiB], iters=20, warmup=1, samples=3,
                             world=[0, 1, 2], timeout_s=0.05)
    assert time.monotonic() - t0 < 45
    assert [(m.ranks, m.size_bytes) for m in ms] == [(g, s) for g in ([0, 1], [1, 2]) for s in (4096, MiB, 4 * MiB)]
    errors = [m for m in ms if m.status == "error"]
    assert {tuple(m.ranks) for m in errors} == {(0, 1), (1, 2)}
    for m in errors:
        assert "gloo all-reduce timed out after" in m.reason and "ranks [" in m.reason and "\n" not in m.reason
        assert m.stat is None and m.samples == []
    for m in ms:
        if m.status == "ok":  # figures measured before the deadline are kept
            _check_measured(m, m.ranks)


def test_worker_that_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "no-such-interface0")  # inherited by the spawned workers
    t0 = time.monotonic()
    ms = run_allreduce_sweep([[0, 1]], "gloo", [64], **QUICK)
    assert time.monotonic() - t0 < 60
    assert len(ms) == 1 and ms[0].status == "error" and ms[0].ranks == [0, 1] and ms[0].size_bytes is None
    assert "failed while starting" in ms[0].reason and "no-such-interface0" in ms[0].reason


def test_startup_timeout() -> None:
    ms = run_allreduce_sweep([[0, 1]], "gloo", [64], startup_timeout_s=0.01, **QUICK)
    assert [m.status for m in ms] == ["error"] and "did not start within" in ms[0].reason


def test_nccl_without_gpus() -> None:
    ctx = ProbeContext(options=ProbeOptions(collective_backend="nccl"), gpus=[])
    (m,) = list(allreduce.all_reduce(ctx))
    assert m.status == "waived" and "GPUs" in m.reason
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this torch has CUDA")
    (m,) = run_allreduce_sweep([[0]], "nccl", [64])
    assert m.status == "error" and "NCCL" in m.reason


# ---- planning (no processes) ---------------------------------------------------------------------------------


def test_groups() -> None:
    assert collective_groups([0]) == [[0]]
    assert collective_groups([1, 0]) == [[0, 1]]
    assert collective_groups([0, 1, 2]) == [[0, 1, 2], [0, 1], [0, 2], [1, 2]]
    assert len(collective_groups(range(8))) == 1 + 28
    assert collective_groups([0, 1, 2], pairs=False) == [[0, 1, 2]]


def test_element_counts() -> None:
    assert element_counts([1, 2, 4, 8, 12, 8]) == [1, 2, 3]


def test_gloo_default_sweep_capped_unless_user_set_max() -> None:
    sizes, notes = probe_sizes(ProbeOptions(), "gloo")
    assert max(sizes) == 16 * MiB and notes and "16 MiB" in notes[0]
    sizes, notes = probe_sizes(ProbeOptions(quick=True), "gloo")
    assert max(sizes) <= 16 * MiB and notes
    sizes, notes = probe_sizes(ProbeOptions(allreduce_max_bytes=128 * MiB), "gloo")
    assert max(sizes) == 128 * MiB and not notes
    sizes, notes = probe_sizes(ProbeOptions(), "nccl")
    assert max(sizes) == 1 << 30 and not notes


def test_timeout_scales_with_sizes() -> None:
    small = group_timeout_s([2, 16], 20, 5, 3, "nccl")
    big = group_timeout_s([2, 16, 1 << 28], 20, 5, 3, "nccl")
    assert 60 <= small < big < 300


def test_bad_arguments() -> None:
    with pytest.raises(UsageError):
        run_allreduce_sweep([[0, 0]], "gloo", [64])
    with pytest.raises(UsageError):
        run_allreduce_sweep([[0, 1]], "mpi", [64])
    with pytest.raises(UsageError):
        run_allreduce_sweep([[0, 1]], "gloo", [64], world=[0])
    with pytest.raises(UsageError, match="CUDA-graph"):
        run_allreduce_sweep([[0, 1]], "gloo", [64], cuda_graph=True)
