"""Markdown table of a scripts/same_figures.sh folder: each figure's median with the old and the new code, their
ratio, and the spread of each side's own runs (max/min - 1), so a change reads against the machine's noise.

    python benchmarks/same_figures_table.py OUTDIR [OUTDIR ...] > table.md
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from gpuprobe.results.io import load_results
from gpuprobe.results.model import Results


def _figures(res: Results) -> dict[tuple, float]:
    out = {}
    for m in res.measurements:
        if m.status == "ok" and m.value is not None:
            out[(m.probe, m.src or "", m.dst or "", m.size_bytes or 0, tuple(m.ranks or []))] = m.value
    return out


def _spread(values: list[float]) -> float:
    return max(values) / min(values) - 1 if min(values) > 0 else float("nan")


def table(folder: Path) -> list[str]:
    runs: dict[str, list[dict[tuple, float]]] = {"old": [], "new": []}
    for side in runs:
        for f in sorted(folder.glob(f"{side}-*.json")):
            runs[side].append(_figures(load_results(f)))
    keys = [k for k in runs["old"][0] if all(k in r for side in runs.values() for r in side)]
    rows = [f"### {folder.name}: {len(runs['old'])} runs of the old code, {len(runs['new'])} of the new, alternating",
            "", "| figure | route | size | old (median of runs) | new | new / old | old runs' spread | "
            "new runs' spread |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for k in keys:
        old = [r[k] for r in runs["old"]]
        new = [r[k] for r in runs["new"]]
        o, n = statistics.median(old), statistics.median(new)
        route = "→".join(x for x in (k[1], k[2]) if x) or ",".join(map(str, k[4]))
        rows.append(f"| {k[0]} | {route} | {k[3]:,} | {o:.4g} | {n:.4g} | {n / o:.3f} | {100 * _spread(old):.1f} % "
                    f"| {100 * _spread(new):.1f} % |")
    return [*rows, ""]


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print("\n".join(table(Path(arg))))
