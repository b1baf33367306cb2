"""Running one fuzz case in-process and checking what the issue asks of every command: no traceback, an exit code
of the documented set, nothing non-finite or negative accepted, no partial file visible, no special file replaced,
no process left behind."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"

CASE_TIMEOUT_S = 8
"""A case that runs longer than this has hung (the slowest real case, a report, takes about 2 s on a busy
two-core machine)."""

# The documented exit codes (README 'Exit codes', gpuprobe/cli/app.py)
OK, BAD_FILE, BAD_USAGE, MISSING, PARTIAL = 0, 1, 2, 3, 4
QUALIFY_WARN, QUALIFY_FAIL = 10, 11
SIGNAL_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


class CaseHung(BaseException):
    """Raised by the alarm when a case runs past CASE_TIMEOUT_S (a BaseException: no ``except Exception`` in the
    code under test swallows it)."""


class WouldStartVllm(BaseException):
    """``gpuprobe validate`` got past its option checks and would now start vLLM (the fuzz suite never does)."""


@dataclass
class Outcome:
    argv: list[str]
    code: int | None
    out: str
    err: str
    exc: BaseException | None = None
    traceback_head: str | None = None
    seconds: float = 0.0
    would_start_vllm: bool = False

    def command_line(self) -> str:
        return "gpuprobe " + " ".join(_quote(a) for a in self.argv)


def _quote(arg: str) -> str:
    if "/pytest-of-" in arg:  # a case's own file: its name is what tells the cases apart
        arg = "<tmp>/" + Path(arg).name
    text = arg if len(arg) <= 80 else arg[:60] + f"...({len(arg)} chars)"
    r = repr(text)
    return text if r == f"'{text}'" and text and " " not in text else r


@contextlib.contextmanager
def _alarm(seconds: int) -> Iterator[None]:
    def on_alarm(signum: int, frame: Any) -> None:
        raise CaseHung(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _children() -> set[int]:
    """Live (not zombie) child processes of this process."""
    try:  # the kernel's list of each thread's children: cheap
        found = set()
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children", encoding="ascii") as fh:
                found |= {int(p) for p in fh.read().split()}
        return {p for p in found if _state(p) not in (None, "Z")}
    except OSError:
        pass
    me = str(os.getpid())
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            found.add(int(entry))
    return found


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def run_cli(argv: list[str], timeout_s: int = CASE_TIMEOUT_S) -> Outcome:
    """``gpuprobe.cli.app.main(argv)`` in this process with stdout and stderr captured."""
    import time
    import traceback

    from gpuprobe.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    code: int | None = None
    exc: BaseException | None = None
    head = None
    would_start = False
    t0 = time.perf_counter()
    env_debug = os.environ.pop("GPUPROBE_DEBUG", None)
    try:
        with _alarm(timeout_s), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    except WouldStartVllm:
        would_start = True
    except BaseException as e:  # noqa: BLE001 - anything escaping main() is the finding
        exc = e
        tb = traceback.format_exception(e)
        last = tb[-1].strip().splitlines()[0] if tb else repr(e)
        frames = traceback.extract_tb(e.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(frames)
                      if "gpuprobe" in f.filename), "")
        head = f"{last} ({where})" if where else last
    finally:
        if env_debug is not None:
            os.environ["GPUPROBE_DEBUG"] = env_debug
    return Outcome(list(argv), code, out.getvalue(), err.getvalue(), exc, head, time.perf_counter() - t0, would_start)


# ----------------------------------------------------------------------------------------------------- checks


class Findings:
    """Collects what a case got wrong; ``raise_if_any`` fails the test with one line per finding, the first
    line naming the class (TRACEBACK, EXIT, ACCEPTED, SPECIAL, PARTIAL, ORPHAN, HUNG, UNREADABLE)."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.items: list[str] = []

    def add(self, kind: str, detail: str) -> None:
        self.items.append(f"{kind}: {detail}")

    def raise_if_any(self) -> None:
        if self.items:
            o = self.outcome
            lines = [*self.items, f"command: {o.command_line()}", f"exit code: {o.code}",
                     "stderr (last lines): " + " | ".join(o.err.strip().splitlines()[-3:])]
            raise AssertionError("\n".join(lines))


def check_common(outcome: Outcome, allowed: set[int], workdir: Path | None, children_before: set[int]) -> Findings:
    """No traceback, exit code in ``allowed``, no ``.tmp`` file left in ``workdir``, no new child process."""
    f = Findings(outcome)
    if isinstance(outcome.exc, CaseHung):
        f.add("HUNG", str(outcome.exc))
    elif outcome.exc is not None:
        f.add("TRACEBACK", outcome.traceback_head or repr(outcome.exc))
    for stream, text in (("stdout", outcome.out), ("stderr", outcome.err)):
        if "Traceback (most recent call last)" in text:
            line = next((x for x in reversed(text.splitlines()) if x and not x.startswith(" ")), "")
            f.add("TRACEBACK", f"printed on {stream}: {line}")
    if outcome.exc is None and not outcome.would_start_vllm and outcome.code not in allowed:
        f.add("EXIT", f"exit code {outcome.code} not in the documented {sorted(allowed)}")
    if workdir is not None:
        left = partial_files(workdir)
        if left:
            f.add("PARTIAL", f"temporary files left: {', '.join(sorted(left)[:3])}")
    new = _children() - children_before
    if new:
        f.add("ORPHAN", f"child processes still running: {sorted(new)}")
        for pid in new:  # started by this case: end them so the next cases start clean
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    return f


def partial_files(folder: Path) -> list[str]:
    """Temporary or partial files an atomic writer could leave behind."""
    out = []
    for root, dirs, files in os.walk(folder):
        for name in files + dirs:
            if name.endswith((".tmp", ".partial", "~")) or name.startswith(".tmp"):
                out.append(os.path.relpath(os.path.join(root, name), folder))
    return out


# -------------------------------------------------------------------------------------------- figure checks

FIGURE_FIELDS = ("median", "min", "max", "mean", "stdev", "cv", "p95")


def bad_figures(results: Any) -> list[str]:
    """Non-finite or negative bandwidths, latencies, samples, sizes and times of a loaded Results."""
    bad: list[str] = []

    def judge(where: str, x: Any) -> None:
        if isinstance(x, bool) or x is None:
            return
        if not isinstance(x, int | float):
            bad.append(f"{where}={x!r} (not a number)"[:200])
        elif x < 0 or (isinstance(x, float) and not math.isfinite(x)):
            bad.append(f"{where}={x!r}"[:200])

    for i, m in enumerate(getattr(results, "measurements", []) or []):
        name = f"measurements[{i}]({getattr(m, 'probe', '?')})"
        for j, s in enumerate(getattr(m, "samples", []) or []):
            judge(f"{name}.samples[{j}]", s)
        st = getattr(m, "stat", None)
        if st is not None:
            for k in FIGURE_FIELDS:
                judge(f"{name}.stat.{k}", getattr(st, k, None))
        for k in ("algbw_gbps", "busbw_gbps", "size_bytes", "duration_s", "wrong_elements"):
            judge(f"{name}.{k}", getattr(m, k, None))
    for k, v in (getattr(results, "probe_seconds", {}) or {}).items():
        judge(f"probe_seconds[{k}]", v)
    judge("setup_seconds", getattr(results, "setup_seconds", None))
    return bad


def strict_json(text: str) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity are not numbers."""

    def refuse(name: str) -> Any:
        raise ValueError(f"non-finite number {name} in JSON")

    return json.loads(text, parse_constant=refuse)


def check_results_accepted(f: Findings, path: Path, what: str) -> None:
    """A command read ``path`` and succeeded: what it accepted must not hold non-finite or negative figures."""
    from gpuprobe.importers import load_any

    try:
        res = load_any(path)
    except BaseException as exc:  # noqa: BLE001 - the command accepted a file its own loader refuses
        f.add("ACCEPTED", f"{what} accepted although load_any refuses it: {type(exc).__name__}: {exc}")
        return
    bad = bad_figures(res)
    if bad:
        f.add("ACCEPTED", f"{what} accepted with non-finite or negative figures: {', '.join(bad[:3])}")


def check_written_results(f: Findings, path: Path) -> None:
    """A results file the command wrote: whole, strict JSON, loads back, no non-finite or negative figure."""
    from gpuprobe.results.io import load_results, results_from_data

    try:
        data = strict_json(path.read_text(encoding="utf-8"))
        results_from_data(data, origin=str(path))
        res = load_results(path)
    except BaseException as exc:  # noqa: BLE001
        f.add("UNREADABLE", f"written results file {path.name} does not load back: {type(exc).__name__}: {exc}")
        return
    bad = bad_figures(res)
    if bad:
        f.add("ACCEPTED", f"written results hold non-finite or negative figures: {', '.join(bad[:3])}")


def check_stdout_json(f: Findings, text: str, results: bool = False) -> None:
    """``--json`` output: exactly one strict JSON document (and, for results, no bad figure)."""
    from gpuprobe.results.io import results_from_data

    try:
        data = strict_json(text)
    except BaseException as exc:  # noqa: BLE001
        f.add("UNREADABLE", f"--json output is not one strict JSON document: {type(exc).__name__}: {exc}"[:300])
        return
    if results:
        try:
            res = results_from_data(data)
        except BaseException as exc:  # noqa: BLE001
            f.add("UNREADABLE", f"--json output is not a results document: {exc}"[:300])
            return
        bad = bad_figures(res)
        if bad:
            f.add("ACCEPTED", f"--json output holds non-finite or negative figures: {', '.join(bad[:3])}")


# ------------------------------------------------------------------------------------------------- output paths

PATH_KINDS = ("existing_dir", "below_file", "name_300", "dev_null", "fifo", "symlink_dev_null", "readonly_dir",
              "missing_parent", "empty")


@dataclass
class OutPath:
    kind: str
    path: str
    special: str | None = None
    """``chr``, ``fifo`` or ``symlink``: what must still be there after the run."""
    writable: bool = True
    """False where no file can be written (exit 0 then means the command claimed a write that cannot be)."""
    extra: dict = field(default_factory=dict)


def null_device(folder: Path) -> str:
    """A character device that behaves as /dev/null, private to the test (a writer that wrongly replaces it
    cannot damage the machine's own /dev/null; as root, replacing /dev/null itself would succeed)."""
    node = folder / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        return str(node)
    except (OSError, AttributeError):
        pass
    if not os.access("/dev", os.W_OK):
        return "/dev/null"  # cannot be replaced by this user
    return ""


def make_out_path(kind: str, folder: Path, name: str = "out.json") -> OutPath | None:
    """A hostile output path of ``kind`` inside ``folder`` (None where this machine cannot make one)."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "existing_dir":
        d = folder / name
        d.mkdir()
        (d / "keep.txt").write_text("keep\n")
        return OutPath(kind, str(d), writable=False)
    if kind == "below_file":
        (folder / "file").write_text("a regular file\n")
        return OutPath(kind, str(folder / "file" / name), writable=False)
    if kind == "name_300":
        return OutPath(kind, str(folder / ("n" * 300 + Path(name).suffix)), writable=False)
    if kind == "dev_null":
        node = null_device(folder)
        return OutPath(kind, node, special="chr") if node else None
    if kind == "fifo":
        p = folder / name
        os.mkfifo(p)
        return OutPath(kind, str(p), special="fifo")
    if kind == "symlink_dev_null":
        node = null_device(folder)
        if not node:
            return None
        link = folder / name
        link.symlink_to(node)
        return OutPath(kind, str(link), special="symlink", extra={"target": node})
    if kind == "readonly_dir":
        d = folder / "ro"
        d.mkdir()
        p = d / name
        d.chmod(0o555)
        return OutPath(kind, str(p), writable=os.access(d, os.W_OK))
    if kind == "missing_parent":
        return OutPath(kind, str(folder / "no" / "such" / "folder" / name))
    if kind == "empty":
        return OutPath(kind, "", writable=False)
    raise ValueError(kind)


def check_out_path(f: Findings, op: OutPath, succeeded: bool, validate: Callable[[Path], None] | None = None) -> None:
    """After the run: the special file is still what it was; success only where a write is possible; a file
    written to a writable path is whole."""
    p = Path(op.path) if op.path else None
    if op.special == "chr" and p is not None:
        if not (p.exists() and stat.S_ISCHR(os.stat(p).st_mode)):
            f.add("SPECIAL", f"character device {op.kind} was replaced by a {_kind_of(p)}")
    elif op.special == "fifo" and p is not None:
        if not (p.exists() and stat.S_ISFIFO(os.lstat(p).st_mode)):
            f.add("SPECIAL", f"FIFO was replaced by a {_kind_of(p)}")
    elif op.special == "symlink" and p is not None:
        if not p.is_symlink():
            f.add("SPECIAL", f"symlink to a character device was replaced by a {_kind_of(p)}")
        elif not stat.S_ISCHR(os.stat(op.extra["target"]).st_mode):
            f.add("SPECIAL", "the character device behind the symlink was replaced")
    if op.kind == "existing_dir" and p is not None and not (p / "keep.txt").exists():
        f.add("SPECIAL", "the existing folder given as output was emptied or replaced")
    if succeeded and not op.writable and op.special is None:
        f.add("EXIT", f"exit code {f.outcome.code} (success) although nothing can be written to a {op.kind} path")
    if succeeded and op.writable and op.special is None and validate is not None and p is not None:
        if not p.is_file():
            f.add("EXIT", f"exit code {f.outcome.code} (success) but no file at the {op.kind} path")
        else:
            validate(p)


def _kind_of(p: Path) -> str:
    try:
        m = os.lstat(p).st_mode
    except FileNotFoundError:
        return "missing path (deleted)"
    if stat.S_ISLNK(m):
        return "symlink"
    if stat.S_ISREG(m):
        return f"regular file of {os.stat(p).st_size} bytes"
    if stat.S_ISDIR(m):
        return "directory"
    return oct(m)


def children_now() -> set[int]:
    return _children()


def python_env() -> dict[str, str]:
    """The environment of a gpuprobe subprocess: this checkout first on the import path, no GPU."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.pop("GPUPROBE_DEBUG", None)
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


PYTHON = sys.executable
