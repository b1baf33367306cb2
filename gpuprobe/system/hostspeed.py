"""How fast the host runs the Python that drives a GPU: its processor and a fixed interpreter workload.

vLLM's engine is Python: the scheduler, input preparation, the launches of an eager or torch.compile'd step and
the API server all run at the speed of one CPU core. Machines of the same GPU kind differ here (the same
Qwen3-4B engine answers one client's 1,024-token prompt in 33 ms on one H200 host and 58 ms on another), so
every results file records this with the run: the processor's model name from ``/proc/cpuinfo`` and the time per
iteration of a fixed pure-Python loop shaped like a scheduler's bookkeeping (dict and list operations, attribute
access, small integer arithmetic): the median of short runs spread over half a second.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import time
from pathlib import Path

LOOP_ITERATIONS = 20_000
SAMPLES = 11
GAP_S = 0.04
"""About half a second in all: long enough to meet a slow spell of the host, short enough for every run header."""


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The processor's model name with its family, model and stepping numbers (a virtual machine often shows a
    generic name, e.g. ``Intel(R) Xeon(R) Processor (family 6, model 207, stepping 2)``), from the first processor
    of ``/proc/cpuinfo``; ``platform.processor()`` where there is none."""
    facts: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if not line.strip():
                if facts:
                    break  # the first processor's block only
                continue
            key, _, value = line.partition(":")
            facts.setdefault(key.strip(), " ".join(value.split()))
    name = facts.get("model name")
    if not name:
        return platform.processor() or None
    numbers = [f"{k.removeprefix('cpu ')} {facts[k]}" for k in ("cpu family", "model", "stepping") if facts.get(k)]
    return f"{name} ({', '.join(numbers)})" if numbers else name


class _Req:
    __slots__ = ("blocks", "done", "id", "tokens")

    def __init__(self, i: int) -> None:
        self.id, self.tokens, self.done = i, 0, False
        self.blocks: list[int] = []


def _loop(n: int) -> int:
    """``n`` scheduler-like iterations over 64 requests: take a request, extend its tokens and block list, look
    it up by id, finish some and replace them."""
    reqs = [_Req(i) for i in range(64)]
    by_id = {r.id: r for r in reqs}
    total = 0
    for i in range(n):
        r = reqs[i & 63]
        r.tokens += 1
        if r.tokens % 16 == 0:
            r.blocks.append(i)
        total += by_id[r.id].tokens
        if r.tokens >= 256:
            r.done = True
            del by_id[r.id]
            reqs[i & 63] = new = _Req(r.id + 64)
            by_id[new.id] = new
    return total


def python_loop_ns(iterations: int = LOOP_ITERATIONS, samples: int = SAMPLES, gap_s: float = GAP_S) -> float:
    """Nanoseconds per iteration of the fixed loop (to 0.01 ns): the median of ``samples`` runs ``gap_s`` apart.
    A median, not the best: on a shared virtual machine the core runs at about half speed for spells of a tenth of
    a second or more (an idle H200 host: 93-223 ns, 11 of 50 samples above 150; tests/data/vllm-h200-2026-12-02/
    host-loop-samples.json), and what a host-bound engine gets is the typical speed, spells included."""
    _loop(iterations // 4)  # warm-up
    times = []
    for k in range(samples):
        if k:
            time.sleep(gap_s)
        t0 = time.perf_counter()
        _loop(iterations)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) / iterations * 1e9, 2)
