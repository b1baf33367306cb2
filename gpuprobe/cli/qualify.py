"""``gpuprobe qualify``: run the probes (or read a results file) and judge every figure and link."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import typer
from rich.text import Text

from gpuprobe.cli.output import Output
from gpuprobe.report.terminal_qualify import COLOURS, checks_table, outliers_table, skipped_lines, verdict_line
from gpuprobe.results.io import load_results
from gpuprobe.results.qualification import Qualification


def qualify(
    input_: Path | None = typer.Option(None, "--input", help="Judge this results file instead of probing."),
    thresholds: Path | None = typer.Option(None, "--thresholds", help="Thresholds file (TOML or JSON)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the probe results here (JSON)."),
    json_: bool = typer.Option(False, "--json", help="Print the qualification as JSON on stdout."),
    junit: Path | None = typer.Option(None, "--junit", help="Write JUnit XML here (one testcase per check)."),
    prometheus: Path | None = typer.Option(None, "--prometheus", help="Write a Prometheus textfile here."),
    tests: list[str] = typer.Option([], "-t", "--tests", help="Probe key, prefix, group or index (repeatable)."),
    quick: bool = typer.Option(False, "--quick", help="64 MiB buffers, fewer copies and a shorter sweep."),
    gpus: str | None = typer.Option(None, "--gpus", help="GPU indices to probe, e.g. 0,1,2 (default: all)."),
    buffer_mib: int | None = typer.Option(None, "-b", "--buffer-size", help="MiB per copy (default 512)."),
    samples: int | None = typer.Option(None, "--samples", help="Timed samples per figure (default 3)."),
    wide: bool = typer.Option(False, "--wide", help="Full-width tables, whatever the terminal's width."),
) -> None:
    """Qualify a GPU server: every figure against the expectation of its link, link health, outliers.

    Expectations come from the detected links: PCIe generation x width at the link's maximum, NVLink
    version x active links, the GPU's datasheet HBM bandwidth, times a documented efficiency. Default band:
    WARN below 85 %, FAIL below 75 % of the expectation. Link health: PCIe below its maximum generation
    or width, replay counter, NVLinks down, peer access missing where NVML says P2P is possible, ECC
    errors, persistence mode. Each WARN/FAIL names the likely cause and the next step.

    Thresholds file (TOML or JSON): top-level warn, fail, replay_fail, outlier_below_median,
    nvlinks_expected; [tests.KEY] (a probe or check key, or a glob) with warn, fail, expected, skip;
    [gpus."REGEX"] (matched in the GPU name) with the same keys and its own [gpus."REGEX".tests.KEY].

    A cluster results file (probe under torchrun, srun or mpirun) is also judged node by node: a node 10 % or
    more worse than the cluster median on any figure, missing, or with weak links to most peers is FAIL and
    listed on the 'drain: node3,node7' line; a weak link alone is WARN.

    Exit codes: 0 PASS, 10 WARN, 11 FAIL; 1 a bad file, 2 bad usage, 3 no GPU (and no --input).
    """
    from gpuprobe.qualify import judge, load_thresholds
    from gpuprobe.qualify.outputs import to_json, to_junit, to_prometheus

    out = Output(json_mode=json_, wide=wide)
    limits = load_thresholds(thresholds) if thresholds is not None else None
    environment = None
    if input_ is not None:
        results = load_results(input_)
        source = str(input_)
    else:
        results = _probe(out, tests, quick, gpus, buffer_mib, samples, output)
        source = str(output) if output else "live run"
        environment = {k: v for k, v in os.environ.items() if k.startswith("NCCL_")}
    q = judge(results, limits, source=source, environment=environment)
    if results.cluster is not None:
        from gpuprobe.qualify.cluster import add_cluster

        add_cluster(q, results.cluster)

    if junit is not None:
        _write_text(junit, to_junit(q))
    if prometheus is not None:
        _write_text(prometheus, to_prometheus(q))
    if json_:
        print(to_json(q), end="")
    else:
        _show(out, q)
    for path, what in ((output, "results"), (junit, "JUnit XML"), (prometheus, "Prometheus textfile")):
        if path is not None and (path != output or input_ is None):
            out.info(f"{what} written to {path}")
    if json_:
        if q.cluster is not None:
            from gpuprobe.report.terminal_cluster import drain_line

            out.info(drain_line(q.cluster))
        out.info(verdict_line(q))
    if input_ is None:
        from gpuprobe.probes.run import missing_dependency

        missing = missing_dependency(results)
        if missing is not None:  # the qualification is incomplete: that comes before its verdict
            raise missing
    if q.exit_code:
        raise typer.Exit(q.exit_code)


def _probe(out: Output, tests: list[str], quick: bool, gpus: str | None, buffer_mib: int | None,
           samples: int | None, output: Path | None):
    from gpuprobe.cli.probe import _run_with_progress, no_cuda, probe_options

    results = _run_with_progress(out, probe_options(tests, quick, gpus, buffer_mib, samples), output)
    reason = results.cuda_skip_reason()
    if reason is not None and not any(m.status != "waived" for m in results.measurements):
        raise no_cuda(reason, "judge a recorded results file ('gpuprobe qualify --input RESULTS.json')")
    return results


def _write_text(path: Path, text: str) -> None:
    """Write atomically (a textfile collector must never read half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _show(out: Output, q: Qualification) -> None:
    out.data(checks_table(q), keys=3)
    for line in skipped_lines(q):
        out.data(Text(line, style="dim"))
    table = outliers_table(q)
    if table is not None:
        out.data(table)
    if q.cluster is not None:
        from gpuprobe.report.terminal_cluster import cluster_findings_table, drain_line

        out.data(cluster_findings_table(q.cluster))
        out.data(Text(drain_line(q.cluster), style="bold red" if q.cluster.drain else "green"))
    out.data(Text(verdict_line(q), style=COLOURS.get(q.verdict, "")))
