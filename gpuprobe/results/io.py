"""Load and save results files: atomic writes, version checks, one clear error for a bad file."""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, TypeVar

from gpuprobe.errors import GpuprobeError, ResultsFileError
from gpuprobe.results.model import MAX_DEVICES, RESULTS_KIND, SCHEMA_VERSION, Results
from gpuprobe.results.serde import SerdeError, from_data, to_data

T = TypeVar("T")

MAX_FILE_BYTES = 256 << 20
"""The largest input file gpuprobe reads (256 MiB; its own documents and the tools' outputs are far smaller)."""
MAX_DEPTH = 64
"""The deepest nesting of objects and lists an input JSON document may have (gpuprobe's own need fewer than 10)."""


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


def read_input(path: str | os.PathLike[str], what: str, error: type[GpuprobeError] = ResultsFileError,
               *, replace_errors: bool = False) -> str:
    """The text of an input file, checked before it is opened: it exists, is a regular file (a FIFO, device or
    socket would block or never end) and is at most MAX_FILE_BYTES. Every way it fails is one ``error`` line.

    ``replace_errors``: bytes that are not UTF-8 become U+FFFD instead of an error (another tool's text output)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist", hint="check the path") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {path} is a directory, not a file", hint="check the path")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path} is not a regular file (a FIFO, device or socket)",
                    hint="save the content to a file and pass that")
    if st.st_size > MAX_FILE_BYTES:
        raise error(f"{what} {path} is {st.st_size / (1 << 20):.0f} MiB; gpuprobe reads files of at most "
                    f"{MAX_FILE_BYTES >> 20} MiB", hint="check the path")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # replaced since the check above
                raise error(f"{what} {path} is not a regular file (a FIFO, device or socket)")
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise error(f"{what} {path} is over {MAX_FILE_BYTES >> 20} MiB; gpuprobe reads files of at most "
                    f"{MAX_FILE_BYTES >> 20} MiB", hint="check the path")
    try:
        return data.decode("utf-8", errors="replace" if replace_errors else "strict")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None


def _tree_problem(data: Any) -> str | None:
    """What is wrong with parsed JSON as input: nesting deeper than MAX_DEPTH, or a NaN/Infinity (a token JSON does
    not have, or a number too large for a float such as ``1e999``), named by its path."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "$")]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return f"{path} is {node!r}, not a finite number"
        if isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                return f"is nested more than {MAX_DEPTH} levels deep; no gpuprobe input is"
            pairs = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((v, depth + 1, f"{path}.{k}" if isinstance(node, dict) else f"{path}[{k}]")
                         for k, v in pairs)
    return None


def parse_json(text: str, origin: str, error: type[GpuprobeError] = ResultsFileError) -> Any:
    """JSON text -> data: nesting deeper than MAX_DEPTH and non-finite numbers (``NaN``, ``Infinity``, ``1e999``)
    are refused like a syntax error, as one ``error`` line naming ``origin`` (and the field)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{origin} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (ValueError, RecursionError):  # too deep for the parser, or an integer of thousands of digits
        problem: str | None = f"is nested more than {MAX_DEPTH} levels deep or holds an absurd number"
    else:
        problem = _tree_problem(data)
    if problem is not None:
        raise error(f"{origin}: {problem}" if problem.startswith("$") else f"{origin} {problem}")
    return data


def read_json(path: str | os.PathLike[str], what: str = "results file",
              error: type[GpuprobeError] = ResultsFileError) -> Any:
    """Parse a JSON file (``read_input``, then ``parse_json``), turning every way it can fail into one line."""
    return parse_json(read_input(path, what, error), f"{what} {Path(path)}", error)


def document_from_data(cls: type[T], data: Any, *, kind: str, schema_version: int, what: str, origin: str,
                       hint: str | None = None, min_version: int = 1) -> T:
    """Check a versioned gpuprobe document's ``kind`` and ``schema_version``, then build ``cls`` from it.

    Every way it can be wrong is one ResultsFileError line naming ``origin``.
    """
    if not isinstance(data, dict):
        raise ResultsFileError(f"{origin} is not a gpuprobe {what} (top level is not an object)", hint=hint)
    found = data.get("kind")
    if found != kind:
        raise ResultsFileError(f"{origin} is not a gpuprobe {what} (kind is {found!r})", hint=hint)
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or not min_version <= version <= schema_version:
        newer = isinstance(version, int) and version > schema_version
        raise ResultsFileError(
            f"{origin} has schema version {version!r}; this gpuprobe reads versions {min_version}..{schema_version}",
            hint="upgrade gpuprobe to read files written by a newer version" if newer else hint,
        )
    try:
        return from_data(cls, data)
    except SerdeError as exc:
        raise ResultsFileError(f"{origin} is damaged: {exc}") from None


def results_from_data(data: Any, origin: str = "results") -> Results:
    results = document_from_data(Results, data, kind=RESULTS_KIND, schema_version=SCHEMA_VERSION,
                                 what="results file", origin=origin)
    gpus = len(results.devices), results.topology.gpu_count if results.topology else 0
    if max(gpus) > MAX_DEVICES:
        raise ResultsFileError(f"{origin} is damaged: it lists {max(gpus)} devices; one host has at most {MAX_DEVICES}")
    bad = next((d.index for d in results.devices if not 0 <= d.index < MAX_DEVICES), None)
    if bad is not None:
        raise ResultsFileError(f"{origin} is damaged: device index {bad} is not in 0..{MAX_DEVICES - 1}")
    if results.topology and len(results.topology.pairs) > MAX_DEVICES * MAX_DEVICES:
        raise ResultsFileError(f"{origin} is damaged: {len(results.topology.pairs)} GPU pairs")
    return results


def load_results(path: str | os.PathLike[str]) -> Results:
    """Load a results file written by ``gpuprobe probe -o FILE`` into the result model."""
    return results_from_data(read_json(path), origin=str(path))
