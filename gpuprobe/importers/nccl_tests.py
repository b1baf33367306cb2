"""nccl-tests output (the text table, or JSON from ``-J``) -> Results.

Each size gives two records, as nccl-tests prints two: the in-place operation under the collective's own key
(``all_reduce`` for ``all_reduce_perf``: gpuprobe's all-reduce probe is in-place too) and the out-of-place one
under ``<collective>_out_of_place``. Time is in µs (nccl-tests: host clock around the iterations, averaged over
ranks), algbw/busbw in GB/s, #wrong in ``wrong_elements``. Figures keep the rounding of the file.
"""

from __future__ import annotations

import re
from typing import Any

from gpuprobe.errors import ResultsFileError
from gpuprobe.importers.common import (
    MAX_ROWS,
    count,
    damaged,
    figure,
    finish,
    items,
    nccl_version,
    obj,
    run_info,
    single_stat,
)
from gpuprobe.results.model import MAX_DEVICES, DeviceInfo, Measurement, Results

SOURCE = "nccl-tests"
_RANK = re.compile(r"#\s*Rank\s+(\d+)\s+Group\s+(\d+)\s+Pid\s+(\d+)\s+on\s+(\S+)\s+"
                   r"device\s+(\d+)\s+\[([^\]]+)\]\s+(.*)$")


def _record(collective: str, place: str, size: int, time_us: float, algbw: float, busbw: float, wrong: int | None,
            ranks: list[int], dtype: str, redop: str, checked: bool) -> Measurement:
    mismatch = bool(wrong)
    probe = collective if place == "in_place" else f"{collective}_out_of_place"
    return Measurement(
        probe=probe, status="mismatch" if mismatch else "ok", unit="us", direction="collective", engine="nccl",
        size_bytes=size, samples=[time_us], stat=single_stat(time_us), ranks=ranks, algbw_gbps=algbw,
        busbw_gbps=busbw, wrong_elements=wrong, verified=(checked and not mismatch) if wrong is not None else None,
        reason=f"{wrong} wrong elements" if mismatch else None,
        notes=[f"nccl-tests {place.replace('_', '-')}, {dtype} {redop}; time is the mean over its iterations"])


def _devices(entries: list[tuple[int, str, int, str, str]]) -> tuple[list[DeviceInfo], list[int], str | None]:
    """(rank, host, device, bus id, name) per rank -> devices, group ranks (GPU indices), hostname."""
    hosts = {e[1] for e in entries}
    devices: dict[int, DeviceInfo] = {}
    for _, _, dev, bus, name in entries:
        devices.setdefault(dev, DeviceInfo(index=dev, name=name.strip(), pci_bus_id=bus))
    one_host = len(hosts) == 1 and len(devices) == len(entries)
    ranks = [e[2] for e in entries] if one_host else [e[0] for e in entries]
    return sorted(devices.values(), key=lambda d: d.index), ranks, (hosts.pop() if len(hosts) == 1 else None)


def from_text(text: str, origin: str = "nccl-tests output") -> Results:
    """Results from the text nccl-tests prints (``all_reduce_perf ...``)."""
    version = nccl = None
    collective = "all_reduce"
    checked = True
    entries: list[tuple[int, str, int, str, str]] = []
    rows: list[list[str]] = []
    tail: list[str] = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("# nccl-tests version"):
            version = s.split()[3]
            m = re.search(r"nccl-library=(\d+)", s)
            nccl = nccl_version(m.group(1)) if m else None
        elif s.startswith("# Collective test starting:"):
            collective = s.split(":", 1)[1].strip().removesuffix("_perf")
        elif "validation:" in s and s.startswith("#"):
            m = re.search(r"validation:\s*(\d+)", s)
            checked = bool(m and int(m.group(1)))
        elif m := _RANK.match(s):
            if len(entries) >= MAX_DEVICES:
                raise damaged(origin, "'# Rank' lines", f"are more than {MAX_DEVICES}")
            entries.append((count(m.group(1), origin, "Rank", MAX_DEVICES - 1), m.group(4),
                            count(m.group(5), origin, "device", MAX_DEVICES - 1), m.group(6), m.group(7)))
        elif s.startswith(("# Out of bounds", "# Avg bus bandwidth")):
            tail.append(s.lstrip("# ").strip())
        elif s and not s.startswith("#"):
            cols = s.split()
            if len(cols) < 13 or not cols[0].isdigit():
                raise ResultsFileError(f"{origin}: not an nccl-tests row: {s[:80]!r}")
            if len(rows) >= MAX_ROWS:
                raise damaged(origin, "result rows", f"are more than {MAX_ROWS}")
            rows.append(cols)
    if version is None and not rows:
        raise ResultsFileError(f"{origin} is not nccl-tests output (no version line and no result rows)")
    devices, ranks, host = _devices(entries)
    run = run_info(SOURCE, origin=origin, tool_version=version, hostname=host, nccl_version=nccl)
    results = Results(run=run, devices=devices, notes=tail)
    for n, c in enumerate(rows, 1):
        size, dtype, redop = count(c[0], origin, f"row {n} size"), c[2], c[3]
        count(c[1], origin, f"row {n} count")
        for place, off in (("out_of_place", 5), ("in_place", 9)):
            where = f"row {n} ({size} B) {place.replace('_', '-')}"
            wrong = None if c[off + 3] == "N/A" else count(c[off + 3], origin, f"{where} #wrong")
            results.measurements.append(_record(
                collective, place, size, figure(c[off], origin, f"{where} time"),
                figure(c[off + 1], origin, f"{where} algbw"), figure(c[off + 2], origin, f"{where} busbw"), wrong,
                ranks, dtype, redop, checked))
    return finish(results)


def from_json(data: Any, origin: str = "nccl-tests JSON") -> Results:
    """Results from the document nccl-tests writes with ``-J FILE``."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ResultsFileError(f"{origin} is not nccl-tests JSON (no 'results' list)")
    args = items(data.get("args"), origin, "args")
    collective = "all_reduce"
    if args:
        collective = str(args[0]).rsplit("/", 1)[-1].removesuffix("_perf")
    config = obj(data.get("config"), origin, "config")
    entries = []
    for i, d in enumerate(items(config.get("devices"), origin, "config.devices", MAX_DEVICES)):
        d = obj(d, origin, f"config.devices[{i}]")
        where = f"config.devices[{i}]"
        rank = count(d.get("rank", i), origin, f"{where}.rank", MAX_DEVICES - 1)
        dev = count(d.get("device", i), origin, f"{where}.device", MAX_DEVICES - 1)
        entries.append((rank, str(d.get("hostname", "")), dev, str(d.get("device_hex", "")),
                        str(d.get("device_info", ""))))
    devices, ranks, host = _devices(entries)
    run = run_info(SOURCE, origin=origin, tool_version=None, hostname=host,
                   nccl_version=nccl_version(data.get("nccl_version")), command=[str(a) for a in args])
    if data.get("version") is not None:
        run.options["json_format_version"] = data["version"]
    if data.get("start_time"):
        run.options["tool_start_time_local"] = data["start_time"]
    checked = bool(config.get("validation", 1))
    results = Results(run=run, devices=devices)
    for n, r in enumerate(items(data["results"], origin, "results")):
        r = obj(r, origin, f"results[{n}]")
        if "size" not in r:
            raise damaged(origin, f"results[{n}]", "has no 'size'")
        size = count(r["size"], origin, f"results[{n}].size")
        for place in ("out_of_place", "in_place"):
            p = r.get(place)
            if not isinstance(p, dict):
                continue
            t = p.get("time", p.get("cpu_time"))
            if t is None:
                continue
            where = f"results[{n}].{place}"
            wrong = p.get("nwrong")
            results.measurements.append(_record(
                collective, place, size, figure(t, origin, f"{where}.time"),
                figure(p.get("alg_bw", 0.0), origin, f"{where}.alg_bw"),
                figure(p.get("bus_bw", 0.0), origin, f"{where}.bus_bw"),
                None if wrong is None else count(wrong, origin, f"{where}.nwrong"), ranks, str(r.get("type", "?")),
                str(r.get("redop", "?")), checked))
    return finish(results)
