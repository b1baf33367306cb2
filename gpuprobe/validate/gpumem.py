"""GPU count, names and memory in use for the validation runner (parent side only), through the one NVML
gateway (``gpuprobe.system.nvml.LiveNvml``).

The runner samples total used memory on the run's GPUs while the child is alive (``MemorySampler``): vLLM's workers are
separate processes, so ``torch.cuda.max_memory_reserved`` in any one process would miss the others.
Every NVML failure becomes ``None`` plus a reason; nothing here raises.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuprobe.errors import NvmlUnavailable
from gpuprobe.results.validation import GpuMemory, Measured
from gpuprobe.system.nvml import LiveNvml, gpu

SAMPLE_INTERVAL_S = 0.2
RELEASE_WAIT_S = 30.0
RELEASE_SLACK_BYTES = 256 * 2**20


@dataclass
class Nvml:
    """NVML for the runner, opened on first use. ``reason`` says why it is unavailable (then every query answers
    None)."""

    reason: str | None = None
    _gateway: LiveNvml = field(default_factory=LiveNvml)
    _closed: bool = False
    """NVML could not be opened: not tried again."""

    def _query(self, func_name: str, *args: Any) -> Any:
        if self._closed:
            return None
        try:
            value = self._gateway.query(func_name, *args, optional=True)
        except NvmlUnavailable as exc:
            self._closed = True
            self.reason = f"NVML not available ({exc.message})"
            return None
        if value is None:
            self.reason = f"NVML {func_name} failed"
        return value

    def count(self) -> int:
        n = self._query("nvmlDeviceGetCount")
        return int(n) if isinstance(n, int) else 0

    def name(self, index: int) -> str | None:
        name = self._query("nvmlDeviceGetName", gpu(index))
        return str(name) if name else None

    def used_bytes(self, indices: list[int]) -> int | None:
        """Total memory used on those GPUs (all processes), or None."""
        total = 0
        for i in indices:
            info = self._query("nvmlDeviceGetMemoryInfo", gpu(i))
            if not isinstance(info, dict) or not isinstance(info.get("used"), int):
                return None
            total += info["used"]
        return total

    def close(self) -> None:
        self._gateway.close()


class MemorySampler:
    """Highest total GPU memory in use on the run's GPUs, sampled every 0.2 s in a thread while the run lives."""

    def __init__(self, nvml: Nvml, gpus: list[int], active: bool) -> None:
        self.nvml, self.gpus = nvml, gpus
        self.baseline = nvml.used_bytes(gpus) if active else None
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True) if self.baseline is not None else None

    def __enter__(self) -> MemorySampler:
        if self._thread is not None:
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            used = self.nvml.used_bytes(self.gpus)
            if used is not None:
                self.peak = max(self.peak or 0, used)
                self.samples += 1

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def record(self, measured: Measured, platform: str) -> None:
        if platform == "cuda" and self.baseline is not None and self.peak is not None:
            after = _wait_release(self.nvml, self.gpus, self.baseline)
            measured.gpu_memory = GpuMemory(
                gpus=self.gpus, baseline_used_bytes=self.baseline, peak_used_bytes=self.peak,
                peak_run_bytes=max(self.peak - self.baseline, 0), after_used_bytes=after,
                released=None if after is None else after <= self.baseline + RELEASE_SLACK_BYTES,
                samples=self.samples, interval_s=SAMPLE_INTERVAL_S,
            )  # fmt: skip
        else:
            why = self.nvml.reason or "NVML gave no figure"
            measured.gpu_memory_reason = "CPU run: no GPU memory to measure" if platform == "cpu" else why


def _wait_release(nvml: Nvml, gpus: list[int], baseline: int) -> int | None:
    deadline = time.monotonic() + RELEASE_WAIT_S
    used = nvml.used_bytes(gpus)
    while used is not None and used > baseline + RELEASE_SLACK_BYTES and time.monotonic() < deadline:
        time.sleep(0.5)
        used = nvml.used_bytes(gpus)
    return used


def device_string(platform: str, nvml: Nvml, count: int) -> str:
    """The machine's devices in one line: GPU names with their counts, or the CPU's model and core count."""
    if platform == "cuda":
        names = [nvml.name(i) or "GPU" for i in range(count)]
        uniq = sorted(set(names))
        return ", ".join(f"{n} x{names.count(n)}" for n in uniq)
    name = "cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"cpu: {name} ({os.cpu_count()} cores)"
