"""The parent side of an all-reduce sweep: a world of worker processes (``gpuprobe.probes.allreduce_worker``),
started, watched against a deadline, ended, and their JSON lines turned into Measurements.

A hung or crashed worker never hangs the sweep: each group sweep has a deadline scaled with its sizes; past it
(or on a crash) every worker is killed, the sizes not measured become ``error`` records with a one-line reason,
what was measured is kept, and a fresh world carries on with the remaining groups (:func:`sweep`).
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from gpuprobe.probes.allreduce_worker import FLOAT32_BYTES, WorkerPlan, worker_main
from gpuprobe.probes.busbw import allreduce_bandwidths
from gpuprobe.probes.core.workers import JsonLinesTail, free_port, kill_workers, last_log_line
from gpuprobe.results.model import Measurement, Status
from gpuprobe.results.stats import summarize

PROBE = "all_reduce"
_POLL_S = 0.02


def group_timeout_s(counts: Sequence[int], iters: int, warmup: int, samples: int, backend: str) -> float:
    """Deadline for one group's sweep: communicator set-up plus every op at a pessimistic rate.

    NCCL: 60 s + ops × (2 S / 4 GB/s + 1 ms); gloo: 30 s + ops × (2 S / 0.1 GB/s + 5 ms), with
    ops = warm-up + iters × samples + 2 per size. A healthy link finishes far inside it; a hung peer is caught
    within about two minutes of the default NCCL sweep.
    """
    base, rate, latency = (60.0, 4e9, 1e-3) if backend == "nccl" else (30.0, 1e8, 5e-3)
    ops = warmup + iters * samples + 2
    return base + sum(ops * (2 * c * FLOAT32_BYTES / rate + latency) for c in counts)


def fmt_size(n: int) -> str:
    """Bytes in the largest binary unit that divides them exactly (``16 MiB``, ``4 KiB``, ``3 B``)."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def _secs(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.2g}"


@dataclass
class SweepPlan:
    """A checked sweep (``allreduce.make_plan``): the world's ranks, its groups, the element counts and timing."""

    backend: str
    labels: list[int]
    groups: list[list[int]]
    counts: list[int]
    iters: int
    warmup: int
    samples: int
    timeout_s: float | None
    startup_timeout_s: float
    path_class: Callable[[int, int], str | None] | None
    progress: Callable[[str], None]
    notes: list[str] = field(default_factory=list)
    cuda_graph: bool = False

    def who(self, group: Sequence[int]) -> str:
        return f"{'GPUs' if self.backend == 'nccl' else 'ranks'} {list(group)}"

    def rank_name(self, rank: int) -> str:
        return f"{'GPU' if self.backend == 'nccl' else 'rank'} {self.labels[rank]}"

    def budget_s(self, counts: Sequence[int]) -> float:
        if self.timeout_s is not None:
            return self.timeout_s
        return group_timeout_s(counts, self.iters, self.warmup, self.samples, self.backend)


def base_notes(plan: SweepPlan, n: int) -> list[str]:
    notes = [
        "in-place float32 sum (torch.distributed has no out-of-place all-reduce): compare with nccl-tests' "
        "in-place column",
        f"time: host clock over {plan.iters} back-to-back ops / {plan.iters}, device synchronized, averaged over "
        f"ranks, as nccl-tests; median of {plan.samples} samples after {plan.warmup} warm-up ops",
    ]
    if plan.cuda_graph:
        notes.append(f"CUDA graph: the {plan.iters} ops of a sample are captured once and replayed, as nccl-tests "
                     "-G 1 (no per-call launch overhead in the time)")
    elif plan.backend == "nccl":
        notes.append("eager: each op's torch.distributed + NCCL launch cost is in the time (17-30 us per call on "
                     "one H100 host), which dominates small messages; cuda_graph=True removes it")
    if n == 1:
        notes.append("one rank: busbw is 0 by definition; NCCL's in-place all-reduce on one rank moves no data, "
                     "so the time is the per-call launch overhead")
    return notes + plan.notes


def _measurement(plan: SweepPlan, group: list[int], status: Status, **kw: Any) -> Measurement:
    pc = plan.path_class(group[0], group[1]) if plan.path_class and len(group) == 2 else None
    return Measurement(probe=PROBE, status=status, unit="us", direction="collective", engine=plan.backend,
                       ranks=list(group), path_class=pc, **kw)


def _measured(plan: SweepPlan, group: list[int], line: dict[str, Any], extra: list[str]) -> Measurement:
    size = int(line["count"]) * FLOAT32_BYTES
    samples = [float(x) for x in line["samples_us"]]
    stat = summarize(samples)
    wrong = int(line["wrong"])
    alg = bus = None
    if stat is not None and stat.median > 0:
        alg, bus = allreduce_bandwidths(size, stat.median * 1e-6, len(group))
    reason = f"{wrong} of {line['count'] * len(group)} elements wrong after the all-reduce" if wrong else None
    return _measurement(plan, group, "mismatch" if wrong else "ok", size_bytes=size, samples=samples, stat=stat,
                        algbw_gbps=alg, busbw_gbps=bus, verified=wrong == 0, wrong_elements=wrong, reason=reason,
                        notes=base_notes(plan, len(group)) + extra, duration_s=float(line.get("wall_s", 0.0)))


class World:
    """One world of workers sweeping ``plan.groups[i] for i in todo``; yields Measurements as lines arrive.

    ``start(gated=True)`` spawns the workers and lets them import torch and join the world, then hold until
    ``run()`` (so their start-up overlaps whatever the parent does in between).
    """

    def __init__(self, plan: SweepPlan, todo: list[int]) -> None:
        self.plan, self.todo = plan, todo
        self.procs: list[BaseProcess] = []
        self.directory: Path | None = None
        self.go_file: Path | None = None
        self.start_error: str | None = None
        self.versions: dict[str, Any] = {}
        self.left_over: list[int] = []
        """Groups not attempted because an earlier one failed (run them in a fresh world)."""
        self.counts = list(plan.counts)
        self.got: dict[int, set[int]] = {i: set() for i in range(len(todo))}
        self.done: set[int] = set()
        self.ready = False
        self.setup_s: dict[int, float] = {}

    def start(self, gated: bool = False) -> None:
        plan = self.plan
        self.directory = directory = Path(tempfile.mkdtemp(prefix="gpuprobe-allreduce-"))
        self.go_file = directory / "go" if gated else None
        groups = [[plan.labels.index(m) for m in plan.groups[i]] for i in self.todo]
        budgets = sum(plan.budget_s(plan.counts) for _ in groups)
        wplan = WorkerPlan(backend=plan.backend, labels=plan.labels, port=free_port(), groups=groups,
                           counts=plan.counts, iters=plan.iters, warmup=plan.warmup, samples=plan.samples,
                           directory=str(directory), init_timeout_s=plan.startup_timeout_s + budgets,
                           cuda_graph=plan.cuda_graph, go_file=str(self.go_file) if self.go_file else None)
        mp = multiprocessing.get_context("spawn")
        try:
            for rank in range(len(plan.labels)):
                p = mp.Process(target=worker_main, args=(rank, wplan), daemon=True, name=f"gpuprobe-allreduce-{rank}")
                p.start()
                self.procs.append(p)
        except Exception as exc:  # noqa: BLE001 - e.g. too many processes; becomes a record
            self.start_error = f"could not start the {plan.backend} workers: {' '.join(str(exc).split())[:300]}"

    def close(self) -> None:
        kill_workers(self.procs)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def run(self) -> Iterator[Measurement]:
        if self.directory is None:
            self.start()
        assert self.directory is not None
        try:
            if self.start_error:
                yield from self._fail(self.start_error)
                return
            if self.go_file is not None:
                self.go_file.touch()
            tail = JsonLinesTail([self.directory / f"rank{r}.jsonl" for r in range(len(self.procs))])
            try:
                yield from self._watch(self.procs, tail, self.directory)
            except KeyboardInterrupt:  # sizes the workers measured but the sweep had not read yet are kept
                for x in tail.read():
                    if x["kind"] in ("group", "size"):
                        yield from self._group_line(x["kind"], x)
                raise
        finally:
            self.close()

    def _current(self) -> int | None:
        return next((i for i in range(len(self.todo)) if i not in self.done), None)

    def _watch(self, procs: list[BaseProcess], tail: JsonLinesTail, directory: Path) -> Iterator[Measurement]:
        plan = self.plan
        deadline = time.monotonic() + plan.startup_timeout_s
        started: int | None = None
        plan.progress(f"{PROBE}: starting {len(procs)} {plan.backend} workers")
        bye = False
        while True:
            for line in tail.read():
                kind = line["kind"]
                if kind == "fail":
                    yield from self._fail(f"{plan.backend} worker for {plan.rank_name(line['rank'])} failed"
                                          f"{self._during()}: {line['error']}")
                    return
                if kind == "ready":
                    self.ready = True
                    self.versions = {"torch": line.get("torch"), "nccl": line.get("nccl")}
                    cap = int(line["cap_bytes"])
                    self.counts = [c for c in plan.counts if c * FLOAT32_BYTES <= cap]
                elif kind == "bye":
                    bye = True
                else:
                    yield from self._group_line(kind, line)
            cur = self._current()
            if cur is not None and cur != started and self.ready:
                started, deadline = cur, time.monotonic() + plan.budget_s(self.counts)
                plan.progress(f"{PROBE} {plan.who(plan.groups[self.todo[cur]])}")
            if cur is None and (bye or all(p.exitcode is not None for p in procs)):
                return  # everything is measured; close() ends the workers (their tear-down is not waited for)
            dead = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode is not None and p.exitcode != 0]
            if dead or (cur is not None and all(p.exitcode is not None for p in procs)):
                lines = tail.read()  # a worker writes its failure line just before exiting
                fail = next((x for x in lines if x["kind"] == "fail"), None)
                for x in lines:
                    if x["kind"] not in ("fail", "ready", "bye"):
                        yield from self._group_line(x["kind"], x)
                if fail is not None:
                    reason = f"{plan.backend} worker for {plan.rank_name(fail['rank'])} failed{self._during()}: " \
                             f"{fail['error']}"
                else:
                    rank, code = dead[0] if dead else (0, 0)
                    last = last_log_line(directory / f"rank{rank}.log")
                    reason = f"{plan.backend} worker for {plan.rank_name(rank)} exited with code {code}" \
                             f"{self._during()}" + (f" (last output: {last})" if last else "")
                yield from self._fail(reason)
                return
            if time.monotonic() > deadline:
                yield from self._fail(self._timeout_reason())
                return
            time.sleep(_POLL_S)

    def _during(self) -> str:
        cur = self._current()
        if not self.ready or cur is None:
            return " while starting"
        return f" during the sweep on {self.plan.who(self.plan.groups[self.todo[cur]])}"

    def _timeout_reason(self) -> str:
        plan = self.plan
        cur = self._current()
        if not self.ready or cur is None:
            return f"{plan.backend} workers did not start within {_secs(plan.startup_timeout_s)} s"
        group = plan.groups[self.todo[cur]]
        hint = " (P2P or ACS problem?)" if plan.backend == "nccl" and len(group) > 1 else ""
        return f"{plan.backend.upper() if plan.backend == 'nccl' else plan.backend} all-reduce timed out after " \
               f"{_secs(plan.budget_s(self.counts))} s on {plan.who(group)}{hint}"

    def _group_line(self, kind: str, line: dict[str, Any]) -> Iterator[Measurement]:
        plan = self.plan
        g = int(line["g"])
        for earlier in range(g):  # lines of a later group prove the earlier ones finished
            self.done.add(earlier)
        group = plan.groups[self.todo[g]]
        if kind == "group":
            self.setup_s[g] = float(line["setup_s"])
        elif kind == "size":
            count = int(line["count"])
            extra = []
            if not self.got[g] and g in self.setup_s:
                extra.append(f"communicator set-up {self.setup_s[g]:.2f} s (not timed)")
            self.got[g].add(count)
            yield _measured(plan, group, line, extra)
            plan.progress(f"{PROBE} {plan.who(group)} {fmt_size(count * FLOAT32_BYTES)}")
        elif kind == "group_done":
            self.done.add(g)
            yield from self._waived_sizes(g)

    def _waived_sizes(self, g: int) -> Iterator[Measurement]:
        plan = self.plan
        if not self.counts and not plan.counts:
            return
        top = max(self.counts) * FLOAT32_BYTES if self.counts else 0
        for c in plan.counts:
            if c not in self.counts:
                yield _measurement(plan, plan.groups[self.todo[g]], "waived", size_bytes=c * FLOAT32_BYTES,
                                   reason=f"not enough free memory for {fmt_size(c * FLOAT32_BYTES)} per rank "
                                          f"(largest size that fits: {fmt_size(top)})", notes=list(plan.notes))

    def _fail(self, reason: str) -> Iterator[Measurement]:
        """Error records for what the failure left unmeasured; later groups go to ``left_over``."""
        plan = self.plan
        cur = self._current()
        if not self.ready:  # nothing ran: one record per group
            for i in self.todo:
                yield _measurement(plan, plan.groups[i], "error", reason=reason, notes=list(plan.notes))
            return
        if cur is None:
            return
        group = plan.groups[self.todo[cur]]
        for c in self.counts:
            if c not in self.got[cur]:
                yield _measurement(plan, group, "error", size_bytes=c * FLOAT32_BYTES, reason=reason,
                                   notes=list(plan.notes))
        yield from self._waived_sizes(cur)
        self.left_over = [self.todo[i] for i in range(cur + 1, len(self.todo))]


def sweep(plan: SweepPlan, first: World | None = None) -> Iterator[Measurement]:
    """Run ``plan``: the groups in one world (``first``, possibly started early), failed ones' successors in
    fresh worlds."""
    todo = list(range(len(plan.groups)))
    w = first
    while todo:
        w = w if w is not None else World(plan, todo)
        yield from w.run()
        todo, w = w.left_over, None
