"""Read the text table nccl-tests prints (``all_reduce_perf`` and friends) so its figures can be compared.

One row per size: ``size count type redop root`` then, for out-of-place and in-place, ``time algbw busbw #wrong``
(time in µs, bandwidths in GB/s). Comment lines start with ``#``; the ``# Rank`` lines give the number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    time_us: float
    algbw_gbps: float
    busbw_gbps: float
    wrong: int


@dataclass(frozen=True)
class Row:
    size_bytes: int
    count: int
    dtype: str
    redop: str
    root: int
    out_of_place: Result
    in_place: Result


@dataclass(frozen=True)
class Table:
    rows: list[Row]
    nranks: int
    version: str | None = None


def _result(cols: list[str]) -> Result:
    return Result(time_us=float(cols[0]), algbw_gbps=float(cols[1]), busbw_gbps=float(cols[2]),
                  wrong=int(float(cols[3])))


def parse(text: str) -> Table:
    """The table in ``text``; raises ValueError on a row it cannot read."""
    rows: list[Row] = []
    nranks, version = 0, None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("# nccl-tests version"):
            version = s.split()[3]
        elif s.startswith("#  Rank") or s.startswith("# Rank"):
            nranks += 1
        elif s and not s.startswith("#"):
            cols = s.split()
            if len(cols) < 13:
                raise ValueError(f"not an nccl-tests row: {line!r}")
            rows.append(Row(size_bytes=int(cols[0]), count=int(cols[1]), dtype=cols[2], redop=cols[3],
                            root=int(cols[4]), out_of_place=_result(cols[5:9]), in_place=_result(cols[9:13])))
    return Table(rows=rows, nranks=nranks, version=version)
