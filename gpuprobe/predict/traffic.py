"""The load a prediction is for: how requests arrive and how long their prompts and outputs are.

Three arrival modes, as the tools people measure vLLM with: ``batch`` (every request submitted at t = 0, as
``LLM.generate``), ``closed`` (``concurrency`` clients, each sending its next request the moment the previous
one ends, as ``vllm bench serve --max-concurrency C``) and ``poisson`` (arrivals at ``request_rate`` per
second, optionally capped by ``concurrency``, as ``vllm bench serve --request-rate R``). Lengths are fixed,
uniform in [L(1 − r), L(1 + r)] (``--random-range-ratio r``), or drawn from a histogram of
(input tokens, output tokens, weight) rows.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gpuprobe.errors import InputFileError, UsageError
from gpuprobe.results.io import parse_json, read_input

Mode = Literal["batch", "closed", "poisson"]
MAX_REQUESTS = 1 << 20
MAX_TOKENS = 1 << 24


@dataclass
class Traffic:
    mode: Mode = "closed"
    num_requests: int = 1000
    input_len: int = 1024
    output_len: int = 256
    concurrency: int | None = 64
    """Clients in flight (closed loop); a cap on in-flight requests for Poisson arrivals (None: none)."""
    request_rate: float | None = None
    """Requests per second (Poisson mode)."""
    range_ratio: float = 0.0
    histogram: list[tuple[int, int, float]] = field(default_factory=list)
    """(input tokens, output tokens, weight) rows; overrides the fixed lengths when given."""
    requests: list[tuple[int, int]] = field(default_factory=list)
    """Exact (input tokens, output tokens) of every request in send order (a recorded run); overrides the rest."""
    arrivals_s: list[float] = field(default_factory=list)
    """Exact send times of a recorded Poisson run (seconds from its first request); overrides the draws."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("batch", "closed", "poisson"):
            raise UsageError(f"traffic mode must be batch, closed or poisson, not {self.mode!r}")
        if not 1 <= self.num_requests <= MAX_REQUESTS:
            raise UsageError(f"number of requests must be between 1 and {MAX_REQUESTS}, not {self.num_requests}")
        for name in ("input_len", "output_len"):
            v = getattr(self, name)
            if not 1 <= v <= MAX_TOKENS:
                raise UsageError(f"--{name.replace('_', '-')} must be between 1 and {MAX_TOKENS}, not {v}")
        if self.concurrency is not None and not 1 <= self.concurrency <= MAX_REQUESTS:
            raise UsageError(f"--concurrency must be between 1 and {MAX_REQUESTS}, not {self.concurrency}")
        if self.mode == "closed" and self.concurrency is None:
            raise UsageError("a closed loop needs a concurrency")
        if self.mode == "poisson":
            r = self.request_rate
            if r is None or not (math.isfinite(r) and 0 < r <= 1e6):
                raise UsageError(f"--request-rate must be a positive number of requests per second, not {r}")
        if not (math.isfinite(self.range_ratio) and 0 <= self.range_ratio < 1):
            raise UsageError(f"--range-ratio must be in [0, 1), not {self.range_ratio}")
        if self.arrivals_s and (len(self.arrivals_s) != self.num_requests or self.mode != "poisson"
                                or not all(math.isfinite(t) and t >= 0 for t in self.arrivals_s)):
            raise UsageError("recorded send times need one finite time >= 0 per request of a Poisson run")
        if self.requests and len(self.requests) != self.num_requests:
            raise UsageError(f"{len(self.requests)} request lengths given for {self.num_requests} requests")
        for i, o in self.requests:
            if not (1 <= i <= MAX_TOKENS and 1 <= o <= MAX_TOKENS):
                raise UsageError(f"request lengths ({i}, {o}) must be between 1 and {MAX_TOKENS} tokens")
        for row in self.histogram:
            i, o, w = row
            if not (1 <= i <= MAX_TOKENS and 1 <= o <= MAX_TOKENS and math.isfinite(w) and w > 0):
                raise UsageError(f"histogram row {row} must be (input tokens >= 1, output tokens >= 1, weight > 0)")

    @property
    def in_flight(self) -> int:
        """Requests in flight at most (for capacity checks)."""
        if self.mode == "batch":
            return self.num_requests
        return min(self.concurrency or self.num_requests, self.num_requests)

    def describe(self) -> str:
        """One line saying what load this is, as a user would put it."""
        if self.mode == "batch":
            how = f"one batch of {self.num_requests:,} requests"
        elif self.mode == "closed":
            how = f"{self.concurrency:,} clients in a closed loop, {self.num_requests:,} requests"
        else:
            cap = f", at most {self.concurrency:,} in flight" if self.concurrency is not None else ""
            how = f"Poisson arrivals at {self.request_rate:g}/s{cap}, {self.num_requests:,} requests"
        if self.requests:
            lens = "the recorded request lengths"
        elif self.histogram:
            total = sum(w for _, _, w in self.histogram)
            mean_in = sum(i * w for i, _, w in self.histogram) / total
            mean_out = sum(o * w for _, o, w in self.histogram) / total
            lens = (f"lengths drawn from {len(self.histogram):,} rows (mean {mean_in:,.0f} prompt, "
                    f"{mean_out:,.0f} output tokens)")
        else:
            spread = f" (±{self.range_ratio:.0%})" if self.range_ratio else ""
            lens = f"{self.input_len:,} prompt and {self.output_len:,} output tokens{spread}"
        return f"{how}, {lens}"

    def lengths(self) -> list[tuple[int, int]]:
        """(prompt tokens, output tokens) of every request, in send order (deterministic for a seed)."""
        if self.requests:
            return list(self.requests)
        rng = random.Random(self.seed)
        if self.histogram:
            rows = [(i, o) for i, o, _ in self.histogram]
            weights = [w for _, _, w in self.histogram]
            return rng.choices(rows, weights=weights, k=self.num_requests)
        r = self.range_ratio
        if not r:
            return [(self.input_len, self.output_len)] * self.num_requests

        def draw(n: int) -> int:
            return rng.randint(max(1, math.floor(n * (1 - r))), math.ceil(n * (1 + r)))

        return [(draw(self.input_len), draw(self.output_len)) for _ in range(self.num_requests)]

    def send_times(self) -> list[float] | None:
        """Client send times for Poisson arrivals (None for the other modes: they follow the run)."""
        if self.mode != "poisson":
            return None
        if self.arrivals_s:
            return sorted(self.arrivals_s)
        assert self.request_rate is not None
        rng = random.Random(self.seed + 1)
        t, out = 0.0, []
        for i in range(self.num_requests):
            if i:
                t += rng.expovariate(self.request_rate)
            out.append(t)
        return out

    def split(self, parts: int) -> list[Traffic | None]:
        """What each of ``parts`` identical servers behind a balancer gets; None for a server that stays idle.

        Batch: the requests dealt round-robin. Closed loop: the clients that will send (at most one per
        request) split as evenly as they go (the first ``C % parts`` servers get one more; a server without a
        client stays idle), and each server gets the
        requests in proportion to its clients, dealt in send order. Poisson: one stream of arrivals for the
        whole system, dealt round-robin to the servers that can hold a request under the cap, each arrival
        keeping its send time, so no arrival is lost and the servers share one clock (``SimResult.start_s``).
        """
        n = self.num_requests
        lengths = self.lengths()
        sends = self.send_times()
        if self.mode == "batch" or self.concurrency is None:
            active = min(parts, n)
            clients: list[int | None] = [None] * active
            weights = [1] * active
        else:
            c = min(self.concurrency, n)  # more clients than requests: the extra ones never send
            active = min(parts, c)
            counts = [c // active + (1 if i < c % active else 0) for i in range(active)]
            clients, weights = list(counts), counts
        if self.mode != "closed":
            weights = [1] * active  # arrivals are dealt in turn; a cap only limits what each holds at once
        picked: list[list[int]] = [[] for _ in range(active)]
        heap = [(0.0, i) for i in range(active)]  # (requests dealt / weight, server): lowest gets the next
        for j in range(n):
            _, i = heapq.heappop(heap)
            picked[i].append(j)
            heapq.heappush(heap, (len(picked[i]) / weights[i], i))
        out: list[Traffic | None] = []
        for i in range(parts):
            if i >= active or not picked[i]:
                out.append(None)
                continue
            js = picked[i]
            rate = None if self.request_rate is None else self.request_rate * len(js) / n
            out.append(Traffic(
                mode=self.mode, num_requests=len(js), input_len=self.input_len, output_len=self.output_len,
                concurrency=None if self.mode == "batch" else clients[i], request_rate=rate,
                range_ratio=self.range_ratio, seed=self.seed, requests=[lengths[j] for j in js],
                arrivals_s=[] if sends is None else [sends[j] for j in js],
            ))  # fmt: skip
        return out

    def share(self, part: int, parts: int) -> Traffic | None:
        """Server ``part``'s item of ``split(parts)``."""
        return self.split(parts)[part]


def read_lengths(path: Path) -> list[tuple[int, int, float]]:
    """(prompt tokens, output tokens, weight) rows from a file: a JSON list of ``[prompt, output]`` or
    ``[prompt, output, weight]`` rows, or text with one ``prompt,output[,weight]`` row per line (commas or
    spaces; blank lines, ``#`` comments and a header line are skipped). Weights default to 1. A bad file is one
    InputFileError line (exit 1)."""
    text = read_input(path, "lengths file", InputFileError)
    rows: list[tuple[int, int, float]] = []

    def add(fields: list, where: str) -> None:
        if len(fields) not in (2, 3):
            raise InputFileError(f"{path}{where}: a row is prompt tokens, output tokens and an optional weight, "
                             f"not {fields!r}")
        try:
            i, o = int(fields[0]), int(fields[1])
            w = float(fields[2]) if len(fields) == 3 else 1.0
        except (TypeError, ValueError):
            raise InputFileError(f"{path}{where}: not numbers: {fields!r}") from None
        if not (1 <= i <= MAX_TOKENS and 1 <= o <= MAX_TOKENS and math.isfinite(w) and w > 0):
            raise InputFileError(f"{path}{where}: ({i}, {o}, {w:g}) must be tokens >= 1 and a weight > 0")
        rows.append((i, o, w))

    if text.lstrip().startswith("["):
        data = parse_json(text, str(path), InputFileError)
        if not isinstance(data, list):
            raise InputFileError(f"{path}: expected a JSON list of [prompt, output(, weight)] rows")
        for k, row in enumerate(data):
            add(row if isinstance(row, list) else [row], f" row {k + 1}")
    else:
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.replace(",", " ").split()
            if not rows and not fields[0].lstrip("+-").replace(".", "", 1).isdigit():
                continue  # a header
            add(fields, f":{n}")
    if not rows:
        raise InputFileError(f"{path} holds no request lengths")
    if len(rows) > MAX_REQUESTS:
        raise InputFileError(f"{path} holds {len(rows):,} rows; at most {MAX_REQUESTS:,}")
    return rows
