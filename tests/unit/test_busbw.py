"""busbw/algbw formulas against nccl-tests' definitions and a real nccl-tests capture (H100, one rank)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuprobe.errors import ResultsFileError
from gpuprobe.importers import nccl_tests
from gpuprobe.probes import busbw

DATA = Path(__file__).parent.parent / "data" / "nccl-tests"


@pytest.mark.parametrize(
    ("collective", "n", "factor"),
    [
        ("all_reduce", 1, 0.0), ("all_reduce", 2, 1.0), ("all_reduce", 4, 1.5), ("all_reduce", 8, 1.75),
        ("reduce_scatter", 8, 7 / 8), ("all_gather", 4, 0.75), ("alltoall", 2, 0.5), ("gather", 8, 7 / 8),
        ("scatter", 8, 7 / 8), ("broadcast", 8, 1.0), ("reduce", 8, 1.0), ("sendrecv", 2, 1.0), ("hypercube", 8, 1.0),
    ],
)
def test_bus_factor(collective: str, n: int, factor: float) -> None:
    assert busbw.bus_factor(collective, n) == pytest.approx(factor)


@pytest.mark.parametrize(
    ("collective", "expected"),
    [  # S for count=1024 float32 (4 B) elements per rank and n=8 ranks, as each *GetBw computes it
        ("all_reduce", 4096), ("broadcast", 4096), ("reduce", 4096), ("sendrecv", 4096),
        ("reduce_scatter", 4096 * 8), ("all_gather", 4096 * 8), ("alltoall", 4096 * 8),
        ("gather", 4096 * 8), ("scatter", 4096 * 8), ("hypercube", 4096 * 7),
    ],
)
def test_data_bytes(collective: str, expected: int) -> None:
    assert busbw.data_bytes(collective, 1024, 4, 8) == expected


def test_bandwidths_match_getbw() -> None:
    # AllReduceGetBw(count=2^28, typesize=4, sec=5 ms, nranks=8): base = 1 GiB / 1e9 / 5e-3; bus = base * 14/8
    alg, bus = busbw.bandwidths("all_reduce", 1 << 28, 4, 5e-3, 8)
    assert alg == pytest.approx((1 << 30) / 1e9 / 5e-3)
    assert bus == pytest.approx(alg * 14 / 8)
    assert busbw.allreduce_bandwidths(1 << 30, 5e-3, 8) == pytest.approx((alg, bus))
    alg, bus = busbw.bandwidths("all_gather", 1 << 20, 4, 1e-3, 4)
    assert alg == pytest.approx(4 * (1 << 22) / 1e9 / 1e-3) and bus == pytest.approx(alg * 0.75)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown collective"):
        busbw.bus_factor("allreduce", 2)
    with pytest.raises(ValueError, match="at least one rank"):
        busbw.bus_factor("all_reduce", 0)
    with pytest.raises(ValueError, match="positive"):
        busbw.algbw_gbps(8, 0.0)


def _printed(value: float, width: int = 6) -> float:
    """The value as nccl-tests prints it (common.cu getFloatStr: %.2f, else %.1f, else %.0f, else %.0e)."""
    for fmt in (f"%{width}.2f", f"%{width}.1f", f"%{width}.0f"):
        if len(fmt % value) <= width:
            return float(fmt % value)
    return float(f"%{width}.0e" % value)


def test_capture_text_algbw_column() -> None:
    """The text table, read by the importer, against the formulas: every printed algbw follows from its time."""
    res = nccl_tests.from_text((DATA / "nccl-tests-all_reduce-h100x1.txt").read_text())
    assert res.run.source == "nccl-tests" and res.run.options["tool_version"] == "2.19.6"
    assert {len(m.ranks or []) for m in res.measurements} == {1}
    for place in ("all_reduce", "all_reduce_out_of_place"):
        ms = [m for m in res.measurements if m.probe == place]
        assert [m.size_bytes for m in ms] == [8 << i for i in range(28)]
        for m in ms:
            assert m.size_bytes is not None and m.value is not None and m.algbw_gbps is not None
            assert m.status == "ok" and m.wrong_elements == 0 and "float sum" in m.notes[0]
            # the printed time is rounded to 0.01 µs, so the true algbw lies between these two
            slow, _ = busbw.allreduce_bandwidths(m.size_bytes, (m.value + 0.005) * 1e-6, 1)
            fast, bus = busbw.allreduce_bandwidths(m.size_bytes, (m.value - 0.005) * 1e-6, 1)
            assert _printed(slow) <= m.algbw_gbps <= _printed(fast), (m.size_bytes, m.value)
            assert bus == 0.0 == m.busbw_gbps
    big = next(m for m in res.measurements if m.probe == "all_reduce_out_of_place" and m.size_bytes == 1 << 30)
    assert big.value is not None  # 1 GiB device copy: the ≈1.5 TB/s of the README
    assert busbw.algbw_gbps(1 << 30, big.value * 1e-6) == pytest.approx(1505.4, rel=1e-3)


def test_capture_json_bandwidths() -> None:
    doc = json.loads((DATA / "nccl-tests-all_reduce-h100x1.json").read_text())
    nranks = len(doc["config"]["devices"])
    assert nranks == 1 and len(doc["results"]) == 13
    for r in doc["results"]:
        for key in ("out_of_place", "in_place"):
            res = r[key]
            alg, bus = busbw.bandwidths("all_reduce", r["count"], 4, res["time"] * 1e-6, nranks)
            assert alg == pytest.approx(res["alg_bw"], rel=1e-3, abs=1e-6)
            assert bus == res["bus_bw"] == 0.0


def test_parser_rejects_garbage() -> None:
    with pytest.raises(ResultsFileError, match="not an nccl-tests row"):
        nccl_tests.from_text("# header\n8 2 float sum\n")
