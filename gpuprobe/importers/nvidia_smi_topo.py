"""``nvidia-smi topo -m`` text -> Results with devices and a Topology (no measurements).

The matrix gives one path class per GPU pair in the same vocabulary gpuprobe uses (NV#, PIX, PXB, PHB, NODE,
SYS); ``NV#`` also gives the NVLink count. The ``CPU Affinity`` and ``NUMA Affinity`` columns become each GPU's
``cpu_affinity`` and ``numa_node``. NIC rows and columns are listed in a note. Columns are separated by tabs
(what nvidia-smi prints) or by two or more spaces (what copies of it on web pages usually have).
"""

from __future__ import annotations

import re

from gpuprobe.errors import ResultsFileError
from gpuprobe.importers.common import damaged, finish, run_info
from gpuprobe.results.model import MAX_CPUS, MAX_DEVICES, DeviceInfo, GpuPair, Results, Topology

SOURCE = "nvidia-smi topo -m"
_SPLIT = re.compile(r"\t| {2,}")
_GPU = re.compile(r"^GPU(\d+)$")
_EXTRA = ("CPU Affinity", "NUMA Affinity", "GPU NUMA ID")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in _SPLIT.split(line) if c.strip()]


def parse_cpu_list(text: str) -> list[int] | None:
    """``0-11,24-35`` -> [0, ..., 11, 24, ..., 35]; None for N/A or anything else.

    Raises ValueError for CPU numbers of ``MAX_CPUS`` or more (no host has them; the list would not fit)."""
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not m:
            return None
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi >= MAX_CPUS or len(out) + hi - lo >= MAX_CPUS:
            raise ValueError(f"names CPUs up to {hi}; CPU numbers are below {MAX_CPUS}")
        out.extend(range(lo, hi + 1))
    return out


def from_text(text: str, origin: str = "nvidia-smi topo -m output") -> Results:
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if _cells(ln)[:1] == ["GPU0"] and _cells(ln)[1:2] != ["X"]), None)
    if start is None:
        raise ResultsFileError(f"{origin} is not 'nvidia-smi topo -m' output (no header line with GPU0)")
    header = _cells(lines[start])
    if len(header) > 2 * MAX_DEVICES:
        raise damaged(origin, "the header", f"has {len(header)} columns; at most {2 * MAX_DEVICES} are read")
    ndev = next((i for i, h in enumerate(header) if h in _EXTRA), len(header))
    columns, extras = header[:ndev], header[ndev:]
    gpus: dict[int, DeviceInfo] = {}
    matrix: dict[int, dict[str, str]] = {}
    nics = [c for c in columns if not _GPU.match(c)]
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        if line.strip().startswith("Legend"):
            break
        cells = _cells(line)
        m = _GPU.match(cells[0]) if cells else None
        if not m:
            continue
        idx = int(m.group(1)) if len(m.group(1)) <= 6 else MAX_DEVICES
        if idx >= MAX_DEVICES:
            raise damaged(origin, f"row {cells[0]}", f"has a GPU index above {MAX_DEVICES - 1}")
        links = cells[1:1 + ndev]
        if len(links) < ndev:
            raise ResultsFileError(f"{origin}: row {cells[0]} has {len(links)} cells, the header has {ndev}")
        rest = dict(zip(extras, cells[1 + ndev:], strict=False))
        numa = rest.get("NUMA Affinity", "")
        try:
            affinity = parse_cpu_list(rest.get("CPU Affinity", ""))
        except ValueError as exc:
            raise damaged(origin, f"row {cells[0]} CPU Affinity", str(exc)) from None
        gpus[idx] = DeviceInfo(index=idx, name="unknown (not in nvidia-smi topo -m)", cpu_affinity=affinity,
                               numa_node=int(numa) if numa.isdigit() and len(numa) <= 6 else None)
        matrix[idx] = dict(zip(columns, links, strict=True))
    if not gpus:
        raise ResultsFileError(f"{origin}: no GPU rows under the header")
    pairs = []
    for a in sorted(gpus):
        for b in sorted(gpus):
            if b <= a:
                continue
            cls = matrix[a].get(f"GPU{b}", "unknown")
            nv = re.fullmatch(r"NV(\d+)", cls)
            pairs.append(GpuPair(a=a, b=b, path_class=cls, nvlink_count=int(nv.group(1)) if nv else 0))
    results = Results(run=run_info("nvidia-smi", origin=origin, tool_version=None),
                      devices=[gpus[i] for i in sorted(gpus)],
                      topology=Topology(gpu_count=len(gpus), pairs=pairs, source=SOURCE))
    results.notes.append("GPU names, PCIe links and P2P status are not in 'nvidia-smi topo -m'; only path classes")
    if nics:
        results.notes.append("NICs in the matrix (not imported): " + ", ".join(nics))
    return finish(results)
