"""``gpuprobe probe`` started by torchrun, srun or mpirun: this node's part of a cluster run."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from gpuprobe.cli.output import Output
from gpuprobe.cluster.launch import Launch, node_name
from gpuprobe.errors import UsageError
from gpuprobe.options import ProbeOptions


def probe_cluster(out: Output, launch: Launch, options: ProbeOptions, output: Path | None, timeout_s: float,
                  every_row: bool) -> None:
    """Run this node's part; rank 0 shows and writes the merged file (exit 4 when a node or a figure failed)."""
    from gpuprobe.cluster.run import run_cluster

    if not timeout_s > 0:
        raise UsageError(f"--cluster-timeout must be more than 0 seconds (got {timeout_s:g})")
    me = node_name()

    def progress(label: str) -> None:
        if label.startswith("cluster:"):
            out.info(f"[{me}] {label}")

    results = run_cluster(launch, options, output=output, timeout_s=timeout_s, progress=progress, argv=sys.argv)
    if results is None:
        out.info(f"[{me}] done (rank {launch.rank}); rank 0 writes the merged results")
        return
    from gpuprobe.cli.probe import _show

    _show(out, results, every_row)
    if output:
        out.info(f"[{me}] cluster results written to {output}")
    for p in results.problems:
        out.warn(p)
    if results.status == "partial":
        raise typer.Exit(4)
