"""``gpuprobe qualify``: run the probes (or read a results file) and judge every figure and link."""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gpuprobe.cli.output import Output
from gpuprobe.results.io import load_results
from gpuprobe.results.qualification import Check, Qualification

COLOURS = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red", "SKIP": "dim", "INFO": "cyan"}


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
        out.info(_verdict_line(q))
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


def _fmt(value: float | None, unit: str | None) -> str:
    if value is None:
        return "—"
    if unit in ("count", "links"):
        return f"{value:.0f} {unit}"
    text = f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}" if unit else text


def _verdict(v: str) -> Text:
    return Text(v, style=COLOURS.get(v, ""))


def checks_table(q: Qualification) -> Table:
    names = [g.split(" ", 1)[-1] for g in q.gpus]
    gpus = f"{len(names)} × {names[0]}" if len(names) > 1 and len(set(names)) == 1 else ", ".join(q.gpus)
    table = Table(title=escape(f"gpuprobe qualify — {q.host or '?'} — {gpus or 'no device facts'}"),
                  title_justify="left", show_lines=True)
    number = {"justify": "right", "no_wrap": True}
    for name, kw in (("verdict", {}), ("subject", {}), ("test", {"overflow": "fold"}), ("figure", number),
                     ("ratio", number), ("expected (how derived)", {"ratio": 3}), ("cause → next step", {"ratio": 4})):
        table.add_column(name, **kw)
    grouped: dict[tuple[str, str], list[Check]] = defaultdict(list)
    for c in q.checks:
        if c.verdict in ("PASS", "INFO"):
            grouped[(c.test, c.verdict)].append(c)
    shown: set[tuple[str, str]] = set()
    for c in q.checks:
        if c.verdict == "SKIP":
            continue
        key = (c.test, c.verdict)
        if key in grouped and len(grouped[key]) > 1:
            if key not in shown:  # one row for every PASS (or INFO) of a test over many GPUs or pairs
                shown.add(key)
                table.add_row(*_group_row(grouped[key]))
            continue
        expected = Text(_fmt(c.expected, c.unit) if c.expected is not None else "—")
        if c.expectation_basis:
            expected.append("\n" + c.expectation_basis, style="dim")
        why = Text(c.cause or "")
        if c.next_step:
            why.append(f"\n→ {c.next_step}", style="italic")
        if c.detail and c.verdict != "PASS":
            why.append(f"\n{c.detail}", style="dim")
        ratio = f"{c.ratio:.0%}" if c.ratio is not None else "—"
        table.add_row(_verdict(c.verdict), escape(c.subject), escape(c.test), _fmt(c.value, c.unit), ratio, expected,
                      why)
    return table


def _group_row(checks: list[Check]) -> tuple:
    c0 = checks[0]
    values = [c.value for c in checks if c.value is not None]
    figure = "—" if not values else _fmt(values[0], c0.unit) if min(values) == max(values) else \
        f"{_fmt(min(values), None)} … {_fmt(max(values), c0.unit)}"
    exps = sorted({round(c.expected, 6) for c in checks if c.expected is not None})
    expected = Text("—" if not exps else _fmt(exps[0], c0.unit) if len(exps) == 1 else
                    f"{_fmt(exps[0], None)} … {_fmt(exps[-1], c0.unit)}")
    if c0.expectation_basis:
        expected.append("\n" + c0.expectation_basis, style="dim")
    ratios = [c.ratio for c in checks if c.ratio is not None]
    gpu_pair = any(c.subject.count("gpu") > 1 for c in checks)
    note = Text("every one passes" if c0.verdict == "PASS" else c0.cause or "", style="dim")
    return (_verdict(c0.verdict), f"{len(checks)} {'pairs' if gpu_pair else 'GPUs'}", escape(c0.test), figure,
            f"≥ {min(ratios):.0%}" if ratios else "—", expected, note)


def skipped_lines(q: Qualification) -> list[str]:
    by_reason: dict[str, list[str]] = defaultdict(list)
    for c in q.checks:
        if c.verdict == "SKIP":
            by_reason[c.cause or "not measured"].append(c.test if c.subject in ("all", "run") else
                                                        f"{c.test} {c.subject}")
    return [f"SKIP ({len(v)}): {reason} — {', '.join(v)}" for reason, v in by_reason.items()]


def outliers_table(q: Qualification) -> Table | None:
    if not q.outliers:
        return None
    table = Table(title="outliers (far below the median of the same test)", title_justify="left")
    for name in ("rank", "test", "subject", "figure", "median", "of median", "path"):
        table.add_column(name)
    for o in q.outliers:
        table.add_row(str(o.rank), escape(o.test), escape(o.subject), _fmt(o.value, o.unit), _fmt(o.median, o.unit),
                      f"{o.ratio_to_median:.0%}", escape(o.path_class or "—"))
    return table


def _verdict_line(q: Qualification) -> str:
    c = q.counts
    return (f"verdict: {q.verdict} ({c.get('PASS', 0)} pass, {c.get('WARN', 0)} warn, {c.get('FAIL', 0)} fail, "
            f"{c.get('SKIP', 0)} skipped, {c.get('INFO', 0)} recorded) — exit code {q.exit_code}; thresholds: "
            f"{q.thresholds_source}")


def _show(out: Output, q: Qualification) -> None:
    out.data(checks_table(q), keys=3)
    for line in skipped_lines(q):
        out.data(Text(line, style="dim"))
    table = outliers_table(q)
    if table is not None:
        out.data(table)
    out.data(Text(_verdict_line(q), style=COLOURS.get(q.verdict, "")))
