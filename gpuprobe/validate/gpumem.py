"""GPU count, names and memory in use for the validation runner (parent side only), through the one NVML
gateway (``gpuprobe.system.nvml.LiveNvml``).

The runner samples total used memory on the run's GPUs while the child is alive: vLLM's workers are
separate processes, so ``torch.cuda.max_memory_reserved`` in any one process would miss the others.
Every NVML failure becomes ``None`` plus a reason; nothing here raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpuprobe.errors import NvmlUnavailable
from gpuprobe.system.nvml import LiveNvml, gpu


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

