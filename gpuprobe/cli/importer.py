"""``gpuprobe import``: another tool's output (nvbandwidth, nccl-tests, nvidia-smi topo -m) as a results file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from gpuprobe.cli.output import Output
from gpuprobe.errors import UsageError
from gpuprobe.importers import KINDS, import_file
from gpuprobe.report.fmt import plain
from gpuprobe.report.terminal import allreduce_table, summary_table
from gpuprobe.results.io import save_results
from gpuprobe.results.serde import to_data


def import_output(
    file: Path = typer.Argument(..., metavar="FILE", help="The tool's output (text or JSON)."),
    kind: str | None = typer.Option(None, "--kind", help="nvbandwidth, nccl-tests or topo (default: detected)."),
    output: Path | None = typer.Option(None, "-o", "--output", metavar="RESULTS.json", help="Write a results file."),
    json_mode: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    wide: bool = typer.Option(False, "--wide", help="Full-width tables, whatever the terminal's width."),
    all_: bool = typer.Option(False, "--all", help="Every row (default: the pairs' all-reduce at its largest size)."),
) -> None:
    """Read nvbandwidth (text or -j JSON), nccl-tests (text or -J JSON) or 'nvidia-smi topo -m' text into
    gpuprobe's result model, so report, compare, qualify and recommend work on it."""
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown --kind {kind!r}; use one of {', '.join(KINDS)}")
    out = Output(json_mode=json_mode, wide=wide)
    res = import_file(file, kind)
    if output is not None:
        save_results(res, output)
        out.info(f"{res.run.source} output imported: {len(res.measurements)} measurements, "
                 f"{len(res.devices)} GPUs -> {output}")
    if json_mode:
        out.data(to_data(res))
    elif output is None:
        if res.measurements:
            out.data(summary_table(res), keys=2)
            t = allreduce_table(res, every_size=all_)
            if t is not None:
                out.data(t)
        elif res.topology:
            pairs = res.topology.pairs if all_ else res.topology.pairs[:12]
            more = "" if len(pairs) == len(res.topology.pairs) else f", and {len(res.topology.pairs) - 12} more (--all)"
            out.data(Text(plain(f"{res.topology.gpu_count} GPUs, {len(res.topology.pairs)} pairs: " + ", ".join(
                f"GPU{p.a}-GPU{p.b} {p.path_class}" for p in pairs) + more)))
