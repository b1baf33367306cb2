"""Local "nodes" for the cluster tests: each its own torchrun (one gpuprobe process per node) on 127.0.0.1, or a
gpuprobe process with the variables srun sets. torchrun starts its worker in a session of its own, so ending a
node ends the agent's descendants too."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gpuprobe.probes.core.workers import free_port

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
SMALL = ["--backend", "gloo", "-b", "1", "-i", "2", "--allreduce-max-bytes", "4096"]
"""1 MiB link messages, 2 samples, all-reduce 8 B to 4 KiB: seconds on a loaded CPU."""


def node_env(rank: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_", "PMI_", "TORCHELASTIC_"))
           and k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "GROUP_RANK")}
    env.update(PYTHONPATH=str(REPO), GPUPROBE_NODE_NAME=f"node{rank}", OMP_NUM_THREADS="1", COLUMNS="200")
    env.update(extra or {})
    return env


def torchrun_nodes(n: int, out_dir: Path, args: list[str], extra_env: dict[int, dict[str, str]] | None = None,
                   output: str = "cluster.json") -> list[subprocess.Popen]:
    """``torchrun --nnodes N --nproc-per-node 1 --node-rank R --master-addr 127.0.0.1 --master-port P -m gpuprobe
    probe ARGS -o FILE`` for R = 0..N-1 (each node's output in ``out_dir/nodeR.out``/``.err``)."""
    port = free_port()
    procs = []
    for r in range(n):
        cmd = [*TORCHRUN, "--nnodes", str(n), "--nproc-per-node", "1", "--node-rank", str(r), "--master-addr",
               "127.0.0.1", "--master-port", str(port), "-m", "gpuprobe", "probe", *args, "-o",
               str(out_dir / f"node{r}" / output)]
        (out_dir / f"node{r}").mkdir(exist_ok=True)
        procs.append(_start(cmd, out_dir, r, node_env(r, (extra_env or {}).get(r))))
    return procs


def slurm_nodes(n: int, out_dir: Path, args: list[str]) -> list[subprocess.Popen]:
    """``gpuprobe probe`` as ``srun -N n --ntasks-per-node 1`` starts it: SLURM_* variables, no MASTER_*."""
    port = free_port()
    while not 20000 <= port < 40000:
        port = free_port()
    procs = []
    for r in range(n):
        env = node_env(r, {"SLURM_JOB_ID": str(port - 20000), "SLURM_STEP_ID": "0", "SLURM_PROCID": str(r),
                           "SLURM_NTASKS": str(n), "SLURM_NODEID": str(r), "SLURM_LOCALID": "0",
                           "SLURM_STEP_NUM_NODES": str(n), "SLURM_JOB_NODELIST": "localhost",
                           "SLURM_STEP_NODELIST": "localhost", "PATH": os.path.dirname(sys.executable)})
        (out_dir / f"node{r}").mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "gpuprobe", "probe", *args, "-o", str(out_dir / f"node{r}" / "cluster.json")]
        procs.append(_start(cmd, out_dir, r, env))
    return procs


def mpi_nodes(n: int, out_dir: Path, args: list[str]) -> list[subprocess.Popen]:
    """``gpuprobe probe`` as ``mpirun -np n --map-by ppr:1:node -x MASTER_ADDR`` starts it (Open MPI's variables)."""
    port = free_port()
    procs = []
    for r in range(n):
        env = node_env(r, {"OMPI_COMM_WORLD_RANK": str(r), "OMPI_COMM_WORLD_SIZE": str(n),
                           "OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "1",
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        (out_dir / f"node{r}").mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "gpuprobe", "probe", *args, "-o", str(out_dir / f"node{r}" / "cluster.json")]
        procs.append(_start(cmd, out_dir, r, env))
    return procs


def _start(cmd: list[str], out_dir: Path, r: int, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=(out_dir / f"node{r}.out").open("w"),
                            stderr=(out_dir / f"node{r}.err").open("w"), start_new_session=True)


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    kids = [int(x) for x in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
                    out += kids
                    todo += kids
    return out


def kill_node(p: subprocess.Popen) -> None:
    """SIGKILL a node: the launcher and everything it started."""
    pids = [*descendants(p.pid), p.pid]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    p.wait(10)


def wait_all(procs: list[subprocess.Popen], timeout_s: float) -> list[int | None]:
    """Exit codes (None for a node still running at the deadline, then killed)."""
    end = time.monotonic() + timeout_s
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, end - time.monotonic()))
    codes = [p.poll() for p in procs]
    for p in procs:
        if p.poll() is None:
            kill_node(p)
    return codes


def wait_for(pred, timeout_s: float, every_s: float = 0.05) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(every_s)
    return bool(pred())
