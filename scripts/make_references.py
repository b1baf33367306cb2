"""Rebuild gpuprobe/data/references/*.json from the real captures in tests/data (run from the repository root).

Each figure keeps its own source: nvbandwidth's figure where nvbandwidth has the test, gpuprobe's own run of
the same kind of machine for the tests nvbandwidth lacks. The published references (8-GPU systems) are written
by hand in gpuprobe/data/references/ and listed in docs/references.md; this script does not touch them.
"""

from __future__ import annotations

import json
from pathlib import Path

from gpuprobe.importers import import_file
from gpuprobe.results.io import load_results

OUT = Path("gpuprobe/data/references")
MACHINES = [
    {
        "id": "h100-1gpu-pcie5-vm",
        "title": "1 × NVIDIA H100 80GB HBM3, PCIe Gen5 x16 to the host (virtual machine)",
        "gpu": "NVIDIA H100 80GB HBM3",
        "nvbandwidth": "tests/data/nvbandwidth/nvbandwidth-h100-2026-11-25.txt",
        "nvbandwidth_source": "nvbandwidth v0.8, default options, one NVIDIA H100 80GB HBM3 (PCIe Gen5 x16, virtual "
                              "machine, driver 580.159.04, CUDA 13.0), 2026-11-25; "
                              "tests/data/nvbandwidth/nvbandwidth-h100-2026-11-25.txt",
        "probe": "tests/data/h100-probe-2026-11-25.json",
        "probe_source": "gpuprobe probe (default options) on the same kind of machine, 2026-11-25; "
                        "tests/data/h100-probe-2026-11-25.json",
    },
    {
        "id": "h200-1gpu-pcie5-vm",
        "title": "1 × NVIDIA H200, PCIe Gen5 x16 to the host (virtual machine)",
        "gpu": "NVIDIA H200",
        "nvbandwidth": "tests/data/nvbandwidth/nvbandwidth-h200-2026-12-01.txt",
        "nvbandwidth_source": "nvbandwidth v0.8, default options, one NVIDIA H200 (PCIe Gen5 x16, virtual machine, "
                              "driver 580.159.04, CUDA 13.0), 2026-12-01; "
                              "tests/data/nvbandwidth/nvbandwidth-h200-2026-12-01.txt",
        "probe": "tests/data/vllm-h200-2026-12-01/probe-machine3.json",
        "probe_source": "gpuprobe probe (default options) on the same kind of machine, 2026-12-01; "
                        "tests/data/vllm-h200-2026-12-01/probe-machine3.json",
    },
]
SKIP = {"all_reduce"}  # one rank: busbw is 0 by definition, nothing to compare with


def _figures(path: str, source: str, loader) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for m in loader(path).measurements:
        if m.status != "ok" or m.value is None or m.probe in SKIP or "pageable" in m.probe:
            continue
        better = max if m.unit == "GB/s" else min
        old = out.get(m.probe)
        value = m.value if old is None else better(old["value"], m.value)
        out[m.probe] = {"value": round(value, 4), "unit": m.unit, "source": source}
    return out


def main() -> None:
    for mach in MACHINES:
        figures = _figures(mach["probe"], mach["probe_source"], load_results)
        figures.update(_figures(mach["nvbandwidth"], mach["nvbandwidth_source"], import_file))
        doc = {
            "kind": "gpuprobe.reference", "schema_version": 1, "id": mach["id"], "title": mach["title"],
            "origin": "capture",
            "system": {"gpu": mach["gpu"], "gpu_count": 1, "pair_classes": [], "host_link": "PCIe Gen5 x16"},
            "source": "real captures: " + mach["nvbandwidth_source"].split(";")[0] + "; " +
                      mach["probe_source"].split(";")[0],
            "figures": dict(sorted(figures.items())),
        }
        path = OUT / f"{mach['id']}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"{path}: {len(figures)} figures")


if __name__ == "__main__":
    main()
