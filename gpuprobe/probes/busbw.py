"""Bandwidth formulas of nccl-tests (``src/*.cu`` ``*GetBw``, ``doc/PERFORMANCE.md``), one per collective.

Two figures are reported for a collective that took ``t`` seconds (GB/s = 1e9 B/s):

``algbw = S / t``
    S is the data size the collective is *about*: the ``size`` column of nccl-tests, i.e. the larger of a rank's
    send and receive buffers. For all_reduce, broadcast, reduce and sendrecv that is ``count × typesize``; for
    reduce_scatter, all_gather, alltoall, gather and scatter it is ``count × typesize × n``, where ``count`` is
    the per-rank element count nccl-tests passes to NCCL and ``n`` the number of ranks. (hypercube is the one
    collective whose S, ``count × typesize × (n − 1)``, differs from its size column.)

``busbw = algbw × factor(n)``
    A number comparable to the hardware's per-GPU link bandwidth whatever n is. A ring (or any point-to-point)
    all-reduce of S bytes moves ``2(n − 1)/n × S`` bytes in and out of every rank: n − 1 steps of reduce-scatter
    and n − 1 of all-gather, each S/n. So factor = 2(n − 1)/n for all_reduce; (n − 1)/n for reduce_scatter,
    all_gather, alltoall, gather and scatter (each rank sends or receives all but its own 1/n); 1 for broadcast,
    reduce, sendrecv and hypercube (a pipelined chain moves S per link). With one rank the factor is 0 for the
    n-dependent collectives, so busbw is 0, exactly as nccl-tests prints it.

Caveat (NVLS / SHARP): with in-switch reduction (NVLink SHARP on NVSwitch systems, ``NCCL_NVLS_ENABLE``, or
InfiniBand SHARP) the GPUs do not move 2(n − 1)/n × S bytes each, so busbw can exceed the link's line rate.
nccl-tests keeps the same formula for comparability (issues #153, #366), and so does gpuprobe: compare such
figures with each other, not with the link's wire speed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Collective:
    """A collective's algbw data size and busbw factor, as nccl-tests computes them."""

    name: str
    size_bytes: Callable[[int, int, int], int]
    """S for algbw, from (count, typesize, nranks); count is nccl-tests' per-rank element count."""
    factor: Callable[[int], float]
    """busbw = algbw × factor(nranks)."""


def _count_bytes(count: int, typesize: int, nranks: int) -> int:
    return count * typesize


def _count_bytes_times_n(count: int, typesize: int, nranks: int) -> int:
    return count * typesize * nranks


def _count_bytes_times_n_minus_1(count: int, typesize: int, nranks: int) -> int:
    return count * typesize * (nranks - 1)


def _two_n_minus_1_over_n(nranks: int) -> float:
    return 2.0 * (nranks - 1) / nranks


def _n_minus_1_over_n(nranks: int) -> float:
    return (nranks - 1) / nranks


def _one(nranks: int) -> float:
    return 1.0


COLLECTIVES: dict[str, Collective] = {
    c.name: c
    for c in (
        Collective("all_reduce", _count_bytes, _two_n_minus_1_over_n),
        Collective("reduce_scatter", _count_bytes_times_n, _n_minus_1_over_n),
        Collective("all_gather", _count_bytes_times_n, _n_minus_1_over_n),
        Collective("alltoall", _count_bytes_times_n, _n_minus_1_over_n),
        Collective("gather", _count_bytes_times_n, _n_minus_1_over_n),
        Collective("scatter", _count_bytes_times_n, _n_minus_1_over_n),
        Collective("broadcast", _count_bytes, _one),
        Collective("reduce", _count_bytes, _one),
        Collective("sendrecv", _count_bytes, _one),
        Collective("hypercube", _count_bytes_times_n_minus_1, _one),
    )
}
"""Every nccl-tests collective by name (nccl-tests' binary name without ``_perf``)."""


def _collective(name: str) -> Collective:
    try:
        return COLLECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown collective {name!r}; known: {', '.join(COLLECTIVES)}") from None


def _check_ranks(nranks: int) -> None:
    if nranks < 1:
        raise ValueError(f"a collective needs at least one rank (got {nranks})")


def bus_factor(collective: str, nranks: int) -> float:
    """busbw / algbw for ``collective`` over ``nranks`` ranks: 2(n−1)/n, (n−1)/n or 1 (see the module doc)."""
    _check_ranks(nranks)
    return _collective(collective).factor(nranks)


def data_bytes(collective: str, count: int, typesize: int, nranks: int) -> int:
    """S, the bytes algbw is computed from, for nccl-tests' per-rank ``count`` of ``typesize``-byte elements."""
    _check_ranks(nranks)
    return _collective(collective).size_bytes(count, typesize, nranks)


def algbw_gbps(size_bytes: float, time_s: float) -> float:
    """algbw = S / t in GB/s (1e9 B/s)."""
    if time_s <= 0:
        raise ValueError(f"time must be positive (got {time_s} s)")
    return size_bytes / time_s / GB


def bandwidths(collective: str, count: int, typesize: int, time_s: float, nranks: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s, exactly as nccl-tests' ``<Collective>GetBw(count, typesize, sec, …, nranks)``."""
    alg = algbw_gbps(data_bytes(collective, count, typesize, nranks), time_s)
    return alg, alg * bus_factor(collective, nranks)


def allreduce_bandwidths(size_bytes: int, time_s: float, nranks: int) -> tuple[float, float]:
    """(algbw, busbw) of an all-reduce of ``size_bytes`` per rank: S/t and S/t × 2(n−1)/n."""
    alg = algbw_gbps(size_bytes, time_s)
    return alg, alg * bus_factor("all_reduce", nranks)
