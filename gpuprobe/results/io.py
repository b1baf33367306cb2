"""Load and save results files: atomic writes, version checks, one clear error for a bad file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

from gpuprobe.errors import ResultsFileError
from gpuprobe.results.model import CLUSTER_KIND, CLUSTER_SCHEMA_VERSION, RESULTS_KIND, SCHEMA_VERSION, Results
from gpuprobe.results.serde import SerdeError, from_data, to_data

T = TypeVar("T")


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that a reader never sees half a file.

    The text goes to a temporary file in the same folder, is flushed to disk, then renamed over ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_results(results: Results, path: str | os.PathLike[str]) -> None:
    write_json_atomic(path, to_data(results))


def read_json(path: str | os.PathLike[str], what: str = "results file") -> Any:
    """Parse a JSON file, turning every way it can fail into one ResultsFileError line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsFileError(f"{what} {path} does not exist", hint="check the path") from None
    except IsADirectoryError:
        raise ResultsFileError(f"{what} {path} is a directory, not a file", hint="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"cannot read {what} {path}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsFileError(
            f"{what} {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None


def document_from_data(cls: type[T], data: Any, *, kind: str, schema_version: int, what: str, origin: str,
                       hint: str | None = None) -> T:
    """Check a versioned gpuprobe document's ``kind`` and ``schema_version``, then build ``cls`` from it.

    Every way it can be wrong is one ResultsFileError line naming ``origin``.
    """
    if not isinstance(data, dict):
        raise ResultsFileError(f"{origin} is not a gpuprobe {what} (top level is not an object)", hint=hint)
    found = data.get("kind")
    if found != kind:
        raise ResultsFileError(f"{origin} is not a gpuprobe {what} (kind is {found!r})", hint=hint)
    version = data.get("schema_version")
    if not isinstance(version, int) or version > schema_version or version < 1:
        raise ResultsFileError(
            f"{origin} has schema version {version!r}; this gpuprobe reads versions 1..{schema_version}",
            hint="upgrade gpuprobe to read files written by a newer version",
        )
    try:
        return from_data(cls, data)
    except SerdeError as exc:
        raise ResultsFileError(f"{origin} is damaged: {exc}") from None


def results_from_data(data: Any, origin: str = "results") -> Results:
    cluster = data.get("cluster") if isinstance(data, dict) else None
    if isinstance(cluster, dict):  # the cluster section has its own kind and version
        k, v = cluster.get("kind"), cluster.get("schema_version")
        if k != CLUSTER_KIND or not isinstance(v, int) or not 1 <= v <= CLUSTER_SCHEMA_VERSION:
            raise ResultsFileError(f"{origin} has a cluster section of kind {k!r}, version {v!r}; this gpuprobe "
                                   f"reads {CLUSTER_KIND} versions 1..{CLUSTER_SCHEMA_VERSION}",
                                   hint="upgrade gpuprobe to read files written by a newer version")
    return document_from_data(Results, data, kind=RESULTS_KIND, schema_version=SCHEMA_VERSION,
                              what="results file", origin=origin)


def load_results(path: str | os.PathLike[str]) -> Results:
    """Load a results file written by ``gpuprobe probe -o FILE`` into the result model."""
    return results_from_data(read_json(path), origin=str(path))
