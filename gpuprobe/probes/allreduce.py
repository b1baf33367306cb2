"""All-reduce probe: time, algbw and busbw over a size sweep, for the whole group and every pair.

One process per rank through torch.distributed: NCCL with one process per GPU, or gloo on CPU processes (what
the CPU tests run for real). The worker side is ``gpuprobe.probes.allreduce_worker``; this module plans the sweep
and declares the probe; ``gpuprobe.probes.allreduce_world`` starts and watches the workers and turns their lines
into Measurements.

Formula (nccl-tests ``AllReduceGetBw``, see ``gpuprobe.probes.busbw``): for S bytes per rank reduced in t seconds
over n ranks, ``algbw = S / t`` and ``busbw = algbw × 2(n − 1)/n`` (0 with one rank). t is the median over
samples of nccl-tests' reported time: host clock around ``iters`` back-to-back ops, device synchronized after the
last, divided by ``iters`` and averaged over the ranks.

A hung or crashed worker never hangs the probe: each group sweep has a deadline scaled with its sizes; past it
(or on a crash) every worker is killed, the sizes not measured become ``error`` records with a one-line reason,
what was measured is kept, and a fresh world carries on with the remaining groups.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from typing import Any

from gpuprobe.errors import MissingDependency, UsageError
from gpuprobe.options import MiB, ProbeOptions
from gpuprobe.probes.allreduce_worker import FLOAT32_BYTES
from gpuprobe.probes.allreduce_world import PROBE, SweepPlan, World, fmt_size, sweep
from gpuprobe.probes.core.registry import ProbeContext, probe
from gpuprobe.results.model import Measurement

GLOO_DEFAULT_MAX_BYTES = 16 * MiB
"""gloo on CPU stops here unless the user chose the maximum size (the default sweep to 1 GiB is meant for GPUs)."""
STARTUP_TIMEOUT_S = 180.0
"""Spawn, import torch, join the world and agree on the memory cap."""


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
    return capped, [f"gloo on CPU: default sweep capped at {fmt_size(GLOO_DEFAULT_MAX_BYTES)} "
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


def iter_allreduce_sweep(groups: Sequence[Sequence[int]], backend: str, sizes: Sequence[int], iters: int = 20,
                         warmup: int = 5, samples: int = 3, **kw: Any) -> Iterator[Measurement]:
    """Sweep ``sizes`` (bytes, float32) over each group; yield one Measurement per (group, size) as measured.

    ``groups`` and ``world`` name GPUs for NCCL (one process per GPU index) and process ranks for gloo (CPU
    processes). ``world`` defaults to every member of every group. ``timeout_s`` is the deadline of one group's
    sweep (default: ``allreduce_world.group_timeout_s``). A group that fails yields ``error`` records for its
    unmeasured sizes, and the remaining groups run in a fresh set of workers. ``cuda_graph`` (NCCL only) captures each
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
) -> SweepPlan:
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
    return SweepPlan(backend=backend, labels=labels, groups=[sorted(g) for g in groups], counts=element_counts(sizes),
                 iters=iters, warmup=warmup, samples=samples, timeout_s=timeout_s,
                 startup_timeout_s=startup_timeout_s, path_class=path_class,
                 progress=progress or (lambda label: None), notes=list(notes), cuda_graph=cuda_graph)


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


def _probe_plan(ctx: ProbeContext) -> SweepPlan | None:
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
    world = World(plan, list(range(len(plan.groups))))
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
    world: World | None = ctx.cache.pop(PRESTART_KEY, None)
    plan = world.plan if world is not None else _probe_plan(ctx)
    if plan is None:
        yield Measurement(probe=PROBE, status="waived", unit="us", direction="collective",
                          engine=choose_backend(ctx.options.collective_backend, ctx.gpus),
                          reason="NCCL all-reduce needs GPUs; none selected")
        return
    plan.progress = ctx.progress
    if world is not None:
        plan.notes.append("workers started while the earlier probes ran (their start-up is not in this probe's time)")
    first = world or World(plan, list(range(len(plan.groups))))
    yield from sweep(plan, first)
    if first.versions.get("nccl"):
        ctx.cache["nccl_version"] = first.versions["nccl"]
