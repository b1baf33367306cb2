"""Load and save validation files (atomic, version-checked, one clear error for a bad file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gpuprobe.results.io import document_from_data, read_json, write_json_atomic
from gpuprobe.results.serde import to_data
from gpuprobe.results.validation import VALIDATION_KIND, VALIDATION_SCHEMA_VERSION, ValidationRuns


def save_runs(runs: ValidationRuns, path: str | os.PathLike[str]) -> None:
    """Write the validation file atomically (a reader never sees half a file)."""
    write_json_atomic(path, to_data(runs), "the validation file")


def runs_from_data(data: Any, origin: str = "validation file") -> ValidationRuns:
    return document_from_data(ValidationRuns, data, kind=VALIDATION_KIND, schema_version=VALIDATION_SCHEMA_VERSION,
                              what="validation file", origin=origin,
                              hint="create one with 'gpuprobe validate --model DIR -o RUNS.json'")


def load_runs(path: str | os.PathLike[str]) -> ValidationRuns:
    """Load a file written by ``gpuprobe validate -o FILE``."""
    return runs_from_data(read_json(path, what="validation file"), origin=str(Path(path)))
