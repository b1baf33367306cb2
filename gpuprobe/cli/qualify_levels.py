"""``gpuprobe qualify --level``: wires the real probes, the NVML sampler and the burn-in load into
``qualify.levels.run_level``; and the one-line node hooks (``--format slurm`` / ``npd``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from gpuprobe.cli.output import Output
from gpuprobe.errors import GpuprobeError, UsageError
from gpuprobe.results.qualification import Qualification


def run_level_cli(out: Output, level: str, duration: str, limits: Any, tests: list[str], gpus: str | None,
                  buffer_mib: int | None, samples: int | None, output: Path | None,
                  force: bool = False) -> tuple[Qualification, Any, Path | None]:
    """Run the level; returns the qualification, the judged results and where they were written."""
    import os

    from gpuprobe.cli.probe import _run_with_progress, no_cuda, probe_options
    from gpuprobe.qualify.burnin import make_backend
    from gpuprobe.qualify.levels import LEVELS, RECOMMENDED_BURN_IN_S, LevelError, LevelRun, parse_duration, run_level

    if level not in LEVELS:
        raise UsageError(f"--level {level!r}: choose one of {', '.join(LEVELS)}")
    try:
        duration_s = parse_duration(duration) if level == "burn-in" else 0.0
    except LevelError as exc:
        raise UsageError(str(exc)) from None
    if level == "burn-in" and duration_s < RECOMMENDED_BURN_IN_S:
        out.info(f"burn-in of {duration}: shorter than the recommended 10m (fine for a test of the set-up)")

    written: dict[str, Path | None] = {"results": output}

    def probe(keys: list[str], quick: bool):
        path = output
        if keys and output is not None:  # the confirmation run keeps the judged file intact
            path = output.with_name(output.stem + ".confirm" + output.suffix)
        results, where = _run_with_progress(out, probe_options(keys or tests, quick, gpus, buffer_mib, samples),
                                            path, force)
        if not keys:
            written["results"] = where
        reason = results.cuda_skip_reason()
        if reason is not None and not any(m.status != "waived" for m in results.measurements):
            raise no_cuda(reason, "judge a recorded results file ('gpuprobe qualify --input RESULTS.json')")
        return results

    indices = [int(x) for x in gpus.split(",")] if gpus else None
    sampler, nvml, note = _sampler(indices)
    run = LevelRun(level=level, probe=probe, thresholds=limits, sampler=sampler,
                   burn_in=(lambda: make_backend(indices)) if level == "burn-in" else None,
                   duration_s=duration_s or RECOMMENDED_BURN_IN_S, source=str(output) if output else "live run",
                   environment={k: v for k, v in os.environ.items() if k.startswith("NCCL_")})
    out.info(f"qualify --level {level}" + (f" --duration {duration}" if level == "burn-in" else "") + ": running")
    try:
        q, results = run_level(run)
    finally:
        if nvml is not None:
            nvml.close()
    if note:
        q.notes.append(note)
    return q, results, written["results"]


def _sampler(indices: list[int] | None) -> tuple[Any, Any, str | None]:
    """(Sampler, its NVML gateway, None) or (None, None, why there is no health timeline)."""
    from gpuprobe.errors import NvmlUnavailable
    from gpuprobe.system.inventory import device_count
    from gpuprobe.system.nvml import LiveNvml
    from gpuprobe.system.sampler import Sampler

    nvml = LiveNvml()
    try:
        n = device_count(nvml)
    except NvmlUnavailable as exc:
        return None, None, f"no NVML health timeline: {exc.message}"
    except Exception as exc:  # noqa: BLE001 - never lose the level for its health sampler
        return None, None, f"no NVML health timeline: {type(exc).__name__}: {exc}"
    return Sampler(nvml, indices if indices is not None else list(range(n))), nvml, None


def node_hook(fmt: str, run: Callable[[], Qualification | None]) -> None:
    """Run the qualification quietly; print one line for Slurm or node-problem-detector and exit with its code."""
    from gpuprobe.qualify.node_outputs import npd_line, npd_unknown, slurm_line

    try:
        q = run()
    except GpuprobeError as exc:
        if fmt == "npd":
            line, code = npd_unknown(exc.message)
        else:
            line, code = f"gpuprobe qualify ERROR: {exc.message}", exc.exit_code
        print(line)
        sys.stdout.flush()
        raise typer.Exit(code) from None
    if q is None:  # pragma: no cover - run() always returns a qualification in quiet mode
        raise typer.Exit(2)
    line, code = (npd_line if fmt == "npd" else slurm_line)(q)
    print(line)
    sys.stdout.flush()
    raise typer.Exit(code)
