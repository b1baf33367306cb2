"""The fields every run header shares: which gpuprobe, when, and on which host (``RunInfoBase``).

``RunInfo`` (a results file) and ``ValidationRunInfo`` (a validation file) extend it. Its fields come first in
their JSON, in this order, so the files read and write as before. This module imports nothing from gpuprobe.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunInfoBase:
    """Which gpuprobe made the file, when, and on which host and Python."""

    gpuprobe_version: str
    started_utc: str
    finished_utc: str | None = None
    hostname: str | None = None
    os: str | None = None
    """``platform.system()`` and ``platform.release()``, e.g. ``Linux 6.8.0-49-generic``."""
    python: str | None = None
    cpu_model: str | None = None
    """The host processor's model name (``/proc/cpuinfo``), e.g. ``Intel(R) Xeon(R) Platinum 8480+``."""
    host_python_loop_ns: float | None = None
    """Nanoseconds per iteration of a fixed pure-Python loop (``gpuprobe.system.hostspeed``): the host's
    single-core speed, which vLLM's scheduler, launches and API server run at. Lower is faster."""
