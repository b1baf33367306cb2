"""``gpuprobe compare A.json B.json``: the same tests side by side, the change and whether it is real."""

from __future__ import annotations

from pathlib import Path

import typer

from gpuprobe.cli.output import Output
from gpuprobe.importers import load_any
from gpuprobe.report.compare import compare_results, comparison_data, comparison_table


def compare(
    a: Path = typer.Argument(..., metavar="A", help="Baseline results file (or another tool's output)."),
    b: Path = typer.Argument(..., metavar="B", help="Results file compared with A."),
    k: float = typer.Option(2.0, "--k", help="Spread factor: |B-A| must exceed k x combined stdev."),
    floor_pct: float = typer.Option(5.0, "--floor-pct", help="Change that counts when a side has one figure."),
    only_changes: bool = typer.Option(False, "--only-changes", help="Show only changes beyond the spread."),
    json_mode: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Match the tests of A and B (probe, src, dst, size, ranks) and show the change of each median.

    A change is real ("better"/"worse") when the min..max ranges of the samples do not overlap and |B-A| is
    more than k x sqrt(stdev_A^2 + stdev_B^2); when a side is a single figure (imported outputs), when
    |change| > --floor-pct. Tests found in only one file are listed."""
    out = Output(json_mode=json_mode)
    cmp = compare_results(load_any(a), load_any(b), a.name, b.name, k=k, floor_pct=floor_pct)
    if json_mode:
        out.data(comparison_data(cmp))
        return
    out.data(comparison_table(cmp, only_significant=only_changes))
    sig = cmp.significant
    out.data(f"{len(cmp.rows)} tests matched; {len(sig)} changed beyond the spread "
             f"({sum(1 for r in sig if r.better)} better, {sum(1 for r in sig if r.better is False)} worse).")
    if any(not r.size_matched for r in cmp.rows):
        out.data("* matched across sizes: one file does not record its buffer size.")
    for label, only in ((a.name, cmp.only_a), (b.name, cmp.only_b)):
        if only:
            out.data(f"only in {label} ({len(only)}): " + "; ".join(only[:8]) + (" ..." if len(only) > 8 else ""))
