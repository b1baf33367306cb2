"""Node-to-node links: point-to-point bandwidth and latency between two nodes over send/recv, verified.

Each ordered pair (src -> dst) is measured by both processes calling :func:`measure_pair` with their role; the
sender makes the records. Bandwidth: ``warmup`` messages, then per sample ``copies`` back-to-back messages of
``size_bytes`` and a one-element acknowledgement from the receiver, timed on the sender's host clock (so the
time covers delivery, not only hand-off to the socket): GB/s = size × copies / time. Latency: per sample
``pings`` round trips of an 8-byte message, reported as half the round trip in µs. After timing, one fresh
message (``allreduce_worker``'s pattern, distinct per source node) is checked element by element on the receiver,
and one ping must come back incremented; the wrong counts are the records' ``wrong_elements``.

:func:`rounds` schedules every unordered pair once in rounds of disjoint pairs (the round-robin "circle"
method): N-1 rounds for an even N, N for an odd N, so the whole matrix costs O(N) rounds, both directions of a
pair in the same round.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gpuprobe.probes.allreduce_worker import FLOAT32_BYTES, _count_wrong, _fill
from gpuprobe.results.model import Measurement, Unit
from gpuprobe.results.stats import summarize

BANDWIDTH = "node_p2p_bandwidth"
LATENCY = "node_p2p_latency"
PING_ELEMENTS = 2
"""Latency messages: two float32 (8 bytes)."""


def rounds(ranks: list[int]) -> list[list[tuple[int, int]]]:
    """Rounds of disjoint pairs (a < b) covering every pair of ``ranks`` exactly once."""
    players: list[int | None] = list(ranks) + ([None] if len(ranks) % 2 else [])
    n = len(players)
    out = []
    for _ in range(n - 1):
        pairs = []
        for i in range(n // 2):
            a, b = players[i], players[n - 1 - i]
            if a is not None and b is not None:
                pairs.append((min(a, b), max(a, b)))
        out.append(sorted(pairs))
        players = [players[0], players[-1], *players[1:-1]]
    return out


@dataclass(frozen=True)
class PairPlan:
    backend: str
    size_bytes: int
    copies: int
    warmup: int
    samples: int
    pings: int
    timeout_s: float
    verify: bool = True


class Channel:
    """Blocking send/recv to one peer (its rank in the pair's own process group ``pg``), with the cluster
    timeout on every operation."""

    def __init__(self, pg: Any, peer: int, timeout_s: float, sync: Callable[[], None]) -> None:
        self.pg, self.peer, self.sync = pg, peer, sync
        self.timeout = timedelta(seconds=timeout_s)

    def send(self, t: Any) -> None:
        self.pg.send([t], self.peer, 0).wait(self.timeout)

    def recv(self, t: Any) -> None:
        self.pg.recv([t], self.peer, 0).wait(self.timeout)
        self.sync()


def _record(probe: str, src: str, dst: str, plan: PairPlan, samples: list[float], wrong: int | None,
            size: int, notes: list[str]) -> Measurement:
    bad = wrong is not None and wrong > 0
    unit: Unit = "GB/s" if probe == BANDWIDTH else "us"
    return Measurement(probe=probe, status="mismatch" if bad else "ok", unit=unit, src=src, dst=dst,
                       initiator=src, direction="node", engine=plan.backend, size_bytes=size, samples=samples,
                       stat=summarize(samples), verified=None if wrong is None else wrong == 0, wrong_elements=wrong,
                       reason=f"{wrong} of {size // FLOAT32_BYTES} elements arrived wrong" if bad else None,
                       notes=notes)


def failed_record(probe: str, src: str, dst: str, plan: PairPlan, reason: str) -> Measurement:
    return Measurement(probe=probe, status="error", unit="GB/s" if probe == BANDWIDTH else "us", src=src, dst=dst,
                       initiator=src, direction="node", engine=plan.backend,
                       size_bytes=plan.size_bytes if probe == BANDWIDTH else PING_ELEMENTS * FLOAT32_BYTES,
                       reason=reason)


def measure_pair(torch: Any, ch: Channel, plan: PairPlan, sender: bool, src: str, dst: str, src_rank: int,
                 device: Any, seed: int) -> list[Measurement]:
    """One direction (src -> dst) of a pair; the sender returns its two records, the receiver []."""
    out: list[Measurement] = []
    count = max(1, plan.size_bytes // FLOAT32_BYTES)
    buf = torch.zeros(count, dtype=torch.float32, device=device)
    ack = torch.zeros(1, dtype=torch.int64, device=device)
    # bandwidth
    if sender:
        for _ in range(plan.warmup):
            ch.send(buf)
        ch.recv(ack)
        samples = []
        for _ in range(plan.samples):
            t = time.perf_counter()
            for _ in range(plan.copies):
                ch.send(buf)
            ch.recv(ack)
            samples.append(count * FLOAT32_BYTES * plan.copies / (time.perf_counter() - t) / 1e9)
        wrong = None
        if plan.verify:
            _fill(torch, buf, src_rank, seed)
            ch.send(buf)
            ch.recv(ack)
            wrong = int(ack.item())
        out.append(_record(BANDWIDTH, src, dst, plan, samples, wrong, count * FLOAT32_BYTES, [
            f"{plan.copies} messages of {count * FLOAT32_BYTES} B per sample, timed on the sender up to the "
            f"receiver's acknowledgement; median of {plan.samples} samples after {plan.warmup} warm-up messages"]))
    else:
        for _ in range(plan.warmup):
            ch.recv(buf)
        ch.send(ack)
        for _ in range(plan.samples):
            for _ in range(plan.copies):
                ch.recv(buf)
            ch.send(ack)
        if plan.verify:
            buf.zero_()
            ch.recv(buf)
            ack[0] = _count_wrong(torch, buf, [src_rank], seed)
            ch.send(ack)
    # latency
    ping = torch.zeros(PING_ELEMENTS, dtype=torch.float32, device=device)
    if sender:
        samples = []
        ch.recv(ack)  # the receiver is ready
        for _ in range(plan.samples):
            t = time.perf_counter()
            for _ in range(plan.pings):
                ch.send(ping)
                ch.recv(ping)
            samples.append((time.perf_counter() - t) / plan.pings / 2 * 1e6)
        wrong = None
        if plan.verify:
            ping.fill_(float(seed % 1000))
            ch.send(ping)
            ch.recv(ping)
            wrong = int((ping != float(seed % 1000 + 1)).sum().item())
        out.append(_record(LATENCY, src, dst, plan, samples, wrong, PING_ELEMENTS * FLOAT32_BYTES, [
            f"half the round trip of an 8-byte message, {plan.pings} round trips per sample, median of "
            f"{plan.samples} samples"]))
    else:
        ch.send(ack)
        for _ in range(plan.samples * plan.pings):
            ch.recv(ping)
            ch.send(ping)
        if plan.verify:
            ch.recv(ping)
            ping += 1
            ch.send(ping)
    return out
