"""The load a prediction is for: how requests arrive and how long their prompts and outputs are.

Three arrival modes, as the tools people measure vLLM with: ``batch`` (every request submitted at t = 0, as
``LLM.generate``), ``closed`` (``concurrency`` clients, each sending its next request the moment the previous
one ends, as ``vllm bench serve --max-concurrency C``) and ``poisson`` (arrivals at ``request_rate`` per
second, optionally capped by ``concurrency``, as ``vllm bench serve --request-rate R``). Lengths are fixed,
uniform in [L(1 − r), L(1 + r)] (``--random-range-ratio r``), or drawn from a histogram of
(input tokens, output tokens, weight) rows.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

from gpuprobe.errors import UsageError

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

    def share(self, part: int, parts: int) -> Traffic | None:
        """What one of ``parts`` identical servers behind a balancer gets: an even split of the requests, the
        clients and the arrival rate (the first ``n % parts`` servers get one more); None when it gets nothing
        (fewer clients or requests than servers: that server stays idle)."""
        def split(n: int) -> int:
            return n // parts + (1 if part < n % parts else 0)

        n = split(self.num_requests)
        c = None if self.concurrency is None else split(self.concurrency)
        if n == 0 or c == 0:
            return None
        return Traffic(
            mode=self.mode, num_requests=n, input_len=self.input_len, output_len=self.output_len, concurrency=c,
            request_rate=None if self.request_rate is None else self.request_rate / parts,
            range_ratio=self.range_ratio, histogram=list(self.histogram), seed=self.seed + part,
            requests=self.requests[part::parts], arrivals_s=self.arrivals_s[part::parts],
        )  # fmt: skip
