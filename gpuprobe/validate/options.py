"""What a validation does (``ValidateOptions``), checked and made absolute when built."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gpuprobe.errors import UsageError
from gpuprobe.results.validation import LayoutRun, ValidationLayout, ValidationRuns, Workload
from gpuprobe.validate.process import PreloadPool

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
