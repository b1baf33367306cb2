"""An offline layout: ``gpuprobe.validate.worker SPEC.json`` runs an ``LLM`` engine and one-shot batches, and
writes what it measured to a result file the runner reads back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from gpuprobe.results.serde import SerdeError, from_data, to_data
from gpuprobe.results.validation import Measured, ValidationLayout, Workload
from gpuprobe.validate.gpumem import SAMPLE_INTERVAL_S
from gpuprobe.validate.options import Progress, ValidateOptions
from gpuprobe.validate.process import Child, PreloadedInterpreter, start_child, supervise


def run_offline(layout: ValidationLayout, workloads: list[Workload], model_dir: Path, opts: ValidateOptions,
                env_set: dict[str, str], log_path: Path, log: IO[bytes], preloaded: PreloadedInterpreter | None,
                progress: Progress, t0: float) -> tuple[Measured | None, str | None, bool, Child]:
    """Write the run's spec, start the worker on it, supervise it up to the timeout, read its result back."""
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


def _read_child_result(path: Path) -> tuple[Measured | None, str | None]:
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text())
        return from_data(Measured, data["measured"]), data.get("error")
    except (OSError, ValueError, KeyError, SerdeError) as exc:
        return None, f"unreadable run result: {exc}"
