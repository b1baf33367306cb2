"""Two results files side by side: the same tests matched, the change, and whether it exceeds the noise.

Matching: a measurement of A matches one of B with the same probe key, source, destination, traffic kind,
message size and GPU group (``ranks``). When a file does not record the size (nvbandwidth's outputs do not
print their buffer size) a test that is otherwise equal and unique matches across sizes, and the row says so.
A cluster file (``probe`` under torchrun, srun or mpirun) is compared node by node: each node's own figures are
scoped by its name (node ``a`` of one file against node ``a`` of the other), the node-to-node links and the
all-reduce over the nodes by ``cluster``. A cluster file against a single-node file compares the single node with
the cluster file's own figures (those of its rank 0, as in any results file).

Change: ``change_pct = (B − A) / A × 100`` on the medians. ``better`` follows the unit: higher is better for
GB/s, lower is better for times (µs, ns).

Whether a change is real (``exceeds_spread``):
- both sides have at least two samples: the change counts when the two min…max ranges do not overlap **and**
  |B − A| > k × sqrt(stdev_A² + stdev_B²) (k = 2 by default; population stdev of the samples). Both must hold,
  so a single outlying sample cannot make a change look real;
- either side is a single figure (an imported nvbandwidth or nccl-tests value, or n = 1): its spread is unknown,
  so the change counts when |change_pct| exceeds a floor (5 % by default), and ``basis`` says so.
Tests that are only in one file, or not measured (waived, failed) in one, are listed separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rich.console import JustifyMethod
from rich.table import Table as RichTable

from gpuprobe.report.fmt import ranks_label, safe, size_label
from gpuprobe.results.model import Measurement, Results

COMPARISON_KIND = "gpuprobe.comparison"
CLUSTER_SCOPE = "cluster"
"""The scope of a cluster file's node-to-node links and all-reduce over its nodes."""
Key = tuple[str | None, str, str | None, str | None, str, int | None, tuple[int, ...]]
"""(scope, probe, src, dst, traffic, size in bytes, ranks)."""


@dataclass
class Side:
    value: float | None
    unit: str
    status: str
    n: int = 0
    min: float | None = None
    max: float | None = None
    stdev: float | None = None
    reason: str | None = None


@dataclass
class Row:
    probe: str
    src: str | None
    dst: str | None
    traffic: str
    size_bytes: int | None
    ranks: list[int] | None
    unit: str
    a: Side
    b: Side
    change_pct: float | None
    better: bool | None
    """True: B is better than A (by the unit's direction); None when either is missing or equal."""
    exceeds_spread: bool | None
    basis: str
    """How ``exceeds_spread`` was decided (or why it could not be)."""
    size_matched: bool = True
    """False when matched across sizes because one file does not record its size."""
    scope: str | None = None
    """The node a figure belongs to in a cluster file, ``cluster`` for its links and all-reduce over the nodes,
    None in a single-node file."""

    @property
    def route(self) -> str:
        return _route(self.scope, self.src, self.dst, self.ranks)


def _route(scope: str | None, src: str | None, dst: str | None, ranks: list[int] | None) -> str:
    if ranks:
        where = ("nodes " if scope == CLUSTER_SCOPE else "GPUs ") + ranks_label(ranks)
    elif src is None and dst is None:
        where = "—"
    else:
        where = f"{src} → {dst}"
    return where if scope in (None, CLUSTER_SCOPE) else f"{scope}: {where}"


@dataclass
class Comparison:
    a: str
    b: str
    k: float
    floor_pct: float
    rows: list[Row] = field(default_factory=list)
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    kind: str = COMPARISON_KIND

    @property
    def significant(self) -> list[Row]:
        return [r for r in self.rows if r.exceeds_spread]


def _key(scope: str | None, m: Measurement) -> Key:
    return (scope, m.probe, m.src, m.dst, m.traffic, m.size_bytes, tuple(m.ranks or ()))


def _scoped(res: Results, by_node: bool) -> list[tuple[str | None, Measurement]]:
    """Every measurement of a file with its scope: none for the file's own (rank 0's in a cluster file); with
    ``by_node`` (two cluster files) each node's own, scoped by the node's name, and the node-to-node links and
    all-reduce over the nodes, scoped ``cluster``."""
    if res.cluster is None or not by_node:
        return [(None, m) for m in res.measurements]
    out: list[tuple[str | None, Measurement]] = []
    for node in res.cluster.nodes:
        if node.results is not None:
            out += [(node.name, m) for m in node.results.measurements]
    out += [(CLUSTER_SCOPE, m) for m in (*res.cluster.links, *res.cluster.collectives)]
    return out


def _describe(k: Key) -> str:
    scope, probe, src, dst, traffic, size, ranks = k
    parts = [probe]
    if ranks or src or dst:
        parts.append(_route(scope, src, dst, list(ranks) or None))
    elif scope not in (None, CLUSTER_SCOPE):
        parts.append(f"{scope}:")
    if traffic == "bidirectional" and "bidirectional" not in probe:
        parts.append("bidirectional")
    if size is not None:
        parts.append(f"{size} B")
    return " ".join(parts)


def _side(m: Measurement) -> Side:
    s = m.stat
    return Side(value=m.value if m.status == "ok" else None, unit=m.unit, status=m.status, n=s.n if s else 0,
                min=s.min if s else None, max=s.max if s else None, stdev=s.stdev if s else None, reason=m.reason)


def _judge(a: Side, b: Side, k: float, floor_pct: float) -> tuple[float | None, bool | None, str]:
    if a.value is None or b.value is None:
        return None, None, "not measured in both files"
    if a.value == 0:
        return None, None, "A is 0: no relative change"
    change = (b.value - a.value) / a.value * 100
    if (a.n >= 2 and b.n >= 2 and a.min is not None and a.max is not None and b.min is not None
            and b.max is not None and a.stdev is not None and b.stdev is not None):
        apart = a.max < b.min or b.max < a.min
        sigma = math.sqrt(a.stdev ** 2 + b.stdev ** 2)
        beyond = abs(b.value - a.value) > k * sigma
        basis = (f"ranges {'apart' if apart else 'overlap'}; |Δ| {abs(b.value - a.value):.3g} "
                 f"{'>' if beyond else '≤'} {k:g}σ = {k * sigma:.3g}")
        return change, apart and beyond, basis
    return change, abs(change) > floor_pct, f"single figure on one side: |Δ| vs {floor_pct:g} % floor"


def compare_results(a: Results, b: Results, a_label: str = "A", b_label: str = "B", k: float = 2.0,
                    floor_pct: float = 5.0) -> Comparison:
    """Match every measurement of ``a`` with ``b`` and judge each change (see the module docstring)."""
    cmp = Comparison(a_label, b_label, k, floor_pct)
    bmap: dict[Key, Measurement] = {}
    by_node = a.cluster is not None and b.cluster is not None
    for scope, m in _scoped(b, by_node):
        bmap.setdefault(_key(scope, m), m)
    used: set[Key] = set()
    for scope, m in _scoped(a, by_node):
        key = _key(scope, m)
        other, size_matched = bmap.get(key), True
        if other is None or key in used:
            other = None
            cands = [(k2, m2) for k2, m2 in bmap.items() if k2[:5] == key[:5] and k2[6] == key[6]
                     and k2 not in used and (k2[5] is None or key[5] is None)]
            if len(cands) == 1:
                key2, other = cands[0]
                size_matched = False
                used.add(key2)
        else:
            used.add(key)
        if other is None:
            if m.status == "ok" or m.src is not None or m.ranks is not None:
                cmp.only_a.append(_describe(key))
            continue
        sa, sb = _side(m), _side(other)
        change, exceeds, basis = _judge(sa, sb, k, floor_pct)
        higher = m.unit == "GB/s"
        better = None if change is None or change == 0 else ((change > 0) == higher)
        cmp.rows.append(Row(m.probe, m.src, m.dst, m.traffic, m.size_bytes if size_matched else
                            (m.size_bytes or other.size_bytes), m.ranks, m.unit, sa, sb, change, better,
                            exceeds, basis, size_matched, scope))
    for key, m in bmap.items():
        if key not in used and (m.status == "ok" or m.src is not None or m.ranks is not None):
            cmp.only_b.append(_describe(key))
    return cmp


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}" if unit == "ns" or abs(v) >= 1000 else f"{v:,.2f}"



def shown_rows(cmp: Comparison, only_significant: bool = False, limit: int | None = None) -> list[Row]:
    """The rows a table shows: every row, or only the changes beyond the spread and the tests measured in one
    file only (``only_significant``, or when there are more than ``limit`` rows)."""
    if only_significant or (limit is not None and len(cmp.rows) > limit):
        return [r for r in cmp.rows if r.exceeds_spread or (r.change_pct is None and (r.a.value is None) != (
            r.b.value is None))]
    return list(cmp.rows)


def comparison_table(cmp: Comparison, only_significant: bool = False, rows: list[Row] | None = None) -> RichTable:
    t = RichTable(title=safe(f"{cmp.a} → {cmp.b} (Δ = (B − A) / A; real = beyond the spread of the samples, see "
                               f"--help)"), title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("test", "left"), ("route", "left"), ("size", "right"), ("unit", "left"), ("A", "right"), ("B", "right"),
        ("Δ %", "right"), ("", "left"))
    for col, just in columns:
        t.add_column(col, justify=just, no_wrap=col in ("A", "B", "Δ %"))
    for r in (rows if rows is not None else shown_rows(cmp, only_significant)):
        a = _fmt(r.a.value, r.unit) if r.a.value is not None else f"[dim]{r.a.status}[/dim]"
        b = _fmt(r.b.value, r.unit) if r.b.value is not None else f"[dim]{r.b.status}[/dim]"
        delta = "—" if r.change_pct is None else f"{r.change_pct:+.1f}"
        if r.exceeds_spread:
            colour = "green" if r.better else "red"
            verdict = f"[{colour}]{'better' if r.better else 'worse'}[/{colour}]"
            delta = f"[{colour}]{delta}[/{colour}]"
        elif r.change_pct is not None:
            verdict = "[dim]within noise[/dim]"
        else:
            verdict = ""
        size = size_label(r.size_bytes) + ("" if r.size_matched else "*")
        unit = "µs" if r.unit == "us" else safe(r.unit)
        t.add_row(safe(r.probe), safe(r.route), size, unit, a, b, delta, verdict)
    return t


def comparison_data(cmp: Comparison) -> dict[str, Any]:
    """Plain JSON data of a comparison (``gpuprobe compare --json``)."""
    from gpuprobe.results.serde import to_data

    data = to_data(cmp)
    for row, r in zip(data["rows"], cmp.rows, strict=True):
        row["route"] = r.route
    data["summary"] = {"matched": len(cmp.rows), "exceeds_spread": len(cmp.significant),
                       "better": sum(1 for r in cmp.significant if r.better),
                       "worse": sum(1 for r in cmp.significant if r.better is False),
                       "only_a": len(cmp.only_a), "only_b": len(cmp.only_b)}
    return data
