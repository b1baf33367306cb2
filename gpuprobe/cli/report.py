"""``gpuprobe report``: one self-contained HTML file and/or Markdown (+ PNGs) from results files."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import typer

from gpuprobe import __version__
from gpuprobe.cli.output import Output
from gpuprobe.errors import MissingDependency, UsageError
from gpuprobe.importers import load_any
from gpuprobe.results.model import Results
from gpuprobe.results.qualification import load_qualification
from gpuprobe.validate.store import load_runs


def _qualify(results: Results) -> Any | None:
    """The qualification of ``results`` when gpuprobe.qualify is installed, else None."""
    try:
        module = importlib.import_module("gpuprobe.qualify")
    except ImportError:
        return None
    q = module.judge(results)
    if results.cluster is not None:
        importlib.import_module("gpuprobe.qualify.cluster").add_cluster(q, results.cluster)
    return q


def report(
    files: list[Path] = typer.Argument(..., metavar="RESULTS...", help="Results files (gpuprobe's, or an "
                                       "nvbandwidth / nccl-tests / nvidia-smi topo -m output, imported on the fly)."),
    validation: list[Path] = typer.Option([], "--validation", metavar="FILE",
                                          help="Validation file from 'gpuprobe validate' (repeatable)."),
    html_out: Path | None = typer.Option(None, "--html", metavar="FILE", help="Write one self-contained HTML file."),
    md_out: Path | None = typer.Option(None, "--markdown", metavar="FILE",
                                       help="Write Markdown, with its figures as PNG files beside it."),
    qualify: bool = typer.Option(True, "--qualify/--no-qualify", help="Judge each file and show the verdicts."),
    qualification: list[Path] = typer.Option([], "--qualification", metavar="FILE", help="A saved qualification "
                                             "('qualify --qualification-out') shown for the results file in the same "
                                             "position (with its level, health timeline and burn-in) instead of "
                                             "judging it again (repeatable)."),
) -> None:
    """Write a report: summary, host and software, topology, bandwidth heatmaps, latency, all-reduce curves,
    qualification verdicts and predicted vs measured for validation runs. Several files appear side by side."""
    out = Output()
    if html_out is None and md_out is None:
        raise UsageError("nothing to write: pass --html FILE and/or --markdown FILE")
    try:
        from gpuprobe.report.content import build_document
        from gpuprobe.report.html import write_html
        from gpuprobe.report.markdown import render_markdown
    except ImportError:
        raise MissingDependency.of("matplotlib", "reports need matplotlib") from None
    runs = [(str(f), load_any(f)) for f in files]
    vals = [(v.name, load_runs(v)) for v in validation]
    if len(qualification) > len(runs):
        raise UsageError(f"{len(qualification)} --qualification files for {len(runs)} results files: give at most "
                         "one per results file, in the same order")
    saved = [load_qualification(p) for p in qualification]
    quals = [saved[i] if i < len(saved) else _qualify(r) if qualify else None for i, (_, r) in enumerate(runs)]
    doc = build_document(runs, vals, quals)
    footer = f"gpuprobe {__version__} · from " + ", ".join(f.name for f in [*files, *validation, *qualification])
    if html_out is not None:
        write_html(doc, html_out, footer)
        out.info(f"HTML report written to {html_out}")
    if md_out is not None:
        written = render_markdown(doc, md_out, footer)
        out.info(f"Markdown report written to {md_out} (+ {len(written) - 1} PNG figures)")
