"""Errors a user can cause, each with a one-line message and a hint (the next thing to try).

Library code raises these; the CLI maps them to ``Error: <message>`` plus the hint and an exit code
(see ``gpuprobe.cli.app``). Anything else is a bug and shows a traceback only with GPUPROBE_DEBUG=1.
"""

from __future__ import annotations


class GpuprobeError(Exception):
    """Base class. ``exit_code`` is what the CLI returns for it."""

    exit_code = 1
    default_hint: str | None = None

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


class UsageError(GpuprobeError):
    """Bad arguments or options (exit code 2, like typer's own usage errors)."""

    exit_code = 2


class NoGpu(GpuprobeError):
    """No CUDA GPU can be used on this machine."""

    exit_code = 3
    default_hint = "run on a machine with an NVIDIA GPU, or pass a recorded results file (-i/--input)"


class NvmlUnavailable(GpuprobeError):
    """The NVIDIA Management Library could not be loaded or initialised."""

    exit_code = 3
    default_hint = "install the NVIDIA driver (libnvidia-ml.so) or pass a recorded NVML snapshot"


class MissingDependency(GpuprobeError):
    """A Python package needed for this command is not installed."""

    exit_code = 3


class PeerAccessDenied(GpuprobeError):
    """CUDA peer access between two GPUs is not possible."""


class ResultsFileError(GpuprobeError):
    """A results file is missing, corrupt, of another kind or of an unknown schema version."""

    default_hint = "re-create it with 'gpuprobe probe -o FILE'"


class BadModelConfig(GpuprobeError):
    """A model config.json is missing, malformed or describes an unsupported architecture."""


class ModelDoesNotFit(GpuprobeError):
    """No layout on the given system can start the model."""


class VllmUnavailable(GpuprobeError):
    """vLLM is not installed (or cannot be imported)."""

    exit_code = 3


class VllmRunFailed(GpuprobeError):
    """A vLLM validation run crashed, ran out of memory or timed out."""
