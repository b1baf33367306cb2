"""nvbandwidth output (text, or JSON from ``-j``) -> Results.

Every matrix cell with a figure becomes one Measurement whose probe key is nvbandwidth's testcase name (gpuprobe
uses the same keys), with src/dst/initiator spelled out. Cells printed as ``N/A`` (the diagonal of a pairwise
test, pairs without peer access) are left out; a testcase that is waived or failed becomes one record with
status ``waived``/``error`` and nvbandwidth's message. Figures keep the rounding the file has: two decimals in
the text output, the strings of the JSON matrix (six significant digits) converted as printed.
"""

from __future__ import annotations

import re
from typing import Any

from gpuprobe.errors import ResultsFileError
from gpuprobe.importers.common import (
    count,
    cuda_version,
    damaged,
    figure,
    finish,
    items,
    nvbandwidth_measurement,
    obj,
    run_info,
)
from gpuprobe.results.model import MAX_DEVICES, DeviceInfo, Measurement, Results, Status

SOURCE = "nvbandwidth"
_DEVICE_JSON = re.compile(r"^\s*(\d+):\s*(.+?)\s*\(([0-9A-Fa-f:.]+)\)(?::\s*\((.*)\))?\s*$")
_DEVICE_TEXT = re.compile(r"^Device (\d+):\s*(.+?)\s*\(([0-9A-Fa-f:.]+)\)\s*$")


def _cell(text: Any, origin: str, where: str) -> float | None:
    """A matrix cell: None for ``N/A`` (no such pair, or not run), else a finite figure >= 0."""
    if text is None or (isinstance(text, str) and (not text.strip() or text.strip().upper() == "N/A")):
        return None
    return figure(text.strip() if isinstance(text, str) else text, origin, where)


def _matrix_measurements(key: str, description: str, matrix: Any, origin: str) -> list[Measurement]:
    out = []
    for r, row in enumerate(items(matrix, origin, f"{key} bandwidth_matrix", MAX_DEVICES)):
        for c, cell in enumerate(items(row, origin, f"{key} bandwidth_matrix row {r}", MAX_DEVICES)):
            value = _cell(cell, origin, f"{key} cell (row {r}, column {c})")
            if value is not None:
                out.append(nvbandwidth_measurement(key, description, r, c, value))
    if not out:
        out.append(nvbandwidth_measurement(key, description, 0, 0, None, "waived", "every cell is N/A"))
    return out


def _text(value: Any, origin: str, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict | list):
        raise damaged(origin, where, f"must be a string, not {type(value).__name__}")
    return str(value)


def from_json(data: Any, origin: str = "nvbandwidth JSON") -> Results:
    """Results from nvbandwidth's ``-j`` document (already parsed)."""
    root = data.get("nvbandwidth") if isinstance(data, dict) else None
    if not isinstance(root, dict):
        raise ResultsFileError(f"{origin} is not nvbandwidth JSON (no 'nvbandwidth' object)")
    devices, hostname = [], None
    for entry in items(root.get("GPU Device list"), origin, "GPU Device list", MAX_DEVICES):
        m = _DEVICE_JSON.match(str(entry))
        if m:
            index = count(m.group(1), origin, "GPU Device list index", MAX_DEVICES - 1)
            devices.append(DeviceInfo(index=index, name=m.group(2), pci_bus_id=m.group(3)))
            hostname = hostname or m.group(4)
    run = run_info(SOURCE, origin=origin, tool_version=_text(root.get("version"), origin, "version"),
                   hostname=hostname, driver_version=_text(root.get("Driver Version"), origin, "Driver Version"),
                   cuda_runtime_version=cuda_version(root.get("CUDA Runtime Version")),
                   cuda_driver_version=cuda_version(root.get("CUDA Driver Version")))
    results = Results(run=run, devices=devices)
    for n, tc in enumerate(items(root.get("testcases"), origin, "testcases")):
        tc = obj(tc, origin, f"testcases[{n}]")
        key, status = str(tc.get("name", "?")), str(tc.get("status", "Passed"))
        desc = str(tc.get("bandwidth_description", ""))
        if status == "Passed":
            results.measurements += _matrix_measurements(key, desc, tc.get("bandwidth_matrix"), origin)
        else:
            kind: Status = "waived" if status == "Waived" else "error"
            msg = tc.get("error") or tc.get("message") or f"nvbandwidth status {status}"
            results.measurements.append(nvbandwidth_measurement(key, desc, 0, 0, None, kind, str(msg)))
    for what in ("warning", "error"):
        if root.get(what):
            (results.problems if what == "error" else results.notes).append(f"nvbandwidth {what}: {root[what]}")
    return finish(results)


def from_text(text: str, origin: str = "nvbandwidth output") -> Results:
    """Results from nvbandwidth's text output (what it prints without ``-j``)."""
    lines = text.splitlines()
    header: dict[str, str] = {}
    devices: list[DeviceInfo] = []
    hostname = None
    i = 0
    while i < len(lines) and not lines[i].startswith("Running "):
        s = lines[i].strip()
        dm = _DEVICE_TEXT.match(s)
        if dm:
            index = count(dm.group(1), origin, "Device line index", MAX_DEVICES - 1)
            devices.append(DeviceInfo(index=index, name=dm.group(2), pci_bus_id=dm.group(3)))
        elif ":" in s:
            k, _, v = s.partition(":")
            header[k.strip()] = v.strip()
        elif s and hostname is None and i > 0:
            hostname = s
        i += 1
    if "nvbandwidth Version" not in header and not any(x.startswith("Running ") for x in lines):
        raise ResultsFileError(f"{origin} is not nvbandwidth output (no version line, no 'Running' line)")
    run = run_info(SOURCE, origin=origin, tool_version=header.get("nvbandwidth Version"), hostname=hostname,
                   driver_version=header.get("Driver Version"),
                   cuda_runtime_version=cuda_version(header.get("CUDA Runtime Version")),
                   cuda_driver_version=cuda_version(header.get("CUDA Driver Version")))
    results = Results(run=run, devices=devices)
    while i < len(lines):
        m = re.match(r"^Running (\S+?)\.?\s*$", lines[i].strip())
        if not m:
            s = lines[i].strip()
            if s.startswith("NOTE:") or s.startswith("Performance can vary"):
                results.notes.append(s)
            i += 1
            continue
        key = m.group(1)
        block = []
        i += 1
        while i < len(lines) and not lines[i].startswith("Running "):
            block.append(lines[i])
            i += 1
        results.measurements += _text_block(key, block, origin)
    return finish(results)


def _text_block(key: str, block: list[str], origin: str) -> list[Measurement]:
    stripped = [b.strip() for b in block if b.strip()]
    for s in stripped:
        if s.lower().startswith("waived"):
            return [nvbandwidth_measurement(key, "", 0, 0, None, "waived", s)]
    desc = next((s for s in stripped if "bandwidth" in s or "latency" in s), "")
    matrix: list[list[Any]] = []
    columns: list[int] | None = None
    for s in stripped:
        if s == desc or s.startswith(("SUM ", "NOTE", "Performance", "COEFFICIENT")):
            continue
        toks = s.split()
        if columns is None and all(t.isdigit() for t in toks):
            if len(toks) > MAX_DEVICES:
                raise damaged(origin, f"{key} header", f"has {len(toks)} columns; at most {MAX_DEVICES} are read")
            columns = [count(t, origin, f"{key} header", MAX_DEVICES - 1) for t in toks]
            continue
        if columns is not None and toks and toks[0].isdigit():
            row = count(toks[0], origin, f"{key} row", MAX_DEVICES - 1)
            while len(matrix) <= row:
                matrix.append([])
            matrix[row] = toks[1:]
    if columns is None:
        reason = next((s for s in stripped if s != desc), "no matrix in the output")
        return [nvbandwidth_measurement(key, desc, 0, 0, None, "error", reason)]
    return _matrix_measurements(key, desc, matrix, origin)
