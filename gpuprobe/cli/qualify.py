"""``gpuprobe qualify``: run the probes (or read a results file) and judge every figure and link."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.text import Text

from gpuprobe.cli.bounds import within
from gpuprobe.cli.output import Output
from gpuprobe.cli.qualify_levels import node_hook, run_level_cli
from gpuprobe.errors import UsageError
from gpuprobe.qualify.node_outputs import FORMATS
from gpuprobe.report.fmt import plain
from gpuprobe.report.terminal_qualify import (
    COLOURS,
    checks_table,
    level_lines,
    outliers_table,
    skipped_lines,
    verdict_line,
)
from gpuprobe.results.io import load_results, output_target, write_atomic
from gpuprobe.results.qualification import Qualification, load_qualification


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
    buffer_mib: int | None = typer.Option(None, "-b", "--buffer-size",
        callback=within(1, 1 << 20),
        help="MiB per copy (default 512)."),
    samples: int | None = typer.Option(None, "--samples",
        callback=within(1, 100_000),
        help="Timed samples per figure (default 3)."),
    wide: bool = typer.Option(False, "--wide", help="Full-width tables, whatever the terminal's width."),
    level: str | None = typer.Option(None, "--level", help="quick (<= 30 s), standard (<= 3 min: the suite "
                                     "three times) or burn-in (sustained load for --duration); each samples NVML "
                                     "health once a second."),
    duration: str = typer.Option("10m", "--duration", help="Burn-in load time, 1m ... 4h (10m or more advised)."),
    format_: str = typer.Option("text", "--format", help="text, json, slurm (one line; exit 0 PASS/WARN, 11 "
                                "FAIL) or npd (node-problem-detector plugin: exit 0 OK, 1 problem, 2 unknown)."),
    qualification_out: Path | None = typer.Option(None, "--qualification-out", help="Also write the "
                                                  "qualification (JSON, with the health timeline) here."),
    from_qualification: Path | None = typer.Option(None, "--from-qualification", help="Show a saved "
                                                   "qualification (from --qualification-out or --json) again."),
    force: bool = typer.Option(False, "--force", help="Overwrite -o FILE even when it holds more measurements."),
) -> Qualification | None:
    """Qualify a GPU server: every figure against the expectation of its link, link health, outliers.

    Expectations come from the detected links: PCIe generation x width at the link's maximum, NVLink
    version x active links, the GPU's datasheet HBM bandwidth, times a documented efficiency. Default band:
    WARN below 85 %, FAIL below 75 % of the expectation. Link health: PCIe below its maximum generation
    or width, replay counter, NVLinks down, peer access missing where NVML says P2P is possible, ECC
    errors, persistence mode. Each WARN/FAIL names the likely cause and the next step.

    Thresholds file (TOML or JSON): top-level warn, fail, replay_fail, outlier_below_median,
    nvlinks_expected; [tests.KEY] (a probe or check key, or a glob) with warn, fail, expected, skip;
    [gpus."REGEX"] (matched in the GPU name) with the same keys and its own [gpus."REGEX".tests.KEY].

    Levels (--level): quick (the quick suite, <= 30 s), standard (the full suite three times, stability
    judged, <= 3 min), burn-in (matmul alone, then matmul + copies + all-reduce on every GPU for --duration;
    the matmul's rate under load / alone, target >= 0.90). Every level samples NVML once a second (clocks,
    power, temperature, throttle reasons, PCIe replays, ECC, row remaps, XID events) and judges the timeline.
    A figure below its fail band is measured again before it is called FAIL (confirmed).

    A cluster results file (probe under torchrun, srun or mpirun) is also judged node by node: a node 10 % or
    more worse than the cluster median on any figure, missing, or with weak links to most peers is FAIL and
    listed on the 'drain: node3,node7' line; a weak link alone is WARN.

    Exit codes: 0 PASS, 10 WARN, 11 FAIL; 1 a bad file, 2 bad usage, 3 no GPU (and no --input).
    --format slurm: 0 PASS or WARN, 11 FAIL (errors keep their codes). --format npd: 0 OK (PASS or WARN),
    1 problem (FAIL), 2 unknown (any error).
    """
    from gpuprobe.qualify import judge, load_thresholds

    fmt = "json" if json_ else format_
    if fmt not in FORMATS and fmt != "quiet":  # quiet: the slurm and npd lines print nothing else on stdout
        raise UsageError(f"--format {format_!r}: choose one of {', '.join(FORMATS)}")
    if fmt in ("slurm", "npd"):
        node_hook(fmt, lambda: qualify(
            input_=input_, thresholds=thresholds, output=output, json_=False, junit=junit, prometheus=prometheus,
            tests=tests, quick=quick, gpus=gpus, buffer_mib=buffer_mib, samples=samples, wide=wide, level=level,
            duration=duration, format_="quiet", qualification_out=qualification_out,
            from_qualification=from_qualification, force=force))
        return None
    out = Output(json_mode=fmt in ("json", "quiet"), wide=wide)
    for path, what in ((junit, "the JUnit XML"), (prometheus, "the Prometheus textfile"),
                       (qualification_out, "the qualification")):
        if path is not None:
            output_target(path, what)  # a path that cannot be written is refused before the probes run
    limits = load_thresholds(thresholds) if thresholds is not None else None
    environment = None
    results = None
    if from_qualification is not None:
        q = load_qualification(from_qualification)
        _finish(out, fmt, q, junit, prometheus, qualification_out)
        if q.exit_code and fmt != "quiet":  # the saved verdict's exit code, as when it was judged
            raise typer.Exit(q.exit_code)
        return q
    if level is not None:
        q, results, output = run_level_cli(out, level, duration, limits, tests, gpus, buffer_mib, samples, output,
                                           force)
        _finish(out, fmt, q, junit, prometheus, qualification_out, output)
        _check_missing(results)
        if q.exit_code and fmt != "quiet":
            raise typer.Exit(q.exit_code)
        return q
    if input_ is not None:
        results = load_results(input_)
        source = str(input_)
    else:
        results, output = _probe(out, tests, quick, gpus, buffer_mib, samples, output, force)
        source = str(output) if output else "live run"
        environment = {k: v for k, v in os.environ.items() if k.startswith("NCCL_")}
    q = judge(results, limits, source=source, environment=environment)
    if results.cluster is not None:
        from gpuprobe.qualify.cluster import add_cluster

        add_cluster(q, results.cluster)
    q.level = "input" if input_ is not None else "single"
    _finish(out, fmt, q, junit, prometheus, qualification_out, output if input_ is None else None)
    if input_ is None:
        _check_missing(results)
    if q.exit_code and fmt != "quiet":
        raise typer.Exit(q.exit_code)
    return q


def _check_missing(results) -> None:
    from gpuprobe.probes.run import missing_dependency

    missing = missing_dependency(results)
    if missing is not None:  # the qualification is incomplete: that comes before its verdict
        raise missing


def _finish(out: Output, fmt: str, q: Qualification, junit: Path | None, prometheus: Path | None,
            qualification_out: Path | None, output: Path | None = None) -> None:
    from gpuprobe.qualify.outputs import to_json, to_junit, to_prometheus

    if junit is not None:
        write_atomic(junit, to_junit(q), "the JUnit XML")  # atomic: a collector never reads half a file
    if prometheus is not None:
        write_atomic(prometheus, to_prometheus(q), "the Prometheus textfile")
    if qualification_out is not None:
        write_atomic(qualification_out, to_json(q), "the qualification")
    if fmt == "json":
        print(to_json(q), end="")
    elif fmt == "text":
        _show(out, q)
    for path, what in ((output, "results"), (junit, "JUnit XML"), (prometheus, "Prometheus textfile"),
                       (qualification_out, "qualification")):
        if path is not None:
            out.info(f"{what} written to {path}")
    if fmt != "text":
        if q.cluster is not None:
            from gpuprobe.report.terminal_cluster import drain_line

            out.info(drain_line(q.cluster))
        out.info(verdict_line(q))


def _probe(out: Output, tests: list[str], quick: bool, gpus: str | None, buffer_mib: int | None,
           samples: int | None, output: Path | None, force: bool):
    from gpuprobe.cli.probe import _run_with_progress, no_cuda, probe_options

    results, output = _run_with_progress(out, probe_options(tests, quick, gpus, buffer_mib, samples), output, force)
    reason = results.cuda_skip_reason()
    if reason is not None and not any(m.status != "waived" for m in results.measurements):
        raise no_cuda(reason, "judge a recorded results file ('gpuprobe qualify --input RESULTS.json')")
    return results, output


def _show(out: Output, q: Qualification) -> None:
    out.data(checks_table(q), keys=3)
    for line in skipped_lines(q):
        out.data(Text(plain(line), style="dim"))
    table = outliers_table(q)
    if table is not None:
        out.data(table)
    if q.cluster is not None:
        from gpuprobe.report.terminal_cluster import cluster_findings_table, drain_line

        out.data(cluster_findings_table(q.cluster))
        out.data(Text(drain_line(q.cluster), style="bold red" if q.cluster.drain else "green"))
    for line in level_lines(q):
        out.data(Text(line, style="dim"))
    out.data(Text(verdict_line(q), style=COLOURS.get(q.verdict, "")))
