"""Which launcher started this process, read from the environment: torchrun, Slurm's srun, or mpirun.

A cluster run has one process per node. ``detect`` maps each launcher's variables onto one ``Launch``:

- torchrun (``TORCHELASTIC_RUN_ID`` or ``GROUP_RANK`` set): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` (the agent's store when
  ``TORCHELASTIC_USE_AGENT_STORE`` is ``True``).
- ``RANK``, ``WORLD_SIZE`` and ``MASTER_ADDR`` set by hand (torch's ``env://``): launcher ``env``.
- srun (``SLURM_PROCID`` with ``SLURM_STEP_ID``/``SLURM_STEPID``, i.e. inside a job step, not the batch
  script): ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_NODEID``, ``SLURM_LOCALID``; the master address is
  ``MASTER_ADDR`` or the first host of ``SLURM_STEP_NODELIST``/``SLURM_JOB_NODELIST``/``SLURM_NODELIST``
  (``scontrol show hostnames`` when present, else :func:`expand_nodelist`); the port is ``MASTER_PORT`` or
  20000 + job id mod 20000.
- mpirun (Open MPI ``OMPI_COMM_WORLD_RANK``/``_SIZE``/``_LOCAL_RANK``; MPICH and Intel MPI ``PMI_RANK``/
  ``PMI_SIZE``, ``MPI_LOCALRANKID``): ``MASTER_ADDR`` must be exported (``mpirun -x MASTER_ADDR=...``);
  ``MASTER_PORT`` defaults to 29500.

A world of one process (or none of these variables) is no cluster: ``detect`` returns None and ``probe`` runs on
this machine alone, as it always has.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gpuprobe.errors import UsageError

DEFAULT_PORT = 29500
SLURM_PORT_BASE = 20000


@dataclass(frozen=True)
class Launch:
    launcher: str
    """``torchrun``, ``env``, ``slurm`` or ``mpi``."""
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    agent_store: bool = False
    """torchrun's agent already serves the rendezvous store at MASTER_ADDR:MASTER_PORT (join it, do not host it)."""
    run_id: str = ""
    """Names this run's keys in a shared store (torchrun's run id and restart count, the Slurm job and step)."""


def node_name(env: Mapping[str, str] | None = None) -> str:
    """This node's name in a cluster file: ``GPUPROBE_NODE_NAME``, else Slurm's node name, else the hostname."""
    env = os.environ if env is None else env
    return env.get("GPUPROBE_NODE_NAME") or env.get("SLURMD_NODENAME") or socket.gethostname()


def _int(env: Mapping[str, str], name: str, launcher: str) -> int:
    text = env.get(name, "")
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{launcher}: {name}={text!r} is not an integer") from None


def _port(env: Mapping[str, str], default: int, launcher: str) -> int:
    port = _int(env, "MASTER_PORT", launcher) if env.get("MASTER_PORT") else default
    if not 1 <= port <= 65535:
        raise UsageError(f"{launcher}: MASTER_PORT {port} is not a TCP port (1-65535)")
    return port


def _one_per_node(launcher: str, local_rank: int, per_node: int | None, how: str) -> None:
    if local_rank != 0 or (per_node is not None and per_node > 1):
        raise UsageError(f"{launcher}: gpuprobe runs one process per node (it probes every GPU of its node itself); "
                         f"got local rank {local_rank}" + (f" of {per_node}" if per_node else ""), hint=how)


def expand_nodelist(text: str) -> list[str]:
    """Slurm's compressed host list (``node[01-03,07],gpu5``, ``r[1-2]-n[1-2]``) as host names, in order."""
    hosts: list[str] = []
    for item in _split_top(text.strip()):
        hosts.extend(_expand_one(item))
    return hosts


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise ValueError(f"unbalanced brackets in {text!r}")
    parts.append(cur)
    return [p for p in parts if p]


def _expand_one(item: str) -> list[str]:
    m = re.match(r"^([^\[]*)\[([^\]]*)\](.*)$", item)
    if m is None:
        return [item]
    head, ranges, tail = m.groups()
    out: list[str] = []
    for r in ranges.split(","):
        lo, sep, hi = r.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"bad range {r!r} in {item!r}")
        width = len(lo)
        for n in range(int(lo), int(hi if sep else lo) + 1):
            out.extend(head + str(n).zfill(width) + rest for rest in _expand_one(tail))
    return out


def scontrol_hostnames(nodelist: str) -> list[str] | None:
    """``scontrol show hostnames NODELIST`` when scontrol is on PATH and answers; else None."""
    exe = shutil.which("scontrol")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "show", "hostnames", nodelist], capture_output=True, text=True, timeout=20,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    hosts = out.split()
    return hosts or None


def _slurm_master(env: Mapping[str, str], hostnames: Callable[[str], list[str] | None]) -> str:
    if env.get("MASTER_ADDR"):
        return env["MASTER_ADDR"]
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise UsageError("slurm: no SLURM_JOB_NODELIST (or SLURM_NODELIST) to take the first node from",
                         hint="export MASTER_ADDR=<first node> before srun")
    hosts = hostnames(nodelist)
    if not hosts:
        try:
            hosts = expand_nodelist(nodelist)
        except ValueError as exc:
            raise UsageError(f"slurm: cannot read the node list {nodelist!r}: {exc}",
                             hint="export MASTER_ADDR=<first node> before srun") from None
    if not hosts:
        raise UsageError(f"slurm: the node list {nodelist!r} names no host")
    return hosts[0]


def detect(env: Mapping[str, str] | None = None,
           hostnames: Callable[[str], list[str] | None] = scontrol_hostnames) -> Launch | None:
    """The launch this process is part of, or None for a plain one-machine run (or a world of one)."""
    env = os.environ if env is None else env
    launch = _detect(env, hostnames)
    if launch is None or launch.world_size <= 1:
        return None
    if not 0 <= launch.rank < launch.world_size:
        raise UsageError(f"{launch.launcher}: rank {launch.rank} is outside a world of {launch.world_size}")
    return launch


def _detect(env: Mapping[str, str], hostnames: Callable[[str], list[str] | None]) -> Launch | None:
    if "TORCHELASTIC_RUN_ID" in env or "GROUP_RANK" in env or all(k in env for k in ("RANK", "WORLD_SIZE",
                                                                                      "MASTER_ADDR")):
        torchrun = "TORCHELASTIC_RUN_ID" in env or "GROUP_RANK" in env
        name = "torchrun" if torchrun else "env"
        for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
            if not env.get(k):
                raise UsageError(f"{name}: {k} is not set")
        local = _int(env, "LOCAL_RANK", name) if env.get("LOCAL_RANK") else 0
        per_node = _int(env, "LOCAL_WORLD_SIZE", name) if env.get("LOCAL_WORLD_SIZE") else None
        _one_per_node(name, local, per_node, "torchrun --nproc-per-node 1")
        run_id = f"{env.get('TORCHELASTIC_RUN_ID', '')}.{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        return Launch(name, _int(env, "RANK", name), _int(env, "WORLD_SIZE", name), local, env["MASTER_ADDR"],
                      _port(env, DEFAULT_PORT, name), env.get("TORCHELASTIC_USE_AGENT_STORE") == "True", run_id)
    if "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env):
        ntasks = env.get("SLURM_NTASKS") or env.get("SLURM_NPROCS")
        if not ntasks:
            raise UsageError("slurm: SLURM_NTASKS is not set")
        world = _int({"SLURM_NTASKS": ntasks}, "SLURM_NTASKS", "slurm")
        if world <= 1:
            return None
        local = _int(env, "SLURM_LOCALID", "slurm") if env.get("SLURM_LOCALID") else 0
        nodes = env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")
        per_node = None
        if nodes and nodes.isdigit() and int(nodes) > 0 and world > int(nodes):
            per_node = -(-world // int(nodes))
        _one_per_node("slurm", local, per_node, "srun -N <nodes> --ntasks-per-node 1 gpuprobe probe ...")
        job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID") or "0"
        default_port = SLURM_PORT_BASE + (int(job) % 20000 if job.isdigit() else 0)
        step = env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID") or "0"
        return Launch("slurm", _int(env, "SLURM_PROCID", "slurm"), world, local, _slurm_master(env, hostnames),
                      _port(env, default_port, "slurm"), False, f"{job}.{step}")
    for rank_key, size_key, local_keys in (
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", ("OMPI_COMM_WORLD_LOCAL_RANK",)),
        ("PMI_RANK", "PMI_SIZE", ("MPI_LOCALRANKID", "PMI_LOCAL_RANK")),
    ):
        if rank_key in env and size_key in env:
            world = _int(env, size_key, "mpi")
            if world <= 1:
                return None
            local_key = next((k for k in local_keys if env.get(k)), None)
            local = _int(env, local_key, "mpi") if local_key else 0
            per_node = None
            if env.get("OMPI_COMM_WORLD_LOCAL_SIZE"):
                per_node = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", "mpi")
            _one_per_node("mpi", local, per_node, "mpirun -np <nodes> --map-by ppr:1:node gpuprobe probe ...")
            if not env.get("MASTER_ADDR"):
                raise UsageError("mpi: MASTER_ADDR is not set; every rank must know the first node's address",
                                 hint="mpirun -x MASTER_ADDR=<first node> [-x MASTER_PORT=29500] ...")
            return Launch("mpi", _int(env, rank_key, "mpi"), world, local, env["MASTER_ADDR"],
                          _port(env, DEFAULT_PORT, "mpi"), False, env.get("OMPI_MCA_ess_base_jobid", ""))
    return None
