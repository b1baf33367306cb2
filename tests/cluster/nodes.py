"""Start N local "nodes": each its own torchrun process (one gpuprobe process per node) on 127.0.0.1."""

from __future__ import annotations

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


def node_env(rank: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "PMI_"))}
    env.update(PYTHONPATH=str(REPO), GPUPROBE_NODE_NAME=f"node{rank}", OMP_NUM_THREADS="1", COLUMNS="200")
    env.update(extra or {})
    return env


def start_nodes(n: int, out_dir: Path, args: list[str], port: int | None = None,
                extra_env: dict[int, dict[str, str]] | None = None) -> list[subprocess.Popen]:
    port = port or free_port()
    procs = []
    for r in range(n):
        cmd = [*TORCHRUN, "--nnodes", str(n), "--nproc-per-node", "1", "--node-rank", str(r), "--master-addr",
               "127.0.0.1", "--master-port", str(port), "-m", "gpuprobe", "probe", *args, "-o",
               str(out_dir / f"node{r}.json")]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=node_env(r, (extra_env or {}).get(r)),
                                      stdout=(out_dir / f"node{r}.out").open("w"),
                                      stderr=(out_dir / f"node{r}.err").open("w"), start_new_session=True))
    return procs


def wait_all(procs: list[subprocess.Popen], timeout_s: float) -> list[int | None]:
    end = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    codes = [p.poll() for p in procs]
    stop(procs)
    return codes


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(10)
