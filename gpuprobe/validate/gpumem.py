"""GPU count and memory in use, through NVML, for the validation runner (parent side only).

The runner samples total used memory on the run's GPUs while the child is alive: vLLM's workers are
separate processes, so ``torch.cuda.max_memory_reserved`` in any one process would miss the others.
Every NVML failure becomes ``None`` plus a reason; nothing here raises.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Nvml:
    """Lazy NVML handle. ``reason`` says why it is unavailable (then every query answers None)."""

    reason: str | None = None
    _lib: Any = None
    _handles: dict[int, Any] = field(default_factory=dict)
    _tried: bool = False

    def _init(self) -> bool:
        if self._tried:
            return self._lib is not None
        self._tried = True
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            self._lib = pynvml
        except Exception as exc:  # noqa: BLE001 - no driver, no library, no GPU: all mean "not available"
            self.reason = f"NVML not available ({type(exc).__name__}: {exc})".strip()
            self._lib = None
        return self._lib is not None

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            self._handles[index] = self._lib.nvmlDeviceGetHandleByIndex(index)
        return self._handles[index]

    def count(self) -> int:
        if not self._init():
            return 0
        try:
            return int(self._lib.nvmlDeviceGetCount())
        except Exception as exc:  # noqa: BLE001
            self.reason = f"NVML device count failed: {exc}"
            return 0

    def name(self, index: int) -> str | None:
        if not self._init():
            return None
        try:
            name = self._lib.nvmlDeviceGetName(self._handle(index))
            return name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # noqa: BLE001
            return None

    def used_bytes(self, indices: list[int]) -> int | None:
        """Total memory used on those GPUs (all processes), or None."""
        if not self._init():
            return None
        try:
            return sum(int(self._lib.nvmlDeviceGetMemoryInfo(self._handle(i)).used) for i in indices)
        except Exception as exc:  # noqa: BLE001
            self.reason = f"NVML memory query failed: {exc}"
            return None

    def close(self) -> None:
        if self._lib is not None:
            with contextlib.suppress(Exception):
                self._lib.nvmlShutdown()
            self._lib = None
            self._handles.clear()
