"""``gpuprobe validate``: short real vLLM runs of layouts (dummy weights), measured against the prediction."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import typer
from rich import box
from rich.console import Group
from rich.table import Table

from gpuprobe.cli.bounds import within
from gpuprobe.cli.output import Output
from gpuprobe.cli.signals import doing
from gpuprobe.errors import UsageError
from gpuprobe.predict.traffic import MAX_TOKENS
from gpuprobe.report.fmt import safe
from gpuprobe.results.io import output_target
from gpuprobe.results.serde import to_data
from gpuprobe.results.validation import LayoutRun, ValidationLayout, ValidationRuns, Workload
from gpuprobe.validate.calibrate import CalibrationFit
from gpuprobe.validate.spread import spread_notes

DEFAULT_WORKLOADS = ["n=1,in=128,out=64", "n=16,in=128,out=64"]
DEFAULT_SERVE_WORKLOADS = ["n=8,in=1024,out=128,c=1", "n=64,in=1024,out=128,c=16", "n=256,in=1024,out=128,c=64"]


def validate(
    model: str | None = typer.Option(None, "--model", help="Model directory (or its config.json); no weights needed."),
    recommendation: Path | None = typer.Option(
        None, "--recommendation", help="Output of 'gpuprobe recommend -o/--json': validate its top layouts."
    ),
    layout: list[str] = typer.Option([], "--layout", help="A layout, e.g. 'tp=2,pp=1' or 'tp=1,gpus=3' (repeatable)."),
    top: int = typer.Option(3, "--top", callback=within(1, 1000), help="How many layouts of --recommendation to run."),
    workload: list[str] = typer.Option(
        [], "--workload", help="'n=16,in=128,out=64' (one batch); served: add c=CONCURRENCY and/or rate=REQ_PER_S, "
        "optionally range=0.1 (lengths ±10 %). Repeatable; all run on one engine start."
    ),
    serve_mode: bool = typer.Option(
        False, "--serve", help="Start 'vllm serve' and send the workloads over HTTP as 'vllm bench serve' does."
    ),
    enforce_eager: bool = typer.Option(
        False, "--enforce-eager/--cuda-graphs", help="Eager mode, or vLLM's default compiled mode with CUDA graphs."
    ),
    max_model_len: int | None = typer.Option(None, "--max-model-len",
        callback=within(1, MAX_TOKENS),
        help="vLLM max_model_len (default: vLLM's)."),
    gpu_memory_utilization: float | None = typer.Option(
        None, "--gpu-memory-utilization",
            callback=within(0, 1, low_open=True),
            help="vLLM gpu_memory_utilization (default: vLLM's)."
    ),
    max_num_seqs: int | None = typer.Option(None, "--max-num-seqs",
        callback=within(1, 1 << 20),
        help="vLLM max_num_seqs (default: vLLM's)."),
    max_num_batched_tokens: int | None = typer.Option(
        None, "--max-num-batched-tokens",
            callback=within(1, MAX_TOKENS),
            help="vLLM max_num_batched_tokens (default: vLLM's)."
    ),
    timeout_s: float = typer.Option(900.0, "--timeout-s",
        callback=within(0, 1e6, low_open=True),
        help="Hard limit per layout, in seconds."),
    warm_each: bool = typer.Option(
        False, "--warm-each", help="Run each workload once, short, before timing it (kernels compiled on first use of "
        "a batch shape, e.g. MoE, are then not timed)."
    ),
    log_steps: bool = typer.Option(
        False, "--log-steps", help="Have vLLM log every engine step (prompt and decode requests and tokens, time) "
        "in the layout's log (vLLM's --enable-logging-iteration-details; read it with "
        "benchmarks/step_log.py)."
    ),
    starts: int = typer.Option(
        1, "--starts",
            callback=within(1, 100),
            help="Start each layout's engine this many times (shows how far its speed moves between starts)."
    ),
    output: Path = typer.Option(
        Path("validation.json"), "-o", "--output", help="Validation file (resumed when it exists)."
    ),
    outdir: Path | None = typer.Option(None, "--outdir", help="Logs folder (default: <output>-logs)."),
    system: Path | None = typer.Option(None, "--system", help="Results file of 'gpuprobe probe' for predictions."),
    calibration: Path | None = typer.Option(None, "--calibration", help="Calibration file for the predictions."),
    fit_calibration: Path | None = typer.Option(
        None, "--fit-calibration", help="Fit the performance model's factors to the runs and write them here."
    ),
    compare: list[Path] = typer.Option(
        [], "--compare", help="Recompute the comparison of stored validation file(s) (no vLLM run; repeatable)."
    ),
    force: bool = typer.Option(False, "--force", help="Run layouts again even when the file has their result."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed and timed-out layouts again."),
    env: list[str] = typer.Option([], "--env", help="KEY=VALUE for the vLLM processes (repeatable)."),
    python: str | None = typer.Option(None, "--python", help="Interpreter that imports vLLM (default: this one)."),
    preload: bool = typer.Option(
        True, "--preload/--no-preload", help="Import vLLM once and fork every run from it (saves 10-30 s per run)."
    ),
    json_: bool = typer.Option(False, "--json", help="Print the validation file as JSON on stdout."),
) -> None:
    """Run each layout briefly in real vLLM with dummy weights; compare KV tokens, tokens/s, TTFT, TPOT.

    Exit code 0 when every layout ran, 4 when some failed or timed out (their reasons and logs are in the
    file), 3 when vLLM is not installed.
    """
    from gpuprobe.validate import calibrate as cal
    from gpuprobe.validate import compare as cmp
    from gpuprobe.validate import runner
    from gpuprobe.validate.options import ValidateOptions
    from gpuprobe.validate.store import load_runs, save_runs

    out = Output(json_mode=json_)
    if not compare:
        output_target(output, "the validation file")  # refused before vLLM starts
    if fit_calibration is not None:
        output_target(fit_calibration, "the calibration file")
    if compare:
        all_runs = [load_runs(p) for p in compare]
        for path, runs in zip(compare, all_runs, strict=True):
            cmp.recompare(runs, system=system, calibration=calibration)
            save_runs(runs, path)
            out.info(f"comparison recomputed in {path}")
    else:
        if model is None:
            raise UsageError("--model is required to run layouts", hint="or pass --compare RUNS.json")
        workloads = [parse_workload(w) for w in (workload or (DEFAULT_SERVE_WORKLOADS if serve_mode
                                                                else DEFAULT_WORKLOADS))]
        if serve_mode and any(not w.served for w in workloads):
            raise UsageError("--serve workloads need c=CONCURRENCY or rate=REQUESTS_PER_S, e.g. "
                             "'n=256,in=1024,out=128,c=64'")
        if not serve_mode and any(w.served for w in workloads):
            raise UsageError("c= and rate= describe served load: add --serve")
        layouts = [parse_layout(x) for x in layout]
        if recommendation is not None:
            layouts += runner.load_recommendation(str(recommendation), top)
        for lay in layouts:
            lay.enforce_eager, lay.max_num_seqs, lay.serve = enforce_eager, max_num_seqs, serve_mode
            lay.max_model_len, lay.gpu_memory_utilization = max_model_len, gpu_memory_utilization
            lay.max_num_batched_tokens = max_num_batched_tokens
            if log_steps:
                lay.extra_engine_args = {**lay.extra_engine_args, "enable_logging_iteration_details": True}
        if starts < 1:
            raise UsageError(f"--starts must be at least 1 (got {starts})")
        layouts = [dataclasses.replace(lay, start=k) for lay in layouts for k in range(1, starts + 1)]
        if python is not None:
            _check_python(python)
        opts = ValidateOptions(
            model=model, layouts=layouts, workloads=workloads, output=output, outdir=outdir, timeout_s=timeout_s,
            force=force, retry_failed=retry_failed, env=parse_env(env), python=python or sys.executable,
            compare=cmp.comparer(system=system, calibration=calibration), preload=preload,
            warm_each=warm_each,
        )  # fmt: skip
        doing("the validation", opts.output)
        all_runs = [runner.run_validation(opts, progress=out.info, command=sys.argv)]
        out.info(f"validation file: {opts.output} (logs in {opts.outdir})")
    fit = None
    if fit_calibration is not None:
        fit = cal.fit_calibration(all_runs, system=system, calibration=calibration)
        cal.save_fit(fit, fit_calibration)
        out.info(f"calibration written to {fit_calibration}")
    if json_:
        payload = [to_data(r) for r in all_runs]
        out.data({"runs": payload, "calibration_fit": to_data(fit) if fit else None})
    else:
        for runs in all_runs:
            out.data(runs_table(runs))
        if fit is not None:
            out.data(fit_table(fit))
    if any(r.status in ("failed", "timeout") for runs in all_runs for r in runs.layouts):
        raise typer.Exit(4)


def _kv(text: str, what: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise UsageError(f"{what} {text!r}: {part!r} is not key=value")
        out[key.strip().lower()] = value.strip()
    return out


def parse_workload(text: str) -> Workload:
    """``n=16,in=128,out=64`` (one batch) or ``n=256,in=1024,out=128,c=64[,rate=8][,range=0.1]`` -> Workload."""
    kv = _kv(text, "--workload")
    try:
        wl = Workload(int(kv.pop("n")), int(kv.pop("in")), int(kv.pop("out")))
        if "c" in kv:
            wl.concurrency = int(kv.pop("c"))
        if "rate" in kv:
            wl.request_rate = float(kv.pop("rate"))
        if "range" in kv:
            wl.range_ratio = float(kv.pop("range"))
    except (KeyError, ValueError):
        hint = "served: add c=64 or rate=8"
        raise UsageError(f"--workload {text!r} must be like 'n=16,in=128,out=64' ({hint})") from None
    if kv:
        raise UsageError(f"--workload {text!r}: unknown key(s) {sorted(kv)}")
    if min(wl.num_requests, wl.input_len, wl.output_len) < 1 or wl.num_requests > 1 << 20:
        raise UsageError(f"--workload {text!r}: n, in and out must be at least 1 (n at most {1 << 20})")
    if wl.concurrency is not None and wl.concurrency < 1:
        raise UsageError(f"--workload {text!r}: c must be at least 1")
    if wl.request_rate is not None and not (0 < wl.request_rate < 1e6):
        raise UsageError(f"--workload {text!r}: rate must be a positive number of requests per second")
    if not 0 <= wl.range_ratio < 1:
        raise UsageError(f"--workload {text!r}: range must be in [0, 1)")
    return wl


def parse_layout(text: str) -> ValidationLayout:
    """``tp=2,pp=1[,replicas=1][,gpus=0+1]`` -> ValidationLayout."""
    kv = _kv(text, "--layout")
    try:
        lay = ValidationLayout(tp=int(kv.pop("tp")), pp=int(kv.pop("pp", "1")), replicas=int(kv.pop("replicas", "1")))
        if "gpus" in kv:
            lay.gpus = [int(g) for g in kv.pop("gpus").replace(":", "+").split("+") if g]
    except (KeyError, ValueError):
        raise UsageError(f"--layout {text!r} must be like 'tp=2,pp=1' (optional replicas=N, gpus=0+1)") from None
    if kv:
        raise UsageError(f"--layout {text!r}: unknown key(s) {sorted(kv)}")
    if lay.tp < 1 or lay.pp < 1 or lay.replicas < 1:
        raise UsageError(f"--layout {text!r}: tp, pp and replicas must be at least 1")
    return lay


def _check_python(python: str) -> None:
    """--python must name an interpreter that can be started (a path, or a name on PATH)."""
    import shutil

    if shutil.which(python) is None:
        raise UsageError(f"--python {python!r} is not an executable file",
                         hint="pass the Python that imports vLLM, e.g. --python /path/to/venv/bin/python")


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {item!r} must be KEY=VALUE")
        env[key] = value
    return env


def _num(x: float | None, fmt: str = "{:,.1f}") -> str:
    return "—" if x is None else fmt.format(x)


def _err(x: float | None) -> str:
    """The prediction's signed error, on its own line under the measured figure."""
    if x is None:
        return ""
    colour = "green" if abs(x) <= 0.05 else "yellow" if abs(x) <= 0.15 else "red"
    return f"\n[{colour}]{x:+.1%}[/{colour}]"


def runs_table(runs: ValidationRuns) -> Group:
    """One row per layout and workload: measured figures with the prediction's signed error; reasons below."""
    title = safe(f"{runs.model_name} on {runs.run.device} — vLLM {runs.run.vllm_version or '?'}")
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for col in ("layout", "status", "KV tokens", "n×in→out", "out tok/s", "TTFT ms", "TPOT ms"):
        left = col in ("layout", "status", "n×in→out")
        width = {"status": 7, "KV tokens": 9}.get(col)
        t.add_column(col, justify="left" if left else "right", no_wrap=left, min_width=width)
    notes = []
    for run in runs.layouts:
        _add_run_rows(t, run)
        if run.reason:
            log = f" (log: {safe(run.log_path)})" if run.log_path else ""
            notes.append(f"{safe(run.layout.name)}: {safe(run.reason)}{log}")
        if run.status == "ok" and run.comparison and run.comparison.reason:
            notes.append(f"{safe(run.layout.name)}: no comparison: {safe(run.comparison.reason)}")
    notes += [safe(n) for n in spread_notes(runs)]
    return Group(t, *notes)


def _add_run_rows(t: Table, run: LayoutRun) -> None:
    m = run.measured
    errs = {(f.figure, f.workload): f.rel_error for f in (run.comparison.figures if run.comparison else [])}
    kv = m.kv_cache.tokens if m and m.kv_cache else None
    start = f"\n[dim]start {m.engine_start_s:.0f} s[/dim]" if m and m.engine_start_s else ""
    kv_cell = f"{_num(kv, '{:,.0f}')}{_err(errs.get(('kv_cache_tokens', None)))}"
    head = [safe(run.layout.name) + start, run.status, kv_cell]
    workloads = m.workloads if m else []
    if not workloads:
        t.add_row(*head, "", "", "", "")
    for i, w in enumerate(workloads):
        lab, wl = w.workload.label, w.workload
        row = head if i == 0 else ["", "", ""]
        short = f"{wl.num_requests}×{wl.input_len}→{wl.output_len}"
        t.add_row(
            *row,
            short if w.status == "ok" else f"{short} failed",
            f"{_num(w.output_tokens_per_s)}{_err(errs.get(('output_tokens_per_s', lab)))}",
            f"{_num(w.ttft.median_ms if w.ttft else None)}{_err(errs.get(('ttft_ms', lab)))}",
            f"{_num(w.tpot.median_ms if w.tpot else None, '{:,.2f}')}{_err(errs.get(('tpot_ms', lab)))}",
        )


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def fit_table(fit: CalibrationFit) -> Table:
    """Error before, in-sample after and held-out after calibration, per figure; then the factors."""
    t = Table(title=f"Calibration ({fit.holdout})", title_justify="left")
    for col in ("figure", "n", "|error| before", "after (in-sample)", "held-out median", "held-out max"):
        t.add_column(col, justify="left" if col == "figure" else "right")
    for f in fit.figures:
        t.add_row(f.figure, str(f.n), _pct(f.median_abs_before), _pct(f.median_abs_after),
                  _pct(f.median_abs_heldout), _pct(f.max_abs_heldout))  # fmt: skip
    for fac in fit.factors:
        t.add_row(f"[dim]{safe(fac.name)}[/dim]", "", f"{fac.before:.4g}", f"{fac.after:.4g}", "", "")
    return t
