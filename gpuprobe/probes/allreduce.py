"""All-reduce probe: time, algbw and busbw over a size sweep, for the whole group and every pair.

One process per rank through torch.distributed: NCCL with one process per GPU, or gloo on CPU processes (what
the CPU tests run for real). The worker side is ``gpuprobe.probes.allreduce_worker``; this module plans the sweep,
starts and watches the workers, and turns their lines into Measurements.

Formula (nccl-tests ``AllReduceGetBw``, see ``gpuprobe.probes.busbw``): for S bytes per rank reduced in t seconds
over n ranks, ``algbw = S / t`` and ``busbw = algbw × 2(n − 1)/n`` (0 with one rank). t is the median over
samples of nccl-tests' reported time: host clock around ``iters`` back-to-back ops, device synchronized after the
last, divided by ``iters`` and averaged over the ranks.

A hung or crashed worker never hangs the probe: each group sweep has a deadline scaled with its sizes; past it
(or on a crash) every worker is killed, the sizes not measured become ``error`` records with a one-line reason,
what was measured is kept, and a fresh world carries on with the remaining groups.
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gpuprobe.errors import MissingDependency, UsageError
from gpuprobe.options import MiB, ProbeOptions
from gpuprobe.probes.allreduce_worker import FLOAT32_BYTES, WorkerPlan, worker_main
from gpuprobe.probes.busbw import allreduce_bandwidths
from gpuprobe.probes.core.registry import ProbeContext, probe
from gpuprobe.probes.core.workers import JsonLinesTail, free_port, kill_workers, last_log_line
from gpuprobe.results.model import Measurement, Status
from gpuprobe.results.stats import summarize

PROBE = "all_reduce"
GLOO_DEFAULT_MAX_BYTES = 16 * MiB
"""gloo on CPU stops here unless the user chose the maximum size (the default sweep to 1 GiB is meant for GPUs)."""
STARTUP_TIMEOUT_S = 180.0
"""Spawn, import torch, join the world and agree on the memory cap."""
_POLL_S = 0.02


# ---- planning -----------------------------------------------------------------------------------------------


def collective_groups(members: Sequence[int], pairs: bool = True) -> list[list[int]]:
    """The whole set, then every pair (a < b) when ``pairs`` and the set has more than two members."""
    whole = sorted(members)
    groups = [whole]
    if pairs and len(whole) > 2:
        groups += [[a, b] for i, a in enumerate(whole) for b in whole[i + 1:]]
    return groups


def element_counts(sizes: Sequence[int]) -> list[int]:
    """float32 elements per message: sizes below 4 bytes become one element; duplicates dropped; ascending."""
    return sorted({max(1, s // FLOAT32_BYTES) for s in sizes})


def group_timeout_s(counts: Sequence[int], iters: int, warmup: int, samples: int, backend: str) -> float:
    """Deadline for one group's sweep: communicator set-up plus every op at a pessimistic rate.

    NCCL: 60 s + ops × (2 S / 4 GB/s + 1 ms); gloo: 30 s + ops × (2 S / 0.1 GB/s + 5 ms), with
    ops = warm-up + iters × samples + 2 per size. A healthy link finishes far inside it; a hung peer is caught
    within about two minutes of the default NCCL sweep.
    """
    base, rate, latency = (60.0, 4e9, 1e-3) if backend == "nccl" else (30.0, 1e8, 5e-3)
    ops = warmup + iters * samples + 2
    return base + sum(ops * (2 * c * FLOAT32_BYTES / rate + latency) for c in counts)


def _default_max(options: ProbeOptions) -> bool:
    """True when the all-reduce max size is the default (or quick mode's reduction of it), not the user's."""
    default = next(f.default for f in fields(ProbeOptions) if f.name == "allreduce_max_bytes")
    return options.allreduce_max_bytes in (default, ProbeOptions(quick=True).allreduce_max_bytes)


def probe_sizes(options: ProbeOptions, backend: str) -> tuple[list[int], list[str]]:
    """The sweep for ``backend``, and a note when gloo's default sweep was capped at 16 MiB."""
    sizes = options.allreduce_sizes()
    if backend != "gloo" or not _default_max(options) or options.allreduce_max_bytes <= GLOO_DEFAULT_MAX_BYTES:
        return sizes, []
    capped = [s for s in sizes if s <= GLOO_DEFAULT_MAX_BYTES]
    if not capped:
        return sizes, []
    return capped, [f"gloo on CPU: default sweep capped at {_fmt(GLOO_DEFAULT_MAX_BYTES)} "
                    "(set the all-reduce maximum size to go further)"]


def choose_backend(requested: str | None, gpus: Sequence[int]) -> str:
    """``requested``, else NCCL when GPUs are selected, else gloo on CPU processes.

    The parent never imports torch (seconds of start-up): the workers do, and report a missing NCCL themselves.
    """
    if requested:
        return requested
    return "nccl" if gpus else "gloo"


def _require_torch() -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise MissingDependency.of("torch", "the all-reduce probe needs torch.distributed")


def _fmt(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def _secs(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.2g}"


# ---- the sweep ----------------------------------------------------------------------------------------------


@dataclass
class _Plan:
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


def _base_notes(plan: _Plan, n: int) -> list[str]:
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


def _measurement(plan: _Plan, group: list[int], status: Status, **kw: Any) -> Measurement:
    pc = plan.path_class(group[0], group[1]) if plan.path_class and len(group) == 2 else None
    return Measurement(probe=PROBE, status=status, unit="us", direction="collective", engine=plan.backend,
                       ranks=list(group), path_class=pc, **kw)


def _measured(plan: _Plan, group: list[int], line: dict[str, Any], extra: list[str]) -> Measurement:
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
                        notes=_base_notes(plan, len(group)) + extra, duration_s=float(line.get("wall_s", 0.0)))


class _World:
    """One world of workers sweeping ``plan.groups[i] for i in todo``; yields Measurements as lines arrive.

    ``start(gated=True)`` spawns the workers and lets them import torch and join the world, then hold until
    ``run()`` (so their start-up overlaps whatever the parent does in between).
    """

    def __init__(self, plan: _Plan, todo: list[int]) -> None:
        self.plan, self.todo = plan, todo
        self.procs: list[Any] = []
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

    def _watch(self, procs: list[Any], tail: JsonLinesTail, directory: Path) -> Iterator[Measurement]:
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
            plan.progress(f"{PROBE} {plan.who(group)} {_fmt(count * FLOAT32_BYTES)}")
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
                                   reason=f"not enough free memory for {_fmt(c * FLOAT32_BYTES)} per rank "
                                          f"(largest size that fits: {_fmt(top)})", notes=list(plan.notes))

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


def iter_allreduce_sweep(groups: Sequence[Sequence[int]], backend: str, sizes: Sequence[int], iters: int = 20,
                         warmup: int = 5, samples: int = 3, **kw: Any) -> Iterator[Measurement]:
    """Sweep ``sizes`` (bytes, float32) over each group; yield one Measurement per (group, size) as measured.

    ``groups`` and ``world`` name GPUs for NCCL (one process per GPU index) and process ranks for gloo (CPU
    processes). ``world`` defaults to every member of every group. ``timeout_s`` is the deadline of one group's
    sweep (default: :func:`group_timeout_s`). A group that fails yields ``error`` records for its unmeasured
    sizes, and the remaining groups run in a fresh set of workers. ``cuda_graph`` (NCCL only) captures each
    sample's ops in a CUDA graph and times the replay (nccl-tests ``-G 1``): the device-side time without the
    per-call launch cost, which is what a CUDA-graph-captured decode step (vLLM) pays.
    """
    yield from sweep(make_plan(groups, backend, sizes, iters, warmup, samples, **kw))


def make_plan(
    groups: Sequence[Sequence[int]],
    backend: str,
    sizes: Sequence[int],
    iters: int = 20,
    warmup: int = 5,
    samples: int = 3,
    *,
    world: Sequence[int] | None = None,
    timeout_s: float | None = None,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
    path_class: Callable[[int, int], str | None] | None = None,
    progress: Callable[[str], None] | None = None,
    notes: Sequence[str] = (),
    cuda_graph: bool = False,
) -> _Plan:
    """Check the arguments of a sweep (see :func:`iter_allreduce_sweep` for their meaning) and plan it."""
    _require_torch()
    if backend not in ("nccl", "gloo"):
        raise UsageError(f"collective backend {backend!r} is not one of nccl, gloo")
    if not groups or any(not g or len(set(g)) != len(g) for g in groups):
        raise UsageError(f"all-reduce groups {list(map(list, groups))} are invalid: give non-empty distinct ranks")
    if cuda_graph and backend != "nccl":
        raise UsageError("CUDA-graph timing needs the NCCL backend")
    if not sizes or min(sizes) < 1 or min(iters, samples) < 1 or warmup < 0:
        raise UsageError("all-reduce sweep needs sizes >= 1 byte, iters and samples >= 1, warm-up >= 0")
    labels = sorted(set(world) if world is not None else {m for g in groups for m in g})
    if any(m not in labels for g in groups for m in g):
        raise UsageError(f"all-reduce groups {list(map(list, groups))} name ranks outside the world {labels}")
    return _Plan(backend=backend, labels=labels, groups=[sorted(g) for g in groups], counts=element_counts(sizes),
                 iters=iters, warmup=warmup, samples=samples, timeout_s=timeout_s,
                 startup_timeout_s=startup_timeout_s, path_class=path_class,
                 progress=progress or (lambda label: None), notes=list(notes), cuda_graph=cuda_graph)


def sweep(plan: _Plan, first: _World | None = None) -> Iterator[Measurement]:
    """Run ``plan``: the groups in one world (``first``, possibly started early), failed ones' successors in
    fresh worlds."""
    todo = list(range(len(plan.groups)))
    w = first
    while todo:
        w = w if w is not None else _World(plan, todo)
        yield from w.run()
        todo, w = w.left_over, None


def run_allreduce_sweep(
    groups: Sequence[Sequence[int]],
    backend: str,
    sizes: Sequence[int],
    iters: int = 20,
    warmup: int = 5,
    samples: int = 3,
    **kw: Any,
) -> list[Measurement]:
    """:func:`iter_allreduce_sweep` collected into a list (same arguments)."""
    return list(iter_allreduce_sweep(groups, backend, sizes, iters, warmup, samples, **kw))


PRESTART_KEY = "all_reduce.world"


def _probe_plan(ctx: ProbeContext) -> _Plan | None:
    opts = ctx.options
    backend = choose_backend(opts.collective_backend, ctx.gpus)
    members = list(ctx.gpus) if backend == "nccl" else list(range(opts.cpu_ranks))
    if not members:
        return None
    sizes, notes = probe_sizes(opts, backend)
    return make_plan(collective_groups(members, opts.allreduce_pairs), backend, sizes, opts.allreduce_iters,
                     opts.allreduce_warmup_iters, opts.allreduce_samples, world=members,
                     path_class=ctx.path_class if backend == "nccl" else None, notes=notes)


def prestart(ctx: ProbeContext) -> None:
    """Start the all-reduce workers now, held before their sweep, so that importing torch and joining the world
    overlap the probes that run first. The ``all_reduce`` probe picks them up; :func:`discard` ends them if it
    never runs. Any problem here is left for the probe itself to report."""
    try:
        plan = _probe_plan(ctx)
    except Exception:  # noqa: BLE001 - the probe reports it in its own record
        return
    if plan is None:
        return
    world = _World(plan, list(range(len(plan.groups))))
    world.start(gated=True)
    ctx.cache[PRESTART_KEY] = world


def settle(ctx: ProbeContext, timeout_s: float = 60.0) -> float:
    """Wait until the prestarted workers have finished starting (they then sit idle before their gate), so that
    probes sensitive to other host/GPU activity (latencies) do not measure their CUDA and NCCL set-up.
    Returns the seconds waited; gives up at ``timeout_s`` or when a worker has exited (the probe reports it)."""
    world = ctx.cache.get(PRESTART_KEY)
    if world is None or world.directory is None or world.start_error:
        return 0.0
    t0 = time.monotonic()
    held = [world.directory / f"held{r}" for r in range(len(world.procs))]
    while not all(h.exists() for h in held):
        if time.monotonic() - t0 > timeout_s or any(p.exitcode is not None for p in world.procs):
            break
        time.sleep(0.01)
    return time.monotonic() - t0


def discard(ctx: ProbeContext) -> None:
    world = ctx.cache.pop(PRESTART_KEY, None)
    if world is not None:
        world.close()


@probe(PROBE, "collective",
       "All-reduce time, algbw and busbw over a size sweep, whole group and every pair (NCCL per GPU, or gloo on "
       "CPU processes), result checked like nccl-tests' #wrong",
       needs="dist", unit="us", prestart=prestart, settle=settle, discard=discard)
def all_reduce(ctx: ProbeContext) -> Iterator[Measurement]:
    world: _World | None = ctx.cache.pop(PRESTART_KEY, None)
    plan = world.plan if world is not None else _probe_plan(ctx)
    if plan is None:
        yield Measurement(probe=PROBE, status="waived", unit="us", direction="collective",
                          engine=choose_backend(ctx.options.collective_backend, ctx.gpus),
                          reason="NCCL all-reduce needs GPUs; none selected")
        return
    plan.progress = ctx.progress
    if world is not None:
        plan.notes.append("workers started while the earlier probes ran (their start-up is not in this probe's time)")
    first = world or _World(plan, list(range(len(plan.groups))))
    yield from sweep(plan, first)
    if first.versions.get("nccl"):
        ctx.cache["nccl_version"] = first.versions["nccl"]
