"""Load and save validation files (atomic, version-checked, one clear error for a bad file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gpuprobe.errors import ResultsFileError
from gpuprobe.results.io import read_json, write_json_atomic
from gpuprobe.results.serde import SerdeError, from_data, to_data
from gpuprobe.results.validation import VALIDATION_KIND, VALIDATION_SCHEMA_VERSION, ValidationRuns


def save_runs(runs: ValidationRuns, path: str | os.PathLike[str]) -> None:
    """Write the validation file atomically (a reader never sees half a file)."""
    write_json_atomic(path, to_data(runs))


def runs_from_data(data: Any, origin: str = "validation file") -> ValidationRuns:
    if not isinstance(data, dict):
        raise ResultsFileError(f"{origin} is not a gpuprobe validation file (top level is not an object)")
    kind = data.get("kind")
    if kind != VALIDATION_KIND:
        raise ResultsFileError(
            f"{origin} is not a gpuprobe validation file (kind is {kind!r})",
            hint="create one with 'gpuprobe validate --model DIR -o RUNS.json'",
        )
    version = data.get("schema_version")
    if not isinstance(version, int) or version > VALIDATION_SCHEMA_VERSION or version < 1:
        raise ResultsFileError(
            f"{origin} has schema version {version!r}; this gpuprobe reads versions 1..{VALIDATION_SCHEMA_VERSION}",
            hint="upgrade gpuprobe to read files written by a newer version",
        )
    try:
        return from_data(ValidationRuns, data)
    except SerdeError as exc:
        raise ResultsFileError(f"{origin} is damaged: {exc}") from None


def load_runs(path: str | os.PathLike[str]) -> ValidationRuns:
    """Load a file written by ``gpuprobe validate -o FILE``."""
    return runs_from_data(read_json(path, what="validation file"), origin=str(Path(path)))
