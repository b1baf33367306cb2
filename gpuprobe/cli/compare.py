"""``gpuprobe compare A.json B.json``: the same tests side by side, the change and whether it is real."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from gpuprobe.cli.bounds import within
from gpuprobe.cli.output import Output
from gpuprobe.importers import load_any
from gpuprobe.report.compare import compare_results, comparison_data, comparison_table, shown_rows
from gpuprobe.report.fmt import plain

SHOW_ROWS = 24
"""More matched tests than this: the table shows the changes beyond the spread, ``--all`` every test."""


def compare(
    a: Path = typer.Argument(..., metavar="A", help="Baseline results file (or another tool's output)."),
    b: Path = typer.Argument(..., metavar="B", help="Results file compared with A."),
    k: float = typer.Option(2.0, "--k",
        callback=within(0, 1e3),
        help="Spread factor: |B-A| must exceed k x combined stdev."),
    floor_pct: float = typer.Option(5.0, "--floor-pct",
        callback=within(0, 1e4),
        help="Change that counts when a side has one figure."),
    only_changes: bool = typer.Option(False, "--only-changes", help="Show only changes beyond the spread."),
    all_: bool = typer.Option(False, "--all", help=f"Every matched test (default: changes only beyond {SHOW_ROWS})."),
    json_mode: bool = typer.Option(False, "--json", help="Print one JSON object."),
    wide: bool = typer.Option(False, "--wide", help="Full-width tables, whatever the terminal's width."),
) -> None:
    """Match the tests of A and B (probe, src, dst, size, ranks) and show the change of each median.

    A change is real ("better"/"worse") when the min..max ranges of the samples do not overlap and |B-A| is
    more than k x sqrt(stdev_A^2 + stdev_B^2); when a side is a single figure (imported outputs), when
    |change| > --floor-pct. Tests found in only one file are listed."""
    out = Output(json_mode=json_mode, wide=wide)
    cmp = compare_results(load_any(a), load_any(b), a.name, b.name, k=k, floor_pct=floor_pct)
    if json_mode:
        out.data(comparison_data(cmp))
        return
    rows = shown_rows(cmp, only_changes, limit=None if all_ else SHOW_ROWS)
    out.data(comparison_table(cmp, rows=rows), keys=3)
    sig = cmp.significant
    out.data(Text(f"{len(cmp.rows)} tests matched; {len(sig)} changed beyond the spread "
                  f"({sum(1 for r in sig if r.better)} better, {sum(1 for r in sig if r.better is False)} worse)."))
    if len(rows) < len(cmp.rows):
        out.data(Text(f"{len(cmp.rows) - len(rows)} tests within the noise or measured in neither file are not "
                      "listed: --all lists them, --json has every figure."))
    if any(not r.size_matched for r in cmp.rows):
        out.data(Text("* matched across sizes: one file does not record its buffer size."))
    for label, only in ((a.name, cmp.only_a), (b.name, cmp.only_b)):
        if only:
            listed = only if all_ else only[:8]
            more = "" if len(listed) == len(only) else f"; and {len(only) - len(listed)} more (--all)"
            out.data(Text(plain(f"only in {label} ({len(only)}): " + "; ".join(listed) + more)))
