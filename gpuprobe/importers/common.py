"""Pieces every importer shares: one-figure statistics, run facts and the nvbandwidth key vocabulary."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from gpuprobe import __version__
from gpuprobe.errors import ResultsFileError
from gpuprobe.results.model import Measurement, Results, RunInfo, Stat, Status, Unit, now_utc

MAX_ROWS = 100_000
"""The most result rows (message sizes, testcases, devices) one imported output may have."""
_DAMAGED_HINT = "import the tool's unedited output"


def damaged(origin: str, where: str, reason: str) -> ResultsFileError:
    """The one line for a bad field of another tool's output: the file, the field and what is wrong with it."""
    return ResultsFileError(f"{origin}: {where} {reason}", hint=_DAMAGED_HINT)


def obj(value: Any, origin: str, where: str) -> dict[str, Any]:
    """``value`` as a JSON object (None: an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise damaged(origin, where, f"must be an object, not {type(value).__name__}")
    return value


def items(value: Any, origin: str, where: str, limit: int = MAX_ROWS) -> list[Any]:
    """``value`` as a JSON list of at most ``limit`` entries (None: an empty one)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise damaged(origin, where, f"must be a list, not {type(value).__name__}")
    if len(value) > limit:
        raise damaged(origin, where, f"has {len(value)} entries; at most {limit} are read")
    return value


def figure(value: Any, origin: str, where: str) -> float:
    """A measured figure: a finite number >= 0, given as a JSON number or as the text the tool printed."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise damaged(origin, where, f"is {value!r}, not a number")
    try:
        x = float(value)
    except (ValueError, OverflowError):
        raise damaged(origin, where, f"is {str(value)[:40]!r}, not a number") from None
    if not math.isfinite(x):
        raise damaged(origin, where, f"is {str(value)[:40]!r}, not a finite number")
    if x < 0:
        raise damaged(origin, where, f"is negative ({x:g}); a measured figure is >= 0")
    return x


def count(value: Any, origin: str, where: str, limit: int = 1 << 62) -> int:
    """A whole number in 0..``limit`` (``3``, ``"3"`` or ``3.0``, as tools print them)."""
    x = figure(value, origin, where)
    if not x.is_integer():
        raise damaged(origin, where, f"is {x:g}, not a whole number")
    if x > limit:
        raise damaged(origin, where, f"is {x:.0f}; at most {limit} is read")
    return int(x)


def single_stat(value: float) -> Stat:
    """The summary of one reported figure (the tool printed a median or a mean, not its samples)."""
    return Stat(n=1, median=value, min=value, max=value, mean=value, stdev=0.0, cv=0.0, p95=value)


def run_info(source: str, *, origin: str, tool_version: str | None, started_utc: str | None = None,
             hostname: str | None = None, driver_version: str | None = None, cuda_runtime_version: str | None = None,
             cuda_driver_version: str | None = None, nccl_version: str | None = None,
             command: list[str] | None = None) -> RunInfo:
    """RunInfo of an imported output: ``source`` is the tool, ``options`` keeps where and when it was imported."""
    imported = now_utc()
    options: dict[str, Any] = {"imported_from": origin, "imported_utc": imported}
    if tool_version:
        options["tool_version"] = tool_version
    return RunInfo(gpuprobe_version=__version__, started_utc=started_utc or imported, hostname=hostname,
                   driver_version=driver_version, cuda_driver_version=cuda_driver_version,
                   cuda_runtime_version=cuda_runtime_version, nccl_version=nccl_version, command=command or [],
                   options=options, source=source)


def finish(results: Results) -> Results:
    """Set the run status from the measurements: ``partial`` when any failed or did not verify."""
    bad = [m for m in results.measurements if m.status in ("error", "mismatch")]
    results.status = "partial" if bad else "complete"
    return results


def cuda_version(value: object) -> str | None:
    """13000 -> "13.0" (the CUDA version integer as the runtime reports it)."""
    try:
        n = int(str(value))
    except ValueError:
        return str(value) if value not in (None, "") else None
    return f"{n // 1000}.{(n % 1000) // 10}"


def nccl_version(value: object) -> str | None:
    """22809 -> "2.28.9" (NCCL_VERSION_CODE of NCCL >= 2.9)."""
    try:
        n = int(str(value))
    except ValueError:
        return None
    if n >= 10000:
        return f"{n // 10000}.{(n % 10000) // 100}.{n % 100}"
    return f"{n // 1000}.{(n % 1000) // 100}.{n % 100}"


# -- nvbandwidth testcase keys -> gpuprobe measurement fields -----------------------------------------------
_UNIT = re.compile(r"\((GB/s|ns|us)\)")
_UNITS: dict[str, Unit] = {"GB/s": "GB/s", "ns": "ns", "us": "us"}


def nvbandwidth_measurement(key: str, description: str, row: int, col: int, value: float | None,
                            status: Status = "ok", reason: str | None = None) -> Measurement:
    """One matrix cell of an nvbandwidth testcase as a Measurement in gpuprobe's vocabulary.

    nvbandwidth's orientation (its ``testcase.h``): host tests have the CPU as the row and the GPU as the column;
    in device-to-device tests the row GPU is the initiator, so a *read* pulls from the column GPU into the row GPU
    and a *write* pushes from the row GPU into the column GPU.
    """
    m = _UNIT.search(description)
    unit = _UNITS[m.group(1)] if m else "GB/s"
    engine = "sm" if key.endswith("_sm") else "ce"
    traffic: Literal["unidirectional", "bidirectional"] = (
        "bidirectional" if "bidirectional" in key else "unidirectional")
    gpu_col, gpu_row = f"gpu{col}", f"gpu{row}"
    src: str | None = None
    dst: str | None = None
    initiator: str | None = None
    direction: str | None = None
    path: str | None = None
    if key.startswith(("host_to_device", "host_to_all", "host_device_latency")):
        src, dst, initiator, direction, path = "host", gpu_col, gpu_col, "h2d", "PCIe"
    elif key.startswith(("device_to_host", "all_to_host")):
        src, dst, initiator, direction, path = gpu_col, "host", gpu_col, "d2h", "PCIe"
    elif key.startswith("device_local_copy"):
        src = dst = initiator = gpu_col
        direction, path = "local", "HBM"
    elif key.startswith(("device_to_device", "all_to_one", "one_to_all")):
        direction = "d2d"
        if "_read" in key:
            src, dst = gpu_col, gpu_row
        else:
            src, dst = gpu_row, gpu_col
        initiator = gpu_row
    if value is None and status == "ok":
        status, reason = "waived", reason or "N/A in the nvbandwidth matrix (no such pair or not run)"
    notes = ["nvbandwidth prints one figure per cell (the median of its samples), not the samples"]
    return Measurement(probe=key, status=status, unit=unit, src=src, dst=dst,
                       initiator=initiator, direction=direction, engine=engine, traffic=traffic,
                       host_memory="pinned" if "host" in (src, dst) else None,
                       samples=[value] if value is not None else [],
                       stat=single_stat(value) if value is not None else None, path_class=path,
                       reason=reason, notes=notes)
