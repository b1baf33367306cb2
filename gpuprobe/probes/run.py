"""run_probes: select, run and record every probe; every failure becomes a record and the run goes on.

The results file (when a path is given) is rewritten atomically after every probe, so Ctrl-C or a crash
keeps everything measured so far (status ``interrupted`` / ``partial``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gpuprobe import __version__
from gpuprobe.errors import GpuprobeError, MissingDependency, interrupt_reason
from gpuprobe.options import ProbeOptions
from gpuprobe.probes import allreduce, copy, latency, local, p2p  # noqa: F401  (register the probes)
from gpuprobe.probes.core.record import failed, waived
from gpuprobe.probes.core.registry import ProbeContext, ProbeSpec, select
from gpuprobe.results.io import save_results
from gpuprobe.results.model import CUDA_SKIPPED, DeviceInfo, Measurement, Results, RunInfo, Topology, now_utc
from gpuprobe.system import hostspeed

if TYPE_CHECKING:
    from gpuprobe.probes.core.cuda import Cuda

MISSING = "missing dependency"
"""How the record of a probe that could not run for want of a package begins (its status is ``error``)."""


def missing_dependency(results: Results) -> MissingDependency | None:
    """When every probe that failed could not run for want of a package: that error (the first), else None."""
    failures = [m for m in results.measurements if m.status in ("error", "mismatch")]
    missing = [m for m in failures if (m.reason or "").startswith(f"{MISSING}: ")]
    if not missing or len(missing) < len(failures):
        return None
    m = missing[0]
    return MissingDependency.from_record(f"{m.probe} did not run: {(m.reason or '').removeprefix(f'{MISSING}: ')}")


def _pkg_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _is_vm() -> bool | None:
    with contextlib.suppress(OSError):
        return "hypervisor" in Path("/proc/cpuinfo").read_text()
    return None


def _run_info(options: ProbeOptions, argv: list[str] | None) -> RunInfo:
    return RunInfo(
        gpuprobe_version=__version__, started_utc=now_utc(), hostname=socket.gethostname(),
        os=f"{platform.system()} {platform.release()}", python=platform.python_version(),
        torch_version=_pkg_version("torch"), virtual_machine=_is_vm(), command=list(argv or sys.argv),
        options={k: v for k, v in vars(options).items()},
        cpu_model=hostspeed.cpu_model(), host_python_loop_ns=hostspeed.python_loop_ns(),
    )


def _inventory(cuda: Cuda | None) -> tuple[list[DeviceInfo], Topology | None, dict, str]:
    """NVML facts; on failure the probes still run (devices then come from CUDA alone)."""
    from gpuprobe.system.inventory import load_system

    peer = cuda.can_access_peer if cuda is not None else None
    try:
        facts = load_system(cuda_peer_access=peer)
    except GpuprobeError as exc:
        return [], None, {}, f"NVML facts unavailable: {exc.message}"
    return facts.devices, facts.topology, facts.driver, ""


def run_probes(
    options: ProbeOptions,
    output: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
    argv: list[str] | None = None,
    on_start: Callable[[list[ProbeSpec]], None] | None = None,
) -> Results:
    """Run the selected probes on this machine and return (and save, if ``output``) the results."""
    t0 = time.perf_counter()
    specs = select(options.tests)
    results = Results(run=_run_info(options, argv))
    cuda = None
    ctx: ProbeContext | None = None
    needs_cuda = any(s.needs == "cuda" for s in specs)
    if needs_cuda:
        from gpuprobe.probes.core.cuda import Cuda

        try:
            cuda = Cuda()
        except GpuprobeError as exc:  # NoGpu, MissingDependency (CuPy), a driver that does not answer
            results.cuda_unavailable = exc.message
            results.problems.append(f"{CUDA_SKIPPED}{exc.message}")
    try:
        devices, topology, driver, problem = _inventory(cuda)
        if problem:
            results.problems.append(problem)
        results.devices, results.topology = devices, topology
        visible = list(range(cuda.device_count)) if cuda else [d.index for d in devices]
        gpus = [g for g in (options.gpus if options.gpus is not None else visible) if g in visible]
        if options.gpus is not None and len(gpus) != len(options.gpus):
            results.problems.append(f"GPUs {sorted(set(options.gpus) - set(gpus))} are not present; probing {gpus}")
        if cuda is not None:
            v = cuda.versions()
            results.run.cuda_runtime_version = v["cuda_runtime_version"]
            results.run.cuda_driver_version = v["cuda_driver_version"]
            results.run.cupy_version = v["cupy_version"]
            _fill_cuda_facts(cuda, gpus, results.devices)
            cuda.preload(gpus)
        results.run.driver_version = driver.get("driver_version")
        ctx = ProbeContext(options=options, gpus=gpus if cuda or any(s.needs == "dist" for s in specs) else [],
                           devices=results.devices, topology=topology, cuda=cuda,
                           progress=progress or (lambda label: None))
        if on_start:
            on_start(specs)
        results.setup_seconds = round(time.perf_counter() - t0, 3)
        if len(specs) > 1 and not (cuda is None and not options.tests):
            for s in specs:
                if s.prestart is not None:
                    s.prestart(ctx)  # e.g. the all-reduce workers start up while the copy probes run
        settled = False
        for spec in specs:
            waited = 0.0
            if spec.group == "latency" and not settled:
                settled = True
                for s in specs:
                    took = s.settle(ctx) if s.settle is not None else 0.0  # counted in this probe's time
                    waited += took
                    if took > 0.1:
                        who = s.key.replace("_", "-")
                        ctx.note(f"waited {took:.1f} s for the {who} workers to finish starting before the latency "
                                 "probes (their CUDA/NCCL set-up disturbs host-memory latency)")
            if cuda is None and not options.tests and spec.needs == "dist":
                # no GPU and no explicit selection: do not silently turn a GPU run into a CPU benchmark
                results.measurements.append(waived(spec.key, "no CUDA GPU; select it explicitly (--tests "
                                                   f"{spec.key} --backend gloo) to run it on CPU processes",
                                                   spec.unit))
                continue
            _run_one(spec, ctx, results)
            if waited:
                results.probe_seconds[spec.key] = round(results.probe_seconds.get(spec.key, 0.0) + waited, 3)
            results.notes = list(ctx.notes)
            if output:
                save_results(results, output)
        results.status = "partial" if any(m.status in ("error", "mismatch") for m in results.measurements) else (
            "complete")
    except KeyboardInterrupt as exc:
        results.status = "interrupted"
        results.problems.append(f"{interrupt_reason(exc)}; the measurements above were kept")
        raise
    finally:
        results.run.finished_utc = now_utc()
        if ctx is not None:
            for s in specs:
                if s.discard is not None:
                    s.discard(ctx)
            results.run.nccl_version = ctx.cache.get("nccl_version")
        if output:
            save_results(results, output)
        if cuda is not None:
            cuda.close()
    return results


def _run_one(spec: ProbeSpec, ctx: ProbeContext, results: Results) -> None:
    t = time.perf_counter()
    ctx.progress(spec.key)
    reason = spec.waived_reason(ctx)
    if reason:
        results.measurements.append(waived(spec.key, reason, spec.unit))
        return
    last = time.perf_counter()
    try:
        for m in spec.run(ctx):
            now = time.perf_counter()
            m.duration_s = round(now - last, 4)
            last = now
            results.measurements.append(m)
    except KeyboardInterrupt:
        raise
    except MissingDependency as exc:  # the run goes on; the CLI names the package and how to install it
        results.measurements.append(failed(spec.key, f"{MISSING}: {exc.message}", spec.unit))
        results.problems.append(f"{spec.key} did not run: {exc.message}; {exc.hint}")
    except Exception as exc:  # a probe that crashes is a record; the run goes on
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        results.measurements.append(failed(spec.key, f"{type(exc).__name__}: {msg}", spec.unit))
        results.problems.append(f"{spec.key} failed: {type(exc).__name__}: {msg}")
        if os.environ.get("GPUPROBE_DEBUG"):
            raise
    finally:
        results.probe_seconds[spec.key] = round(time.perf_counter() - t, 3)


def _fill_cuda_facts(cuda: Cuda, gpus: list[int], devices: list[DeviceInfo]) -> None:
    """Facts only CUDA knows (SM count, compute capability); devices missing from NVML are added."""
    for g in gpus:
        p = cuda.props(g)
        d = next((x for x in devices if x.index == g), None)
        if d is None:
            name = p["name"].decode() if isinstance(p["name"], bytes) else str(p["name"])
            d = DeviceInfo(index=g, name=name, memory_total_bytes=int(p["totalGlobalMem"]))
            devices.append(d)
        d.multiprocessor_count = int(p["multiProcessorCount"])
        d.compute_capability = f"{p['major']}.{p['minor']}"
    devices.sort(key=lambda d: d.index)


def measurement_counts(measurements: list[Measurement]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for m in measurements:
        counts[m.status] = counts.get(m.status, 0) + 1
    return counts
