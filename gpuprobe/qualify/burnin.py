"""The burn-in load: a bf16 matmul measured alone on every GPU, then the same matmul under sustained copies and
all-reduce on every GPU at once; the ratio under load / alone is judged (target >= 0.90).

Backends (``BurnInBackend``):

- ``TorchBurnIn``: torch on CUDA. Per GPU one thread runs 8192² bf16 matmuls on its own stream, timed with CUDA
  events; under load another thread per GPU copies 1 GiB device-local and 256 MiB host->device (pinned) on
  a second stream, and with two or more GPUs one thread all-reduces 256 MiB across them
  (``torch.cuda.nccl.all_reduce``, single process). Every thread catches its own error into ``problems``:
  a failing part of the load never loses the figures of the others.
- ``SimulatedBurnIn``: no GPU; fixed rates and a simulated clock, for tests of the orchestration.

``judge_burn_in`` turns a ``BurnIn`` into checks (category ``burn-in``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gpuprobe.results.qualification import BurnIn, Check, MatmulFigure, Verdict

TARGET_RATIO = 0.90
FAIL_RATIO = 0.75
PEER_BELOW_BEST = 0.90
MATMUL_N = 8192


@dataclass
class LoadFigures:
    matmul_tflops: dict[int, float] = field(default_factory=dict)
    copies_gbps: dict[int, float] = field(default_factory=dict)
    allreduce_busbw_gbps: float | None = None
    iterations: int = 0
    ran_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class BurnInBackend(Protocol):
    name: str

    def gpus(self) -> list[int]: ...

    def matmul_alone(self, seconds: float) -> tuple[dict[int, float], list[str]]: ...

    def load(self, seconds: float, stop: threading.Event) -> LoadFigures: ...


def matmul_ratios(alone: dict[int, float], under: dict[int, float]) -> list[MatmulFigure]:
    """One figure per GPU measured alone or under load; ratio = under load / alone (None if either is missing)."""
    out = []
    for g in sorted(set(alone) | set(under)):
        a, u = alone.get(g), under.get(g)
        ratio = round(u / a, 4) if a and u is not None and a > 0 else None
        out.append(MatmulFigure(gpu=g, alone_tflops=a, under_load_tflops=u, ratio=ratio))
    return out


def judge_burn_in(b: BurnIn) -> list[Check]:
    checks: list[Check] = []
    alone = [m.alone_tflops for m in b.matmul if m.alone_tflops]
    best = max(alone, default=None)
    for m in b.matmul:
        subject = f"gpu{m.gpu}"
        if m.ratio is None:
            checks.append(Check(subject=subject, test="matmul_under_load", verdict="WARN", category="burn-in",
                                cause="the matmul could not be measured both alone and under load",
                                next_step="see the burn-in problems; re-run the burn-in"))
            continue
        verdict: Verdict = "PASS" if m.ratio >= b.target_ratio else "FAIL" if m.ratio < FAIL_RATIO else "WARN"
        c = Check(subject=subject, test="matmul_under_load", verdict=verdict, category="burn-in", value=m.ratio,
                  unit="ratio", expected=b.target_ratio, ratio=m.ratio,
                  expectation_basis=f"bf16 matmul under copy and all-reduce load / alone; target >= "
                                    f"{b.target_ratio:.2f}, FAIL below {FAIL_RATIO:.2f}",
                  warn_below=b.target_ratio, fail_below=FAIL_RATIO,
                  detail=f"{m.under_load_tflops:.1f} TFLOP/s under load, {m.alone_tflops:.1f} alone")
        if verdict != "PASS":
            c.cause = (f"the matmul ran at {m.ratio:.0%} of its rate alone while copies and all-reduce ran: power "
                       "or thermal headroom short (see the clocks and throttle checks), or the load starved it")
            c.next_step = ("check the throttle reasons and clocks of the timeline; compare the power limit with "
                           "the GPU's rating ('nvidia-smi -q -d POWER'); check cooling")
        checks.append(c)
        if best and m.alone_tflops and m.alone_tflops < PEER_BELOW_BEST * best:
            checks.append(Check(subject=subject, test="matmul_alone", verdict="WARN", category="burn-in",
                                value=m.alone_tflops, unit="TFLOP/s", expected=best,
                                ratio=round(m.alone_tflops / best, 4),
                                cause=f"matmul alone {1 - m.alone_tflops / best:.0%} below the best GPU of this "
                                      f"machine ({best:.1f} TFLOP/s)",
                                next_step="compare its clocks, power limit and temperature with the best GPU"))
    if b.ran_s is not None and b.ran_s < 0.95 * b.duration_s:
        checks.append(Check(subject="run", test="burn-in", verdict="WARN", category="burn-in", value=b.ran_s,
                            unit="s", expected=b.duration_s,
                            cause=f"the load ran {b.ran_s:.0f} s of the {b.duration_s:.0f} s asked for",
                            next_step="run the burn-in again for its full duration"))
    for p in b.problems:
        checks.append(Check(subject="run", test="burn-in", verdict="WARN", category="burn-in", cause=p,
                            next_step="fix the problem and run the burn-in again"))
    return checks


class SimulatedBurnIn:
    """No GPU: returns ``alone`` and ``under`` TFLOP/s per GPU, advancing an injected clock instead of sleeping."""

    name = "simulated"

    def __init__(self, alone: dict[int, float], under: dict[int, float], advance: Callable[[float], None],
                 copies_gbps: float = 1000.0, allreduce_busbw: float | None = None) -> None:
        self.alone, self.under, self.advance = alone, under, advance
        self.copies, self.allreduce = copies_gbps, allreduce_busbw

    def gpus(self) -> list[int]:
        return sorted(self.alone)

    def matmul_alone(self, seconds: float) -> tuple[dict[int, float], list[str]]:
        self.advance(seconds)
        return dict(self.alone), []

    def load(self, seconds: float, stop: threading.Event) -> LoadFigures:
        ran = 0.0
        while ran < seconds and not stop.is_set():
            step = min(1.0, seconds - ran)
            self.advance(step)
            ran += step
        return LoadFigures(matmul_tflops=dict(self.under), copies_gbps={g: self.copies for g in self.alone},
                           allreduce_busbw_gbps=self.allreduce, iterations=int(ran), ran_s=ran)


class TorchBurnIn:
    """The real load, through torch on CUDA (see the module docstring)."""

    name = "torch"

    def __init__(self, indices: list[int] | None = None, n: int = MATMUL_N) -> None:
        import torch  # loaded only for a burn-in on a GPU machine

        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        self.torch = torch
        self.indices = indices if indices is not None else list(range(torch.cuda.device_count()))
        self.n = n

    def gpus(self) -> list[int]:
        return list(self.indices)

    # -- matmul -----------------------------------------------------------------------------------------------
    def _matmul(self, g: int, seconds: float, stop: threading.Event, out: dict[int, float],
                problems: list[str]) -> None:
        torch = self.torch
        try:
            dev = torch.device("cuda", g)
            with torch.cuda.device(dev):
                stream = torch.cuda.Stream(dev)
                with torch.cuda.stream(stream):
                    a = torch.randn(self.n, self.n, device=dev, dtype=torch.bfloat16)
                    b = torch.randn(self.n, self.n, device=dev, dtype=torch.bfloat16)
                    c = torch.empty_like(a)
                    for _ in range(3):
                        torch.matmul(a, b, out=c)
                    stream.synchronize()
                    flops, gpu_ms = 0.0, 0.0
                    end_at = time.monotonic() + seconds
                    while time.monotonic() < end_at and not stop.is_set():
                        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        e0.record(stream)
                        for _ in range(20):
                            torch.matmul(a, b, out=c)
                        e1.record(stream)
                        e1.synchronize()
                        gpu_ms += e0.elapsed_time(e1)
                        flops += 20 * 2.0 * self.n ** 3
                    if gpu_ms > 0:
                        out[g] = round(flops / (gpu_ms / 1000) / 1e12, 2)
        except Exception as exc:  # noqa: BLE001 - each part of the load reports its own failure
            problems.append(f"gpu{g} matmul: {type(exc).__name__}: {exc}")

    def matmul_alone(self, seconds: float) -> tuple[dict[int, float], list[str]]:
        out: dict[int, float] = {}
        problems: list[str] = []
        stop = threading.Event()
        run_all([threading.Thread(target=self._matmul, args=(g, seconds, stop, out, problems), daemon=True)
                 for g in self.indices], stop)
        return out, problems

    # -- load -------------------------------------------------------------------------------------------------
    def _copies(self, g: int, seconds: float, stop: threading.Event, out: dict[int, float],
                problems: list[str]) -> None:
        torch = self.torch
        try:
            dev = torch.device("cuda", g)
            with torch.cuda.device(dev):
                stream = torch.cuda.Stream(dev)
                src = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
                dst = torch.empty_like(src)
                host = torch.empty(256 << 20, dtype=torch.uint8, pin_memory=True)
                dev_in = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
                moved, t0 = 0, time.monotonic()
                end_at = t0 + seconds
                with torch.cuda.stream(stream):
                    while time.monotonic() < end_at and not stop.is_set():
                        dst.copy_(src, non_blocking=True)
                        dev_in.copy_(host, non_blocking=True)
                        stream.synchronize()
                        moved += src.numel() + host.numel()
                out[g] = round(moved / (time.monotonic() - t0) / 1e9, 2)
        except Exception as exc:  # noqa: BLE001 - each part of the load reports its own failure
            problems.append(f"gpu{g} copies: {type(exc).__name__}: {exc}")

    def _allreduce(self, seconds: float, stop: threading.Event, figures: LoadFigures) -> None:
        torch = self.torch
        try:
            import torch.cuda.nccl as nccl

            count = 64 << 20  # 64 Mi float32 = 256 MiB per GPU
            tensors = [torch.ones(count, dtype=torch.float32, device=torch.device("cuda", g)) for g in self.indices]
            n, ops, t0 = len(tensors), 0, time.monotonic()
            end_at = t0 + seconds
            while time.monotonic() < end_at and not stop.is_set():
                nccl.all_reduce(tensors)
                for g in self.indices:
                    torch.cuda.synchronize(g)
                ops += 1
            elapsed = time.monotonic() - t0
            if ops:
                algbw = ops * count * 4 / elapsed / 1e9
                figures.allreduce_busbw_gbps = round(algbw * 2 * (n - 1) / n, 2)
        except Exception as exc:  # noqa: BLE001 - each part of the load reports its own failure
            figures.problems.append(f"all-reduce load: {type(exc).__name__}: {exc}")

    def load(self, seconds: float, stop: threading.Event) -> LoadFigures:
        figures = LoadFigures()
        t0 = time.monotonic()
        threads = []
        for g in self.indices:
            threads.append(threading.Thread(target=self._matmul, daemon=True,
                                            args=(g, seconds, stop, figures.matmul_tflops, figures.problems)))
            threads.append(threading.Thread(target=self._copies, daemon=True,
                                            args=(g, seconds, stop, figures.copies_gbps, figures.problems)))
        if len(self.indices) > 1:
            threads.append(threading.Thread(target=self._allreduce, args=(seconds, stop, figures), daemon=True))
        else:
            figures.notes.append("one GPU: no all-reduce in the load (copies and matmul only)")
        try:
            run_all(threads, stop)
        except KeyboardInterrupt:
            figures.problems.append("interrupted")
        figures.ran_s = round(time.monotonic() - t0, 1)
        return figures


def run_all(threads: list[threading.Thread], stop: threading.Event) -> None:
    """Start ``threads`` and wait for them all. Ctrl-C (or SIGTERM/SIGHUP, turned into it) sets ``stop``, gives
    them 30 s to end and is raised again: no part of the load runs on while the caller saves and exits."""
    for t in threads:
        t.start()
    try:
        _wait_ended(threads, None)
    except KeyboardInterrupt:
        stop.set()
        _wait_ended(threads, time.monotonic() + 30)
        raise


def _wait_ended(threads: list[threading.Thread], deadline: float | None) -> None:
    """Poll until ``threads`` have ended (or ``deadline`` passed). Not ``Thread.join``: an interrupt that lands inside
    a blocking join makes Python before 3.12 mark a running thread as ended (bpo-45274), so a join after Ctrl-C could
    return while the load still runs; a signal here interrupts only the sleep."""
    while any(t.is_alive() for t in threads) and (deadline is None or time.monotonic() < deadline):
        time.sleep(0.05)


def make_backend(indices: list[int] | None = None) -> Any:
    """The torch backend (raises with a one-line reason when torch or CUDA is missing)."""
    return TorchBurnIn(indices)
