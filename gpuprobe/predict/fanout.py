"""Spread independent predictions over the CPUs this process may use.

``recommend`` simulates every layout of a system on its own: 38 layouts of 8 GPUs at 1,000 requests each is about
a second of one core. ``fan_out`` runs such a list in forked worker processes (one per usable CPU, at most
``MAX_WORKERS``) and returns the answers in order, equal to the serial ones. It falls back to running them here,
one after the other, whenever workers would not pay or are not safe: too little work, one usable CPU, no ``fork``
(or a platform where it is not the default), other threads alive in this process, or a pool that cannot start.

Workers ignore SIGINT, SIGTERM and SIGHUP: the parent turns those into ``KeyboardInterrupt`` and stops the search
(cancelling what has not started; a running item ends within its own fraction of a second), so a signal neither
leaves a worker printing a traceback nor runs the CLI's interrupt path twice.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_WORKERS = 8
_JOB: tuple[Callable[[Any], Any], Sequence[Any]] | None = None
"""The function and items of the running fan-out, inherited by the forked workers (nothing is pickled but the
index of an item and its answer)."""


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _worker_init() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def _call(i: int) -> Any:
    assert _JOB is not None
    fn, items = _JOB
    return fn(items[i])


def workers_for(n_items: int, work_units: int, min_work: int) -> int:
    """How many worker processes ``fan_out`` would use (1: run here)."""
    if n_items < 2 or work_units < min_work or not sys.platform.startswith("linux"):
        return 1
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return 1
    return max(1, min(usable_cpus(), n_items, MAX_WORKERS))


def fan_out(fn: Callable[[T], R], items: Sequence[T], work_units: int, min_work: int) -> list[R]:
    """``[fn(x) for x in items]``, in worker processes when ``work_units`` (the caller's measure of the whole job)
    reaches ``min_work`` and ``workers_for`` finds more than one usable CPU. ``fn`` must not depend on state it
    changes itself (each worker starts from a copy of this process)."""
    global _JOB
    workers = workers_for(len(items), work_units, min_work)
    if workers < 2:
        return [fn(x) for x in items]
    try:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init)
    except (OSError, ValueError):
        return [fn(x) for x in items]
    _JOB = (fn, items)  # before the first task: the pool forks its workers then
    try:
        return list(pool.map(_call, range(len(items))))
    except BrokenProcessPool:  # a worker died (out of memory, killed): answer here instead
        return [fn(x) for x in items]
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        _JOB = None
