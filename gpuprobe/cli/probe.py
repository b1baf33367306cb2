"""``gpuprobe probe``: run the measurement suite and write a results file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from gpuprobe.cli.bounds import within
from gpuprobe.cli.output import Output
from gpuprobe.cli.signals import doing
from gpuprobe.errors import GpuprobeError, MissingDependency, NoGpu, install_hint
from gpuprobe.options import MiB, ProbeOptions
from gpuprobe.report import terminal
from gpuprobe.results.io import ResultsTarget, load_results
from gpuprobe.results.model import CUDA_SKIPPED, Results
from gpuprobe.results.serde import to_data

RECORDED = Path(__file__).resolve().parent.parent / "data" / "h100-probe-2026-11-25.json"
"""A real capture shipped with gpuprobe (one NVIDIA H100 80GB HBM3, 2026-11-25), shown where no GPU is."""


def probe(
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the results file here (JSON)."),
    tests: list[str] = typer.Option([], "-t", "--tests", help="Probe key, prefix, group or index (repeatable)."),
    list_: bool = typer.Option(False, "-l", "--list", help="List the probes and exit."),
    quick: bool = typer.Option(False, "--quick", help="64 MiB buffers, fewer copies and a shorter sweep."),
    gpus: str | None = typer.Option(None, "--gpus", help="GPU indices to probe, e.g. 0,1,2 (default: all)."),
    buffer_mib: int | None = typer.Option(None, "-b", "--buffer-size",
        callback=within(1, 1 << 20),
        help="MiB per copy (default 512)."),
    samples: int | None = typer.Option(None, "-i", "--samples",
        callback=within(1, 100_000),
        help="Timed samples per figure (default 3)."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the data check of the copies."),
    backend: str | None = typer.Option(None, "--backend", help="Collectives backend: nccl or gloo."),
    cpu_ranks: int | None = typer.Option(None, "--cpu-ranks",
        callback=within(1, 1024),
        help="Processes for the gloo all-reduce on CPU (1: the per-call overhead alone, as one GPU)."),
    ar_max: int | None = typer.Option(None, "--allreduce-max-bytes",
        callback=within(8, 1 << 40),
        help="Largest all-reduce message (bytes)."),
    input_: Path | None = typer.Option(None, "--input", help="Show an existing results file instead of probing."),
    force: bool = typer.Option(False, "--force", help="Overwrite -o FILE even when it holds more measurements."),
    json_: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
    wide: bool = typer.Option(False, "--wide", help="Full-width tables, whatever the terminal's width."),
    all_: bool = typer.Option(False, "--all", help="Every row (default: the pairs' all-reduce at its largest size)."),
    cluster_timeout: float = typer.Option(300.0, "--cluster-timeout", help="Under torchrun, srun or mpirun: seconds "
                                          "a node may be late or silent before it is named missing."),
) -> None:
    """Measure host<->GPU and GPU<->GPU bandwidth and latency, local HBM copy and all-reduce.

    Exit code 0 when every selected probe ran (or was waived), 4 when some failed or did not verify,
    3 when there is no GPU (the recorded capture shipped with gpuprobe is shown instead).
    Started by torchrun, srun or mpirun (one process per node), it probes every node and the links between
    them, and rank 0 writes one merged file (see README, Clusters).
    """
    from gpuprobe.probes import run as _run
    from gpuprobe.probes.core.registry import REGISTRY, select

    out = Output(json_mode=json_, wide=wide)
    if list_:
        specs = select(tests) if tests else REGISTRY
        out.data([{"index": REGISTRY.index(s), "key": s.key, "group": s.group, "unit": s.unit,
                   "description": s.description, "min_gpus": s.min_gpus} for s in specs] if json_
                 else terminal.probe_list_table(specs))
        return
    if input_ is not None:
        _show(out, load_results(input_), all_)
        return
    options = probe_options(tests, quick, gpus, buffer_mib, samples, verify=not no_verify,
                            collective_backend=backend, cpu_ranks=cpu_ranks, allreduce_max_bytes=ar_max)

    from gpuprobe.cluster.launch import detect

    launch = detect()
    if launch is not None:
        from gpuprobe.cli.probe_cluster import probe_cluster

        probe_cluster(out, launch, options, output, cluster_timeout, all_)
        return
    results, output = _run_with_progress(out, options, output, force)
    reason = results.cuda_skip_reason()
    ran_any = any(m.status != "waived" for m in results.measurements)
    if reason is not None and not ran_any:
        out.warn(f"{CUDA_SKIPPED}{reason}")
        if RECORDED.exists():
            out.info(f"Showing the recorded capture shipped with gpuprobe instead: {RECORDED.name} "
                     "(a real run on one NVIDIA H100 80GB HBM3, 2026-11-25)")
            _show(out, load_results(RECORDED), all_)
        raise no_cuda(reason, "'gpuprobe probe --tests all_reduce --backend gloo' runs the CPU collectives")
    _show(out, results, all_)
    if output:
        out.info(f"results written to {output}")
    missing = _run.missing_dependency(results)
    for p in results.problems:
        if missing is None or not missing.message.startswith(p.split(";")[0]):  # that one is the error below
            out.warn(p)
    if missing is not None:
        missing.message += " (the other probes ran" + (f"; results in {output})" if output else ")")
        raise missing
    if results.status == "partial":
        raise typer.Exit(4)


def no_cuda(message: str, elsewhere: str) -> GpuprobeError:
    """Why the CUDA probes did not run (exit 3): CuPy is missing (the hint installs it) or there is no GPU."""
    import importlib.util

    if importlib.util.find_spec("cupy") is None:
        hint = f"on the GPU machine, {install_hint('cupy')}; on a machine without a GPU, {elsewhere}"
        return MissingDependency(message, hint=hint)
    return NoGpu(message, hint=f"run on a machine with an NVIDIA GPU; here, {elsewhere}")


def probe_options(tests: list[str], quick: bool, gpus: str | None, buffer_mib: int | None, samples: int | None,
                  **more: object) -> ProbeOptions:
    """ProbeOptions from the command line's values; options left unset (None) keep their defaults."""
    kw: dict = {"tests": tests, "quick": quick, **{k: v for k, v in more.items() if v is not None}}
    if gpus:
        kw["gpus"] = _parse_gpus(gpus)
    if buffer_mib is not None:
        kw["buffer_size_bytes"] = buffer_mib * MiB
    if samples is not None:
        kw["samples"] = samples
    return ProbeOptions(**kw)


def _parse_gpus(text: str) -> list[int]:
    from gpuprobe.errors import UsageError

    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--gpus {text!r} is not a comma-separated list of GPU indices") from None


def _run_with_progress(out: Output, options: ProbeOptions, output: Path | None,
                       force: bool = False) -> tuple[Results, Path | None]:
    """Run the probes, writing ``output`` without losing an earlier file's measurements (see ``ResultsTarget``);
    returns the results and where they were written (None: nowhere). A run that measured nothing (every probe
    waived) leaves no results file behind."""
    target = ResultsTarget(output, force) if output is not None else None
    doing("the probe", target.write_to if target is not None else None)
    try:
        results = _run_probes(out, options, target.write_to if target is not None else None)
    except KeyboardInterrupt:
        _finish(out, target)
        raise
    if target is None:
        return results, None
    if not any(m.status != "waived" for m in results.measurements):
        target.discard()
        return results, None
    _finish(out, target)
    return results, target.final


def _finish(out: Output, target: ResultsTarget | None) -> None:
    if target is None:
        return
    line = target.finish()
    doing("the probe", target.final)
    if line:
        out.warn(line)


def _probe_key(label: str) -> str:
    """The probe a progress label belongs to (``all_reduce: GPUs 0,1 8 B`` -> ``all_reduce``)."""
    return label.split()[0].rstrip(":") if label.strip() else ""


def _run_probes(out: Output, options: ProbeOptions, output: Path | None) -> Results:
    from gpuprobe.probes.run import run_probes

    if not out.interactive:
        if out.json_mode or out.quiet:
            return run_probes(options, output=output)
        # a pipe or a log (tee, a batch job): one plain line as each probe starts, no bar
        started: list[str] = []
        total = {"n": 0}

        def announce(specs: list) -> None:
            total["n"] = len(specs)

        def line(label: str) -> None:
            key = _probe_key(label)
            if key and key not in started:
                started.append(key)
                out.info(f"probing {len(started)}/{total['n'] or '?'}: {key}")

        return run_probes(options, output=output, progress=line, on_start=announce)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]probing[/bold]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=out.err, transient=True) as bar:
        task = bar.add_task("starting", total=None)
        state: dict[str, str | None] = {"key": None}

        def on_start(specs: list) -> None:
            bar.update(task, total=len(specs))

        def progress(label: str) -> None:
            key = _probe_key(label)
            if state["key"] is not None and key != state["key"]:
                bar.advance(task)
            state["key"] = key
            bar.update(task, description=label)

        return run_probes(options, output=output, progress=progress, on_start=on_start)


def _show(out: Output, results, every_row: bool = True) -> None:
    if out.json_mode:
        out.data(to_data(results))
        return
    out.data(terminal.summary_table(results), keys=2)
    for line in terminal.waived_lines(results):
        out.data(Text(line, style="dim"))
    ar = terminal.allreduce_table(results, every_size=every_row)
    if ar is not None:
        out.data(ar)
    if results.probe_seconds:
        out.data(terminal.timing_table(results))
    if results.cluster is not None:
        from gpuprobe.report.terminal_cluster import cluster_tables

        for table in cluster_tables(results.cluster):
            out.data(table)
    for n in results.notes:
        out.info(f"note: {n}")
