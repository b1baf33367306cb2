"""The probe table: stable keys, descriptions, applicability, selection by key / prefix / group / index.

A probe is a declaration (:class:`ProbeSpec`) plus a function that yields Measurements; it never times
anything itself (that is ``gpuprobe.probes.core.timing`` for CUDA copies and ``gpuprobe.probes.allreduce``
for collectives).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpuprobe.errors import UsageError
from gpuprobe.results.model import DeviceInfo, Measurement, Topology, Unit

if TYPE_CHECKING:
    from gpuprobe.options import ProbeOptions
    from gpuprobe.probes.core.cuda import Cuda


@dataclass
class ProbeContext:
    """What a probe function gets: the options, the GPUs, the topology, and a progress hook."""

    options: ProbeOptions
    gpus: list[int]
    """GPU indices taking part (empty on a machine without GPUs)."""
    devices: list[DeviceInfo] = field(default_factory=list)
    topology: Topology | None = None
    cuda: Cuda | None = None
    """The CUDA backend, or None when CUDA is unavailable."""
    progress: Callable[[str], None] = lambda label: None
    notes: list[str] = field(default_factory=list)
    """Run-level notes (e.g. a buffer reduced to fit free memory), each once."""
    cache: dict[str, Any] = field(default_factory=dict)
    """Buffers shared between probes of one run (freed with the CUDA backend)."""

    @property
    def cuda_backend(self) -> Cuda:
        """``cuda`` in a probe that needs it: ``ProbeSpec.waived_reason`` keeps a ``needs="cuda"`` probe from
        running without one."""
        if self.cuda is None:
            raise RuntimeError("a CUDA probe ran without the CUDA backend")
        return self.cuda

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def device(self, index: int) -> DeviceInfo | None:
        return next((d for d in self.devices if d.index == index), None)

    def path_class(self, a: int, b: int) -> str | None:
        """Link class between GPUs a and b from the topology (NV#, PIX, ..., SYS), if known."""
        if self.topology is None:
            return None
        lo, hi = min(a, b), max(a, b)
        pair = next((p for p in self.topology.pairs if p.a == lo and p.b == hi), None)
        return pair.path_class if pair else None

    def pairs(self) -> list[tuple[int, int]]:
        """Every ordered pair of distinct GPUs."""
        return [(a, b) for a in self.gpus for b in self.gpus if a != b]


ProbeFn = Callable[[ProbeContext], Iterator[Measurement]]


@dataclass(frozen=True)
class ProbeSpec:
    key: str
    group: str
    """``host``, ``p2p``, ``latency``, ``local`` or ``collective``."""
    description: str
    run: ProbeFn
    needs: str = "cuda"
    """``cuda`` (CUDA runtime through CuPy) or ``dist`` (torch.distributed: NCCL or gloo)."""
    min_gpus: int = 1
    unit: Unit = "GB/s"
    prestart: Callable[[ProbeContext], None] | None = None
    """Starts slow set-up (worker processes) in the background while the probes before this one run."""
    settle: Callable[[ProbeContext], float] | None = None
    """Waits for that set-up to finish (before the probes it would disturb: latencies); the seconds waited."""
    discard: Callable[[ProbeContext], None] | None = None
    """Ends what ``prestart`` started when the probe did not take it over (always called at the end)."""

    def waived_reason(self, ctx: ProbeContext) -> str | None:
        """Why this probe cannot run here (None when it can)."""
        if self.needs == "cuda":
            if ctx.cuda is None:
                return "no CUDA GPU available"
            if len(ctx.gpus) < self.min_gpus:
                return f"needs at least {self.min_gpus} GPUs, {len(ctx.gpus)} selected"
        return None


REGISTRY: list[ProbeSpec] = []
GROUP_ORDER = ("host", "local", "latency", "p2p", "collective")
"""Run and list order: cheap single-GPU probes first, all-reduce last."""


def register(spec: ProbeSpec) -> ProbeSpec:
    if any(s.key == spec.key for s in REGISTRY):
        raise ValueError(f"probe {spec.key} registered twice")
    REGISTRY.append(spec)
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    REGISTRY.sort(key=lambda s: rank.get(s.group, len(rank)))  # stable: registration order within a group
    return spec


def probe(key: str, group: str, description: str, **kw: Any) -> Callable[[ProbeFn], ProbeFn]:
    """Decorator: register ``fn`` as probe ``key``."""

    def deco(fn: ProbeFn) -> ProbeFn:
        register(ProbeSpec(key=key, group=group, description=description, run=fn, **kw))
        return fn

    return deco


def select(patterns: list[str], registry: list[ProbeSpec] | None = None) -> list[ProbeSpec]:
    """Probes matching any of ``patterns`` (exact key, key prefix, group name or index), in table order."""
    table = REGISTRY if registry is None else registry
    if not patterns:
        return list(table)
    chosen: set[str] = set()
    for pat in patterns:
        pat = pat.strip()
        if not pat:
            raise UsageError("--tests '' names no probe; give a probe key, prefix, group or index",
                             hint="see 'gpuprobe probe --list'")
        if pat.isdigit():
            i = int(pat)
            if i >= len(table):
                raise UsageError(f"probe index {i} is out of range (0..{len(table) - 1}); see 'gpuprobe probe --list'")
            chosen.add(table[i].key)
            continue
        hits = [s.key for s in table if s.key == pat or s.key.startswith(pat) or s.group == pat]
        if not hits:
            raise UsageError(f"no probe matches {pat!r}; see 'gpuprobe probe --list'")
        chosen.update(hits)
    return [s for s in table if s.key in chosen]
