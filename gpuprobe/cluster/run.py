"""A probe run over several nodes, one process per node: rendezvous, local suites, links, all-reduce, one file.

1. Rendezvous (torch's ``env://`` contract): a TCP store at MASTER_ADDR:MASTER_PORT (torchrun's agent serves it;
   under srun or mpirun rank 0 does), then a gloo process group over it. Every node sends a fingerprint
   (gpuprobe version, options, backend) with ``all_gather_object``; any difference stops every node with one line.
2. Every node runs its local suite (``run_probes``) at the same time and puts its results, NICs and GPUDirect
   RDMA flag in the store at once, so a node that dies later keeps its figures.
3. Links (``links.py``): rounds of disjoint node pairs, both directions per round, each direction verified.
4. The all-reduce sweep over the live nodes (``allreduce_worker._sweep_group``: the same timing, the same check).
5. Rank 0 gathers everything from the store and writes one results file with a ``cluster`` section.

No step waits for a node for ever: before the links, before each round, before the all-reduce and at the end, every
live node checks in at the store and rank 0 waits at most ``timeout_s`` for it after its own local suite, then 3 ×
``timeout_s`` + 10 s at each later check-in, and as long again while both members of a pair of the round before
are out (a healthy node whose partner hung is stuck in their transfers for some timeouts, more on a loaded machine,
and is not taken for the hung one; once it checks in, its partner is the hung one). A node that does
not check in is named (``missing``: its results never came; ``lost``: they came, then it stopped answering), what it
measured is kept, and the others carry on without it. Every pair, and the all-reduce, has a process group of its own
made by its members alone through the store (a timeout poisons only that group), and every send and receive has the
same timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any

from gpuprobe.cluster.launch import Launch, node_name
from gpuprobe.cluster.links import BANDWIDTH, LATENCY, Channel, PairPlan, failed_record, measure_pair, rounds
from gpuprobe.errors import GpuprobeError, MissingDependency, UsageError
from gpuprobe.options import MiB, ProbeOptions
from gpuprobe.results.io import save_results
from gpuprobe.results.model import Cluster, ClusterNode, Measurement, Results, now_utc
from gpuprobe.results.serde import from_data, to_data

DEFAULT_TIMEOUT_S = 300.0
_POLL_S = 0.02


class ClusterError(GpuprobeError):
    """The cluster run cannot go on (rendezvous failed, nodes disagree, rank 0 is gone)."""


def fingerprint(options: ProbeOptions, backend: str) -> dict[str, Any]:
    """What every node must share: gpuprobe's version, the probe options and the backend."""
    import gpuprobe

    return {"gpuprobe": gpuprobe.__version__, "backend": backend, "options": to_data(options)}


def compare_fingerprints(prints: list[dict[str, Any]], names: list[str]) -> str | None:
    """One line naming the first difference from rank 0's fingerprint, or None when every node agrees."""
    ref = prints[0]
    for rank, p in enumerate(prints[1:], start=1):
        who = f"node {names[rank]} (rank {rank})"
        if p.get("gpuprobe") != ref.get("gpuprobe"):
            return f"{who} runs gpuprobe {p.get('gpuprobe')}, rank 0 ({names[0]}) runs {ref.get('gpuprobe')}"
        if p.get("backend") != ref.get("backend"):
            return f"{who} uses backend {p.get('backend')}, rank 0 ({names[0]}) uses {ref.get('backend')}"
        theirs, ours = p.get("options", {}), ref.get("options", {})
        for k in sorted(set(theirs) | set(ours)):
            if theirs.get(k) != ours.get(k):
                return f"{who} has option {k}={theirs.get(k)!r}, rank 0 ({names[0]}) has {ours.get(k)!r}"
    return None


HIDDEN_DURING_LOCAL = ("TORCHELASTIC_USE_AGENT_STORE", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                       "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")
"""torchrun's variables, hidden from the local probes' worker processes: with ``TORCHELASTIC_USE_AGENT_STORE``
set, torch would make them clients of a store that nobody serves on their own port."""


@contextlib.contextmanager
def _launcher_env_hidden() -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in HIDDEN_DURING_LOCAL if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class Coordinator:
    """Check-ins and data through the rendezvous store: rank 0 decides who is alive at each step."""

    def __init__(self, store: Any, rank: int, world: int, timeout_s: float) -> None:
        self.store, self.rank, self.world, self.timeout_s = store, rank, world, timeout_s
        self.step_wait_s = 3 * timeout_s + 10
        """How long rank 0 waits at a check-in after the local suites (and waits again while both members of a
        pair of the step before are out): a healthy node paired with a hung one arrives some timeouts late
        (making the pair's group, then one transfer; more on a loaded machine) and must not be taken for the hung
        one."""

    def put(self, key: str, value: Any) -> None:
        self.store.set(key, json.dumps(value))

    def get(self, key: str) -> Any | None:
        if not self.store.check([key]):
            return None
        return json.loads(self.store.get(key))

    def sync(self, tag: str, alive: list[int], wait_s: float | None = None,
             patience_s: float | None = None, pairs: Sequence[tuple[int, int]] = ()) -> list[int]:
        """Check in at ``tag``; rank 0 waits ``wait_s`` for the others and publishes who came. While both members
        of one of ``pairs`` (the pairs of the step before) are still out, it waits ``step_wait_s`` more: one of
        them may be hung and the other still stuck in their transfers; once one of the two checks in, the other
        is the hung one. A non-zero rank waits ``patience_s`` for that answer (rank 0 may still be busy) and
        stops if it was left out."""
        wait_s = self.step_wait_s if wait_s is None else wait_s
        self.store.set(f"{tag}/in/{self.rank}", "1")
        if self.rank == 0:
            end = time.monotonic() + wait_s
            grace = end + self.step_wait_s
            waiting = [r for r in alive if r != 0]
            while waiting:
                t = time.monotonic()
                if t >= end and not (t < grace and any(a in waiting and b in waiting for a, b in pairs)):
                    break
                waiting = [r for r in waiting if not self.store.check([f"{tag}/in/{r}"])]
                if waiting:
                    time.sleep(_POLL_S)
            now = [r for r in alive if r not in waiting]
            self.put(f"{tag}/alive", now)
            return now
        patience = patience_s if patience_s is not None else wait_s + self.step_wait_s + self.timeout_s + 30
        end = time.monotonic() + patience
        while not self.store.check([f"{tag}/alive"]):
            if time.monotonic() > end:
                raise ClusterError(f"no word from rank 0 within {patience:.0f} s at '{tag}'; no merged file from "
                                   "this node's side")
            time.sleep(_POLL_S)
        now = json.loads(self.store.get(f"{tag}/alive"))
        if self.rank not in now:
            raise ClusterError(f"rank 0 went on without this node at '{tag}' (it was more than {wait_s:.0f} s late)")
        return list(now)


def _store(launch: Launch, timeout_s: float) -> Any:
    import torch.distributed as dist

    timeout = timedelta(seconds=timeout_s)
    try:
        if launch.agent_store:
            base = dist.TCPStore(launch.master_addr, launch.master_port, is_master=False, timeout=timeout)
        else:
            base = dist.TCPStore(launch.master_addr, launch.master_port, launch.world_size,
                                 is_master=launch.rank == 0, timeout=timeout, wait_for_workers=False)
    except Exception as exc:  # noqa: BLE001 - a RuntimeError/DistStoreError naming the socket problem
        raise ClusterError(f"{launch.launcher}: cannot reach the rendezvous store at {launch.master_addr}:"
                           f"{launch.master_port}: {' '.join(str(exc).split())[:200]}",
                           hint="check MASTER_ADDR/MASTER_PORT and that the port is open between nodes") from None
    return dist.PrefixStore(f"gpuprobe/{launch.run_id}", base)


def _group(dist: Any, backend: str, store: Any, key: str, members: list[int], rank: int, timeout_s: float) -> Any:
    """A process group of ``members`` alone (rank = index in ``members``), made through the rendezvous store by
    the members only; not registered in torch's world, so a dead node elsewhere does not hold it up."""
    prefixed = dist.PrefixStore(f"group/{key}", store)
    timeout = timedelta(seconds=timeout_s)
    if backend == "nccl":
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timeout
        return dist.ProcessGroupNCCL(prefixed, members.index(rank), len(members), opts)
    return dist.ProcessGroupGloo(prefixed, members.index(rank), len(members), timeout)


def run_cluster(
    launch: Launch,
    options: ProbeOptions,
    output: Any = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[str], None] | None = None,
    argv: list[str] | None = None,
) -> Results | None:
    """Run this node's part; rank 0 returns the merged results (and writes ``output``), the others None."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        raise MissingDependency.of("torch", "a cluster run needs torch.distributed") from None
    from gpuprobe.probes.run import run_probes

    say = progress or (lambda label: None)
    cuda_ok = torch.cuda.is_available() and dist.is_nccl_available()
    backend = options.collective_backend or ("nccl" if cuda_ok else "gloo")
    if backend == "nccl" and not cuda_ok:
        raise UsageError("--backend nccl needs CUDA and NCCL in torch on every node", hint="use --backend gloo")
    name = node_name()
    rank, world = launch.rank, launch.world_size
    store = _store(launch, timeout_s)
    say(f"cluster: joining {world} nodes at {launch.master_addr}:{launch.master_port} as rank {rank} ({name})")
    try:
        dist.init_process_group("gloo", store=dist.PrefixStore("pg", store), rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))
    except Exception as exc:  # noqa: BLE001 - torch raises several kinds; each becomes this one line
        raise ClusterError(f"{launch.launcher}: rendezvous of {world} nodes failed within {timeout_s:.0f} s: "
                           f"{' '.join(str(exc).split())[:200]}") from None
    try:
        return _run(torch, dist, launch, options, backend, name, store, output, timeout_s, say, argv, run_probes)
    finally:
        with contextlib.suppress(Exception):  # a broken group's tear-down must not hide the run's own outcome
            dist.destroy_process_group()


def _run(torch: Any, dist: Any, launch: Launch, options: ProbeOptions, backend: str, name: str, store: Any,
         output: Any, timeout_s: float, say: Callable[[str], None], argv: list[str] | None,
         run_probes: Callable[..., Results]) -> Results | None:
    rank, world = launch.rank, launch.world_size
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, {"name": name, "print": fingerprint(options, backend)})
    names = [str(g["name"]) for g in gathered]
    problem = compare_fingerprints([g["print"] for g in gathered], names)
    if problem is not None:
        raise UsageError(f"cluster nodes disagree: {problem}",
                         hint="run the same gpuprobe version with the same options on every node")
    if len(set(names)) != len(names):
        names = [f"{n}#{r}" if names.count(n) > 1 else n for r, n in enumerate(names)]
    coord = Coordinator(store, rank, world, timeout_s)
    device = None
    if backend == "nccl":
        device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
    sync: Callable[[], None] = (lambda: torch.cuda.synchronize(device)) if backend == "nccl" else (lambda: None)
    t_start = time.monotonic()

    say("cluster: local probes")
    with _launcher_env_hidden():  # the local all-reduce's workers start their own world on this node
        local = run_probes(options, output=output if rank == 0 else None, progress=say, argv=argv)
    from gpuprobe.system.nics import gpudirect_rdma, read_nics

    node = ClusterNode(rank=rank, name=names[rank], status="ok", results=local, nics=read_nics(local.devices),
                       gpudirect_rdma=gpudirect_rdma())
    coord.put(f"node/{rank}", to_data(node))
    everyone = list(range(world))
    local_s = time.monotonic() - t_start
    alive = coord.sync("local", everyone, wait_s=timeout_s, patience_s=local_s + 3 * timeout_s + 60)
    gone: dict[int, str] = {r: f"did not finish its local probes within {timeout_s:.0f} s of rank 0"
                            for r in everyone if r not in alive}

    plan = PairPlan(backend=backend, size_bytes=max(options.buffer_size_bytes // 8, MiB),
                    copies=max(1, options.copies_per_sample // 4), warmup=min(2, options.warmup_copies),
                    samples=options.samples, pings=max(10, options.small_copies // 2), timeout_s=timeout_s,
                    verify=options.verify)
    schedule = rounds(alive)
    for i, pairs in enumerate(schedule):
        now = coord.sync(f"round{i}", alive, pairs=schedule[i - 1] if i else ())
        for r in alive:
            if r not in now:
                gone.setdefault(r, f"stopped answering before link round {i + 1}")
        alive = now
        mine = next((p for p in pairs if rank in p and all(x in alive for x in p)), None)
        if mine is None:
            continue
        peer = mine[1] if mine[0] == rank else mine[0]
        say(f"cluster: link round {i + 1}/{len(schedule)}: {names[rank]} <-> {names[peer]}")
        got: list[Measurement] = []
        directions = [mine, mine[::-1]]
        ch: Channel | None = None
        for k, (src, dst) in enumerate(directions):
            try:
                if ch is None:  # a group of its own: a timeout here leaves every other pair's group intact
                    pg = _group(dist, backend, store, f"pair/{mine[0]}-{mine[1]}", list(mine), rank, timeout_s)
                    ch = Channel(pg, mine.index(peer), timeout_s, sync)
                got += measure_pair(torch, ch, plan, rank == src, names[src], names[dst], src, device,
                                    seed=1000 * i + src + 1)
            except Exception as exc:  # noqa: BLE001 - a dead or hung peer: the pair is a record, the run goes on
                text = " ".join(str(exc).split())[:200] or type(exc).__name__
                why = f"no answer from {names[peer]} within {timeout_s:.0f} s, or the transfer failed: {text}"
                got += [failed_record(p, names[s], names[d], plan, why) for s, d in directions[k:] if s == rank
                        for p in (BANDWIDTH, LATENCY)]
                break  # the pair's messages are out of step: the other direction is not tried
        coord.put(f"links/{rank}/{i}", [to_data(m) for m in got])

    now = coord.sync("allreduce", alive, pairs=schedule[-1] if schedule else ())
    for r in alive:
        if r not in now:
            gone.setdefault(r, "stopped answering before the all-reduce")
    alive = now
    collectives = _allreduce(torch, dist, options, backend, alive, world, store, device, sync, timeout_s, say)
    if rank == alive[0]:
        coord.put("collectives", [to_data(m) for m in collectives])
    if rank != 0:
        coord.sync("done", alive)
        return None
    final = coord.sync("done", alive)
    for r in alive:
        if r not in final:
            gone.setdefault(r, "stopped answering after the all-reduce")
    return _merge(coord, launch, backend, names, local, final, gone, len(schedule), plan, timeout_s, output)


def _allreduce(torch: Any, dist: Any, options: ProbeOptions, backend: str, members: list[int], world: int,
               store: Any, device: Any, sync: Callable[[], None], timeout_s: float,
               say: Callable[[str], None]) -> list[Measurement]:
    """The all-reduce sweep over ``members`` (node ranks) with the local probe's timing and check."""
    from gpuprobe.probes.allreduce import element_counts, probe_sizes
    from gpuprobe.probes.allreduce_worker import FLOAT32_BYTES, WorkerPlan, _Out, _sweep_group
    from gpuprobe.probes.allreduce_world import SweepPlan, _measured, _measurement

    class _Lines(_Out):
        def __init__(self) -> None:
            self.lines: list[dict[str, Any]] = []

        def put(self, kind: str, **fields: Any) -> None:
            self.lines.append({"kind": kind, **fields})

    sizes, notes = probe_sizes(options, backend)
    counts = element_counts(sizes)
    missing = [r for r in range(world) if r not in members]
    extra = [f"over {len(members)} nodes, one process each"]
    if missing:
        extra.append(f"without rank(s) {missing}, which stopped answering")
    splan = SweepPlan(backend=backend, labels=list(range(world)), groups=[members], counts=counts,
                      iters=options.allreduce_iters, warmup=options.allreduce_warmup_iters,
                      samples=options.allreduce_samples, timeout_s=timeout_s, startup_timeout_s=timeout_s,
                      path_class=None, progress=say, notes=notes + extra)
    wplan = WorkerPlan(backend=backend, labels=list(range(world)), port=0, groups=[members], counts=counts,
                       iters=splan.iters, warmup=splan.warmup, samples=splan.samples, directory="",
                       init_timeout_s=timeout_s)
    rank = dist.get_rank()
    error = None
    out = _Lines()
    try:
        pg = _group(dist, backend, store, "allreduce", members, rank, timeout_s)
        cpg = pg if backend == "gloo" else _group(dist, "gloo", store, "allreduce-ctrl", members, rank, timeout_s)
    except Exception as exc:  # noqa: BLE001 - a member gone since the check-in: every size becomes a record
        error = f"all-reduce over nodes {members} could not start: {' '.join(str(exc).split())[:200]}"
    buf = torch.zeros(max(counts), dtype=torch.float32, device=device if device is not None else "cpu")
    say(f"cluster: all-reduce over {len(members)} nodes")
    try:
        if error is None:
            _sweep_group(torch, dist, wplan, out, rank, 0, members, counts, buf, pg, cpg, sync)
    except Exception as exc:  # noqa: BLE001 - a node lost mid-sweep: the sizes left become records
        error = f"all-reduce over nodes {members} failed: {' '.join(str(exc).split())[:200]}"
    ms = [_measured(splan, members, line, []) for line in out.lines if line["kind"] == "size"]
    done = {m.size_bytes for m in ms}
    for c in counts:
        if c * FLOAT32_BYTES not in done:
            ms.append(_measurement(splan, members, "error", size_bytes=c * FLOAT32_BYTES,
                                   reason=error or "not measured", notes=list(splan.notes)))
    return ms


def _merge(coord: Coordinator, launch: Launch, backend: str, names: list[str], local: Results, final: list[int],
           gone: dict[int, str], n_rounds: int, plan: PairPlan, timeout_s: float, output: Any) -> Results:
    world = launch.world_size
    nodes: list[ClusterNode] = []
    for r in range(world):
        data = coord.get(f"node/{r}")
        if data is None:
            nodes.append(ClusterNode(rank=r, name=names[r], status="missing", reason=gone.get(r, "no results")))
            continue
        node = from_data(ClusterNode, data)
        if r not in final:
            node.status, node.reason = "lost", gone.get(r, "stopped answering")
        nodes.append(node)
    links: list[Measurement] = []
    for r in range(world):
        for i in range(n_rounds):
            for d in coord.get(f"links/{r}/{i}") or []:
                links.append(from_data(Measurement, d))
    seen = {(m.probe, m.src, m.dst) for m in links}
    for a in range(world):
        for b in range(world):
            if a == b:
                continue
            for p in (BANDWIDTH, LATENCY):
                if (p, names[a], names[b]) not in seen:
                    who = next((x for x in (a, b) if x in gone), None)
                    why = f"not measured: node {names[who]} {gone[who]}" if who is not None else "not measured"
                    links.append(failed_record(p, names[a], names[b], plan, why))
    order = {n: i for i, n in enumerate(names)}
    links.sort(key=lambda m: (m.probe, order.get(m.src or "", 0), order.get(m.dst or "", 0)))
    collectives = [from_data(Measurement, d) for d in coord.get("collectives") or []]
    problems = [f"node {names[r]} (rank {r}) {'missing' if nodes[r].status == 'missing' else 'lost'}: {why}"
                for r, why in sorted(gone.items())]
    local.cluster = Cluster(launcher=launch.launcher, world_size=world, backend=backend,
                            master_addr=launch.master_addr, master_port=launch.master_port, timeout_s=timeout_s,
                            nodes=nodes, links=links, collectives=collectives, problems=problems)
    local.problems.extend(problems)
    if problems or any(m.status in ("error", "mismatch") for m in links + collectives):
        local.status = "partial"
    local.run.finished_utc = now_utc()
    if output:
        save_results(local, output)
    return local
