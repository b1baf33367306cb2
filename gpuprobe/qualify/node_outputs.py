"""One line and an exit code for node health hooks: a Slurm prolog/epilog, and Kubernetes node-problem-detector.

``--format slurm`` (Slurm's prolog and epilog drain the node when the script exits non-zero):

  exit 0   PASS or WARN: the node may run jobs (the line says WARN and why)
  exit 11  FAIL: drain the node; the line names the worst finding and its next step
  1, 2, 3  gpuprobe could not judge (bad file, bad usage, no GPU): non-zero, so the node is drained too

The line: ``gpuprobe qualify PASS|WARN|FAIL host=H level=L pass=N warn=N fail=N[; worst: SUBJECT TEST: CAUSE]``.

``--format npd`` follows node-problem-detector's custom plugin protocol (its ``custompluginmonitor`` types:
``OK = 0``, ``NonOK = 1``, ``Unknown = 2``; the message on stdout, which NPD cuts at ``max_output_length``, 80
characters by default):

  exit 0   PASS or WARN (no problem condition; the message says WARN)
  exit 1   FAIL: the problem is present; the message names it
  exit 2   unknown: gpuprobe could not judge (any error)

NPD runs a plugin with a short timeout (5 s by default): point it at a saved qualification
(``gpuprobe qualify --from-qualification FILE --format npd``) written by a level run on a schedule.
"""

from __future__ import annotations

from gpuprobe.results.qualification import EXIT_FAIL, Check, Qualification

NPD_OK = 0
NPD_PROBLEM = 1
NPD_UNKNOWN = 2
NPD_MAX_OUTPUT = 80
SLURM_OK = 0
SLURM_FAIL = EXIT_FAIL
FORMATS = ("text", "json", "slurm", "npd")


def worst_check(q: Qualification) -> Check | None:
    """The first FAIL (confirmed ones first), else the first WARN, else None."""
    fails = sorted(q.failed(), key=lambda c: 0 if c.confirmed else 1)
    if fails:
        return fails[0]
    warns = q.warned()
    return warns[0] if warns else None


def _finding(c: Check) -> str:
    cause = (c.cause or c.verdict).split(":")[0] if c.cause and len(c.cause) > 60 else (c.cause or c.verdict)
    return f"{c.subject} {c.test}: {cause}"


def slurm_line(q: Qualification) -> tuple[str, int]:
    c = q.counts
    line = (f"gpuprobe qualify {q.verdict} host={q.host or '?'} level={q.level} pass={c.get('PASS', 0)} "
            f"warn={c.get('WARN', 0)} fail={c.get('FAIL', 0)}")
    w = worst_check(q)
    if w is not None:
        line += f"; worst: {_finding(w)}"
        if w.verdict == "FAIL" and w.next_step:
            line += f" -> {w.next_step.split(';')[0]}"
    return line, SLURM_FAIL if q.verdict == "FAIL" else SLURM_OK


def npd_line(q: Qualification) -> tuple[str, int]:
    w = worst_check(q)
    text = f"GPU {q.verdict}" + (f": {_finding(w)}" if w is not None else f" ({q.level})")
    return _cut(text), NPD_PROBLEM if q.verdict == "FAIL" else NPD_OK


def npd_unknown(message: str) -> tuple[str, int]:
    text = f"GPU unknown: {message}"
    return _cut(text), NPD_UNKNOWN


def _cut(text: str, limit: int = NPD_MAX_OUTPUT) -> str:
    """``text`` in at most ``limit`` UTF-8 bytes (NPD cuts by bytes), ending in ``...`` when cut."""
    text = " ".join(text.split())
    if len(text.encode()) <= limit:
        return text
    while len(text.encode()) > limit - 3:
        text = text[:-1]
    return text + "..."
