"""Load and save results files, and the one writer of every output file: atomic writes, version checks, one clear
error for a bad file or a path that cannot be written."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, TypeVar

from gpuprobe.errors import GpuprobeError, OutputError, ResultsFileError
from gpuprobe.results.model import (
    CLUSTER_KIND,
    CLUSTER_SCHEMA_VERSION,
    MAX_DEVICES,
    MAX_RANKS,
    RESULTS_KIND,
    SCHEMA_VERSION,
    Results,
)
from gpuprobe.results.serde import SerdeError, from_data, to_data

T = TypeVar("T")

MAX_FILE_BYTES = 256 << 20
"""The largest input file gpuprobe reads (256 MiB; its own documents and the tools' outputs are far smaller)."""
MAX_DEPTH = 64
"""The deepest nesting of objects and lists an input JSON document may have (gpuprobe's own need fewer than 10)."""


_KINDS = ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"),
          (stat.S_ISSOCK, "socket"))

_HINTS = {
    errno.ENOSPC: "free some space on that file system, or pass a path on another one",
    errno.EDQUOT: "free some space (disk quota exceeded), or pass a path on another file system",
    errno.EROFS: "that file system is read-only: pass a path on a writable one",
    errno.EACCES: "pass a path in a folder you can write",
    errno.EPERM: "pass a path in a folder you can write",
    errno.ENAMETOOLONG: "use a shorter file name",
}


def _refuse(what: str, path: str | os.PathLike[str], why: str, hint: str | None = None) -> OutputError:
    return OutputError(f"cannot write {what} {os.fspath(path)}: {why}", hint=hint)


def _os_error(what: str, path: str | os.PathLike[str], exc: OSError) -> OutputError:
    why = exc.strerror or str(exc) or type(exc).__name__
    return _refuse(what, path, why[0].lower() + why[1:] if why else why, _HINTS.get(exc.errno or 0))


def output_target(path: str | os.PathLike[str], what: str = "the output") -> Path:
    """Where a file written to ``path`` lands, checked before anything is written: the path itself, or the regular
    file a symlink points to (written through, the link stays). A folder, a device, a FIFO, a socket (or a symlink
    to one) and a path below a regular file are refused with one OutputError line, as is any OS error."""
    try:
        target = Path(os.path.realpath(path))
        folder = target.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if folder.exists() and not folder.is_dir():
            raise _refuse(what, path, f"{folder} is a file, not a folder")
        try:
            mode = os.stat(target).st_mode
        except FileNotFoundError:
            return target
        if stat.S_ISDIR(mode):
            raise _refuse(what, path, "it is a folder", hint="pass a file name (e.g. FOLDER/results.json)")
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "special file")
            shown = f"{target} is" if target != Path(os.path.abspath(path)) else "it is"
            raise _refuse(what, path, f"{shown} a {kind}, not a regular file",
                          hint="pass the path of a regular file (it is written to a temporary file, then renamed)")
        return target
    except OSError as exc:
        raise _os_error(what, path, exc) from None


def write_atomic(path: str | os.PathLike[str], data: str | bytes, what: str = "the output") -> Path:
    """Write ``data`` to ``path`` so that a reader never sees half a file (nor an empty one): the bytes go to a
    temporary file in the same folder, are flushed to disk, then renamed over the target (see
    :func:`output_target`). Every failure is one OutputError line and leaves no temporary file. Returns the file
    written (the target of a symlink)."""
    target = output_target(path, what)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp: str | None = None
    try:
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:100]}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise _os_error(what, path, exc) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return target


def write_json_atomic(path: str | os.PathLike[str], data: Any, what: str = "the file") -> Path:
    """Write ``data`` as JSON to ``path`` with :func:`write_atomic`."""
    return write_atomic(path, json.dumps(data, indent=1, allow_nan=False) + "\n", what)


def save_results(results: Results, path: str | os.PathLike[str]) -> None:
    write_json_atomic(path, to_data(results), "the results file")


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
    cluster = data.get("cluster") if isinstance(data, dict) else None
    if isinstance(cluster, dict):  # the cluster section has its own kind and version
        k, v = cluster.get("kind"), cluster.get("schema_version")
        if k != CLUSTER_KIND or not isinstance(v, int) or not 1 <= v <= CLUSTER_SCHEMA_VERSION:
            raise ResultsFileError(f"{origin} has a cluster section of kind {k!r}, version {v!r}; this gpuprobe "
                                   f"reads {CLUSTER_KIND} versions 1..{CLUSTER_SCHEMA_VERSION}",
                                   hint="upgrade gpuprobe to read files written by a newer version")
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
    for i, m in enumerate(results.measurements):
        if m.ranks is not None and (len(m.ranks) > MAX_RANKS or len(set(m.ranks)) != len(m.ranks)
                                    or any(r < 0 for r in m.ranks)):
            raise ResultsFileError(f"{origin} is damaged: measurements[{i}] ({m.probe}) has {len(m.ranks):,} ranks; "
                                   f"a group's ranks are distinct, >= 0 and at most {MAX_RANKS:,}")
    return results


def load_results(path: str | os.PathLike[str]) -> Results:
    """Load a results file written by ``gpuprobe probe -o FILE`` into the result model."""
    return results_from_data(read_json(path), origin=str(path))


def successful_measurements(path: str | os.PathLike[str]) -> int | None:
    """How many ``ok`` measurements the results file at ``path`` holds: 0 when there is no file (or an empty one),
    None when the file is something else (not a gpuprobe results file, unreadable)."""
    p = Path(path)
    try:
        if not p.exists() or p.stat().st_size == 0:
            return 0
        return sum(1 for m in load_results(p).measurements if m.status == "ok")
    except (OSError, ResultsFileError):
        return None


def next_free_name(path: str | os.PathLike[str]) -> Path:
    """``FILE.1.json``, ``FILE.2.json``, ... (the first that does not exist) for ``FILE.json``."""
    p = Path(path)
    suffix = p.suffix if p.suffix and p.stem else ""
    stem = p.name[: len(p.name) - len(suffix)]
    n = 1
    while (candidate := p.with_name(f"{stem}.{n}{suffix}")).exists() or candidate.is_symlink():
        n += 1
    return candidate


class ResultsTarget:
    """Where a measuring run writes its results file without losing an earlier run's measurements.

    A run never replaces a file holding more successful (``ok``) measurements than it has, nor a file that is not a
    gpuprobe results file: while it runs it writes to the next free name (``FILE.1.json``); at the end (or when
    interrupted) its file replaces ``FILE`` only when it has at least as many successful measurements, else it stays
    at the new name and :meth:`finish` returns the line that says so. ``force`` overwrites whatever is there.
    """

    def __init__(self, path: str | os.PathLike[str], force: bool = False) -> None:
        self.path = Path(path)
        self.target = output_target(self.path, "the results file")  # a path that cannot be written: refused now
        self.existed = self.target.exists()
        self.kept = 0 if force else successful_measurements(self.target)
        self.write_to = self.path if self.kept == 0 else next_free_name(self.target)  # same file system: renamed
        if self.write_to != self.path:
            output_target(self.write_to, "the results file")
        self.final = self.write_to

    @property
    def diverted(self) -> bool:
        return self.write_to != self.path

    def finish(self) -> str | None:
        """Once the run has written ``write_to``: move it over ``path`` when it may replace it. Returns the line to
        show when the results stay at the new name, else None. ``final`` is then where they are."""
        if not self.diverted or not self.write_to.exists():
            return None
        new = successful_measurements(self.write_to) or 0
        if self.kept is not None and new >= self.kept:
            try:
                os.replace(self.write_to, output_target(self.path, "the results file"))
            except OSError as exc:
                raise _os_error("the results file", self.path, exc) from None
            self.final = self.path
            return None
        held = "is not a gpuprobe results file" if self.kept is None else \
            f"holds {self.kept} successful measurements and this run {new}"
        return f"{self.path} {held}: it is kept; this run's results are in {self.write_to} (--force overwrites)"

    def discard(self) -> None:
        """The run measured nothing: remove the file it wrote, unless it replaced one that was there before."""
        if self.diverted or not self.existed:
            with contextlib.suppress(OSError):
                self.write_to.unlink()
        self.final = self.path
