"""Turn timed samples into Measurements (one place for the statistics and the status rules)."""

from __future__ import annotations

from typing import Any

from gpuprobe.probes.core.timing import WindowResult
from gpuprobe.results.model import Measurement, Status, Unit
from gpuprobe.results.stats import summarize


def gpu(i: int) -> str:
    return f"gpu{i}"


def from_samples(probe: str, samples: list[float], unit: Unit, *, verified: bool | None = None,
                 wrong_elements: int | None = None, notes: list[str] | None = None, **fields: Any) -> Measurement:
    if not samples:
        return Measurement(probe=probe, status="error", unit=unit, reason="no valid sample", notes=list(notes or []),
                           verified=verified, wrong_elements=wrong_elements, **fields)
    status: Status = "mismatch" if wrong_elements else "ok"
    return Measurement(probe=probe, status=status, unit=unit, samples=list(samples), stat=summarize(samples),
                       verified=verified, wrong_elements=wrong_elements, notes=list(notes or []),
                       reason=f"{wrong_elements} words differed from the source pattern" if wrong_elements else None,
                       **fields)


def from_window(probe: str, res: WindowResult, notes: list[str] | None = None, **fields: Any) -> Measurement:
    return from_samples(probe, res.gbps, "GB/s", verified=res.verified if res.gbps else None,
                        wrong_elements=res.wrong_elements, notes=[*res.notes, *(notes or [])], **fields)


def waived(probe: str, reason: str, unit: Unit = "GB/s", **fields: Any) -> Measurement:
    return Measurement(probe=probe, status="waived", unit=unit, reason=reason, **fields)


def failed(probe: str, reason: str, unit: Unit = "GB/s", **fields: Any) -> Measurement:
    return Measurement(probe=probe, status="error", unit=unit, reason=reason, **fields)
