"""Errors a user can cause, each with a one-line message and a hint (the next thing to try).

Library code raises these; the CLI maps them to ``Error: <message>`` plus the hint and an exit code
(see ``gpuprobe.cli.app``). Anything else is a bug and shows a traceback only with GPUPROBE_DEBUG=1.
"""

from __future__ import annotations

import shlex
import sys

REQUIREMENTS = {
    "cupy": "cupy-cuda13x>=13",
    "torch": "torch>=2.4",
    "matplotlib": "matplotlib>=3.7",
}
"""The optional packages by the module they provide, as pyproject.toml's extras name them (``gpu`` has all three,
``report`` matplotlib)."""


def install_line(*modules: str) -> str:
    """The exact command that installs what provides ``modules`` into the Python running gpuprobe."""
    reqs = " ".join(shlex.quote(REQUIREMENTS[m]) for m in modules)
    return f"{shlex.quote(sys.executable)} -m pip install {reqs}"


def install_hint(module: str) -> str:
    return f"install it: {install_line(module)}  (without a package index: README, 'Offline install')"


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

    @classmethod
    def of(cls, module: str, what: str) -> MissingDependency:
        """``what`` needs ``module`` (a key of REQUIREMENTS), which is missing; the hint is the line that installs
        it."""
        return cls(f"{what}: {REQUIREMENTS[module]} is not installed", hint=install_hint(module))

    @classmethod
    def from_record(cls, text: str) -> MissingDependency:
        """The error again from its recorded message (a probe's record keeps only the message)."""
        module = next((m for m, req in REQUIREMENTS.items() if f"{req} is not installed" in text), None)
        return cls(text, hint=install_hint(module) if module else None)


class PeerAccessDenied(GpuprobeError):
    """CUDA peer access between two GPUs is not possible."""


class ResultsFileError(GpuprobeError):
    """A results file is missing, corrupt, of another kind or of an unknown schema version."""

    default_hint = "re-create it with 'gpuprobe probe -o FILE'"


class OutputError(GpuprobeError):
    """An output file cannot be written: the path is a folder, a device, a FIFO or a socket, lies below a file, or
    the system refused (permission, read-only file system, no space left, name too long)."""

    default_hint = "pass another path: a regular file in a folder you can write"


class InputFileError(GpuprobeError):
    """An input file that is not a gpuprobe document (a list of request lengths, ...) cannot be read or holds bad
    values (exit 1, as every bad file)."""


class BadModelConfig(GpuprobeError):
    """A model config.json is missing, malformed or describes an unsupported architecture."""


class ModelDoesNotFit(GpuprobeError):
    """No layout on the given system can start the model."""


class VllmUnavailable(GpuprobeError):
    """vLLM is not installed (or cannot be imported)."""

    exit_code = 3


class VllmRunFailed(GpuprobeError):
    """A vLLM validation run crashed, ran out of memory or timed out."""


def interrupt_reason(exc: KeyboardInterrupt) -> str:
    """How a run was stopped, for its results file: Ctrl-C, or the signal the CLI raised as an interrupt
    (``KeyboardInterrupt("SIGTERM")``, see ``gpuprobe.cli.signals``)."""
    name = str(exc.args[0]) if exc.args else ""
    return f"stopped by {name}" if name.startswith("SIG") else "interrupted by the user"
