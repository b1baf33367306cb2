"""Typed, defaulted, bounded options for each stage. Pure: no I/O, no NVML, no environment reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpuprobe.errors import UsageError

MiB = 1 << 20
GiB = 1 << 30


@dataclass
class ProbeOptions:
    """What ``gpuprobe probe`` measures and how (defaults follow nvbandwidth and nccl-tests)."""

    tests: list[str] = field(default_factory=list)
    """Probe keys, key prefixes, group names or registry indices; empty = every probe."""
    buffer_size_bytes: int = 512 * MiB
    """Bytes per copy for bandwidth probes (nvbandwidth's default); reduced when free memory is short."""
    copies_per_sample: int = 16
    """Copies enqueued back to back inside one timed window (nvbandwidth's loop count)."""
    warmup_copies: int = 4
    samples: int = 3
    """Timed windows per measurement; the median is reported."""
    verify: bool = True
    """Check every copied byte against the expected pattern on the device."""
    gpus: list[int] | None = None
    """GPU indices to probe (None = all visible)."""
    latency_hops: int = 100_000
    """Dependent loads per pointer-chase sample (2 MiB chain, 128-byte stride)."""
    small_copies: int = 100
    """16-byte copies per latency sample."""
    allreduce_min_bytes: int = 8
    allreduce_max_bytes: int = 1 * GiB
    allreduce_step_factor: int = 2
    allreduce_iters: int = 20
    """Timed all-reduce iterations per sample (nccl-tests' -n)."""
    allreduce_warmup_iters: int = 5
    allreduce_samples: int = 3
    collective_backend: str | None = None
    """``nccl`` or ``gloo``; None = NCCL when GPUs are present, else gloo on CPU processes."""
    cpu_ranks: int = 2
    """Processes for the gloo all-reduce on CPU."""
    allreduce_pairs: bool = True
    """Also sweep every GPU pair (not only the whole group)."""
    quick: bool = False

    def __post_init__(self) -> None:
        if self.quick:
            self.apply_quick()
        if self.buffer_size_bytes < 1 * MiB or self.buffer_size_bytes % 16:
            raise UsageError(
                f"buffer size {self.buffer_size_bytes} B is invalid: use at least 1 MiB, a multiple of 16 bytes"
            )
        for name in ("copies_per_sample", "samples", "latency_hops", "small_copies", "allreduce_iters",
                     "allreduce_samples", "cpu_ranks"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.warmup_copies < 0 or self.allreduce_warmup_iters < 0:
            raise UsageError("warm-up counts cannot be negative")
        if not (1 <= self.allreduce_min_bytes <= self.allreduce_max_bytes):
            raise UsageError(
                f"all-reduce sizes {self.allreduce_min_bytes}..{self.allreduce_max_bytes} B are invalid: "
                "need 1 <= min <= max"
            )
        if self.allreduce_step_factor < 2:
            raise UsageError("all-reduce step factor must be at least 2")
        if self.collective_backend not in (None, "nccl", "gloo"):
            raise UsageError(f"collective backend {self.collective_backend!r} is not one of nccl, gloo")
        if self.gpus is not None and (not self.gpus or min(self.gpus) < 0 or len(set(self.gpus)) != len(self.gpus)):
            raise UsageError(f"GPU list {self.gpus} is invalid: give distinct indices >= 0")

    def apply_quick(self) -> None:
        """Smaller buffers and fewer iterations: a screening run of a few seconds."""
        self.buffer_size_bytes = min(self.buffer_size_bytes, 64 * MiB)
        self.copies_per_sample = min(self.copies_per_sample, 8)
        self.warmup_copies = min(self.warmup_copies, 2)
        self.latency_hops = min(self.latency_hops, 20_000)
        self.allreduce_max_bytes = min(self.allreduce_max_bytes, 64 * MiB)
        self.allreduce_step_factor = max(self.allreduce_step_factor, 4)
        self.allreduce_iters = min(self.allreduce_iters, 10)
        self.allreduce_warmup_iters = min(self.allreduce_warmup_iters, 2)

    def allreduce_sizes(self) -> list[int]:
        """Message sizes of the sweep: min, min*factor, ... up to max (inclusive), like nccl-tests -b -e -f."""
        sizes, s = [], self.allreduce_min_bytes
        while s <= self.allreduce_max_bytes:
            sizes.append(s)
            s *= self.allreduce_step_factor
        return sizes
