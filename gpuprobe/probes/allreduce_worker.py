"""The worker side of the all-reduce sweep: one spawned process per rank (a GPU for NCCL, a CPU process for gloo).

Every rank joins one torch.distributed world on 127.0.0.1, then, for each group in the same order, calls
``dist.new_group`` (every rank, members or not); members sweep the sizes while the others wait at a barrier of a
gloo control group. The lowest rank of each group (its leader) appends one JSON line per result to
``<dir>/rank<r>.jsonl``; the parent tails those files (a file survives a killed worker, a pipe may not).
Each worker's stdout/stderr go to ``<dir>/rank<r>.log`` so library users see nothing printed.

Lines: ``ready`` (rank 0: memory cap agreed by all ranks, versions), ``group`` (leader: communicator set-up time),
``size`` (leader: per-sample µs averaged over the group's ranks, wrong elements summed over them), ``group_done``,
``fail`` (any rank: one-line error), ``bye`` (rank 0, at the end).

Timing per size follows nccl-tests' ``BenchTime`` (src/common.cu): warm-up ops, a barrier, then the host clock
around ``iters`` back-to-back in-place all-reduces (each on the next slice of a buffer sized for the largest
message, so consecutive ops do not reuse the same cache lines) and a device synchronize; time = elapsed / iters,
then averaged over the ranks (nccl-tests' default ``-a 1``). After timing, fresh data (``_pattern``, small
integers so the float32 sum is exact) is reduced once and every element compared with the expected sum.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

FLOAT32_BYTES = 4
RESERVE_BYTES = 1 << 30
"""GPU memory left free for NCCL's own buffers and the CUDA context."""
CHECK_CHUNK = 1 << 24
"""Elements per chunk when filling and checking data (bounds the temporaries to ~200 MB)."""
_MODULUS = 31


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker needs; picklable (it crosses the spawn boundary)."""

    backend: str
    labels: list[int]
    """Process rank -> GPU index (NCCL) or rank number (gloo)."""
    port: int
    groups: list[list[int]]
    """Groups as process ranks, in sweep order."""
    counts: list[int]
    """float32 elements per message, ascending."""
    iters: int
    warmup: int
    samples: int
    directory: str
    init_timeout_s: float
    cuda_graph: bool = False
    """NCCL only: capture the ``iters`` ops of a sample in a CUDA graph and time its replay (nccl-tests -G 1)."""
    go_file: str | None = None
    """When set, wait after start-up (torch imported, world joined) until this file exists: the parent starts
    the workers early, while other probes run, and lets them sweep when the all-reduce probe's turn comes."""


class _Out:
    def __init__(self, path: Path) -> None:
        self._f = path.open("a", encoding="utf-8")

    def put(self, kind: str, **fields: Any) -> None:
        self._f.write(json.dumps({"kind": kind, **fields}) + "\n")
        self._f.flush()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text[:300]}"


def worker_main(rank: int, plan: WorkerPlan) -> None:
    """Entry point of a spawned worker (module level, so ``spawn`` can import it)."""
    with contextlib.suppress(OSError):
        os.setpgrp()  # own process group: the parent can kill this worker and anything it started at once
    d = Path(plan.directory)
    log_fd = os.open(d / f"rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    out = _Out(d / f"rank{rank}.jsonl")
    try:
        _run(rank, plan, out)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the parent as one line
        out.put("fail", rank=rank, error=_one_line(exc))
        raise SystemExit(1) from None


def _pattern(torch: Any, idx: Any, rank: int, seed: int) -> Any:
    """Input of ``rank`` at element indices ``idx``: small integers, distinct per rank, exact in float32 sums."""
    return (idx * (2 * rank + 1) + seed) % _MODULUS


def _fill(torch: Any, region: Any, rank: int, seed: int) -> None:
    for start in range(0, region.numel(), CHECK_CHUNK):
        stop = min(start + CHECK_CHUNK, region.numel())
        idx = torch.arange(start, stop, device=region.device, dtype=torch.int64)
        region[start:stop] = _pattern(torch, idx, rank, seed).to(torch.float32)


def _count_wrong(torch: Any, region: Any, members: list[int], seed: int) -> int:
    wrong = 0
    for start in range(0, region.numel(), CHECK_CHUNK):
        stop = min(start + CHECK_CHUNK, region.numel())
        idx = torch.arange(start, stop, device=region.device, dtype=torch.int64)
        expected = torch.zeros_like(idx)
        for r in members:
            expected += _pattern(torch, idx, r, seed)
        wrong += int((region[start:stop] != expected.to(torch.float32)).sum().item())
    return wrong


def _memory_cap_bytes(torch: Any, plan: WorkerPlan, device: Any) -> int:
    """Largest message this rank can hold: one buffer plus the check's temporaries must fit in free memory."""
    if plan.backend == "nccl":
        free, _total = torch.cuda.mem_get_info(device)
        return max(0, (free - RESERVE_BYTES) // 2)
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 1 << 62
    return max(0, avail // (4 * len(plan.labels)))


def _run(rank: int, plan: WorkerPlan, out: _Out) -> None:
    if plan.backend == "gloo" and "GLOO_SOCKET_IFNAME" not in os.environ and Path("/sys/class/net/lo").exists():
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # every rank is on this host
    os.environ.pop("TORCHELASTIC_USE_AGENT_STORE", None)  # under torchrun: this world has its own store
    import torch
    import torch.distributed as dist

    if plan.backend == "nccl":
        if not (torch.cuda.is_available() and dist.is_nccl_available()):
            raise RuntimeError(f"torch {torch.__version__} has no CUDA/NCCL support here; the NCCL all-reduce "
                               "cannot run")
        device = torch.device("cuda", plan.labels[rank])
        torch.cuda.set_device(device)
        sync = lambda: torch.cuda.synchronize(device)  # noqa: E731 - the NCCL stream is on this device
    else:
        torch.set_num_threads(1)
        device = torch.device("cpu")
        sync = lambda: None  # noqa: E731 - gloo's all_reduce returns when the data is reduced
    timeout = timedelta(seconds=plan.init_timeout_s)
    dist.init_process_group(plan.backend, init_method=f"tcp://127.0.0.1:{plan.port}", rank=rank,
                            world_size=len(plan.labels), timeout=timeout)
    ctrl = dist.new_group(backend="gloo", timeout=timeout) if plan.backend == "nccl" else dist.group.WORLD

    cap = torch.tensor([_memory_cap_bytes(torch, plan, device)], dtype=torch.int64)
    dist.all_reduce(cap, op=dist.ReduceOp.MIN, group=ctrl)
    counts = [c for c in plan.counts if c * FLOAT32_BYTES <= int(cap.item())]
    if rank == 0:
        nccl = ".".join(map(str, torch.cuda.nccl.version())) if plan.backend == "nccl" else None
        out.put("ready", cap_bytes=int(cap.item()), torch=torch.__version__, nccl=nccl)
    buf = torch.zeros(max(counts), dtype=torch.float32, device=device) if counts else None
    # every group made now (each rank, same order); the first group's communicator is created by one small op,
    # so that with a start gate this set-up, too, happens before the gate
    groups = []
    for members in plan.groups:
        pg = dist.new_group(members, timeout=timeout)
        groups.append((pg, dist.new_group(members, backend="gloo", timeout=timeout) if plan.backend == "nccl" else pg))
    if buf is not None and plan.groups and rank in plan.groups[0]:
        dist.all_reduce(buf[:1], group=groups[0][0])
        sync()
    if plan.go_file:
        (Path(plan.directory) / f"held{rank}").touch()  # start-up done: the parent may run quiet-host probes now
        go, deadline = Path(plan.go_file), time.monotonic() + plan.init_timeout_s
        while not go.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no start signal within {plan.init_timeout_s:.0f} s")
            time.sleep(0.005)

    for gi, members in enumerate(plan.groups):
        pg, cpg = groups[gi]
        if rank in members:
            _sweep_group(torch, dist, plan, out, rank, gi, members, counts, buf, pg, cpg, sync)
            if plan.backend == "nccl":
                dist.destroy_process_group(pg)  # frees this pair's NCCL buffers before the next group
        dist.barrier(group=ctrl)
    if rank == 0:
        out.put("bye")
    dist.destroy_process_group()


def _capture(torch: Any, dist: Any, plan: WorkerPlan, views: list[Any], pg: Any) -> Any:
    """The ``iters`` all-reduces of one sample captured in a CUDA graph (launch overhead out of the window)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=torch.cuda.Stream()):
        for k in range(plan.iters):
            dist.all_reduce(views[k % len(views)], group=pg)
    torch.cuda.synchronize()
    return graph


def _sweep_group(torch: Any, dist: Any, plan: WorkerPlan, out: _Out, rank: int, gi: int, members: list[int],
                 counts: list[int], buf: Any, pg: Any, cpg: Any, sync: Any) -> None:
    leader = rank == members[0]
    n = len(members)
    t0 = time.perf_counter()
    if buf is not None:  # first op creates the communicator; keep it out of every timed window
        dist.all_reduce(buf[:1], group=pg)
        sync()
    dist.barrier(group=cpg)
    if leader:
        out.put("group", g=gi, setup_s=round(time.perf_counter() - t0, 4))
    for si, count in enumerate(counts):
        t_size = time.perf_counter()
        steps = max(1, buf.numel() // count)
        views = [buf[count * k: count * (k + 1)] for k in range(min(steps, plan.iters))]
        for k in range(plan.warmup):
            dist.all_reduce(views[k % len(views)], group=pg)
        sync()
        graph = _capture(torch, dist, plan, views, pg) if plan.cuda_graph else None
        per_op_s = []
        for _ in range(plan.samples):
            dist.barrier(group=cpg)
            start = time.perf_counter()
            if graph is not None:
                graph.replay()
            else:
                for k in range(plan.iters):
                    dist.all_reduce(views[k % len(views)], group=pg)
            sync()
            per_op_s.append((time.perf_counter() - start) / plan.iters)
        del graph
        times = torch.tensor(per_op_s, dtype=torch.float64)
        dist.all_reduce(times, group=cpg)  # average over ranks, as nccl-tests' default -a 1
        region = buf[:count]
        seed = si + 1
        _fill(torch, region, rank, seed)
        sync()
        dist.all_reduce(region, group=pg)
        sync()
        wrong = torch.tensor([_count_wrong(torch, region, members, seed)], dtype=torch.int64)
        dist.all_reduce(wrong, group=cpg)  # summed over ranks, as nccl-tests' #wrong
        region.zero_()
        sync()
        if leader:
            out.put("size", g=gi, count=count, samples_us=[t / n * 1e6 for t in times.tolist()],
                    wrong=int(wrong.item()), wall_s=round(time.perf_counter() - t_size, 4))
    if leader:
        out.put("group_done", g=gi)
