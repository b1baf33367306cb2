"""What every part of the judgement shares: the results, the thresholds, the checks made so far, and the
helpers that read a measurement's subject, band and link (``gpuprobe.qualify.judge`` puts the parts together)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpuprobe.qualify.expect import (
    Facts,
    gpu_index,
    link_text,
)
from gpuprobe.qualify.thresholds import Applied, Thresholds
from gpuprobe.results.model import DeviceInfo, Measurement, Results
from gpuprobe.results.qualification import Check, Verdict

PEER_WAIVED = "no peer access"
NEXT_DOWNTRAINED = ("reseat the GPU or its riser/cable, check the slot's PCIe setting in the BIOS, and compare "
                    "'lspci -vv' LnkSta with LnkCap (or 'nvidia-smi -q -d PCIE') while a copy runs")
NEXT_ACS = ("check ACS on the bridges ('lspci -vvv | grep -i ACSCtl': SrcValid+/ReqRedir+/CmpltRedir+ redirect "
            "peer traffic to the root complex) and IOMMU translation (boot with iommu=pt or intel_iommu=off, "
            "or disable ACS on the switch ports); in a VM ask the provider for GPUDirect P2P (a P2P clique); "
            "'nvidia-smi topo -p2p r' shows what the driver allows")
NEXT_NVLINK = ("check 'nvidia-smi nvlink -s' (link state and speed) and 'nvidia-smi nvlink -e' (errors); on "
               "NVSwitch systems check 'systemctl status nvidia-fabricmanager' and the fabric state in "
               "'nvidia-smi -q'; restart the fabric manager, then reseat or RMA the board if links stay down")
NEXT_HOST = ("pin the run to the GPU's NUMA node (numactl --cpunodebind=N --membind=N; 'nvidia-smi topo -m' "
             "shows the affinity), check IOMMU mode (iommu=pt), make sure no other job uses the GPU, re-run")
NEXT_RERUN = "re-run the probe; if it repeats, look for Xid errors in 'dmesg' and check ECC ('nvidia-smi -q -d ECC')"


def subject_of(m: Measurement) -> str:
    if m.probe == "all_reduce" or m.direction == "collective":
        return ",".join(f"gpu{r}" for r in (m.ranks or [])) or "all"
    if m.direction == "local":
        return m.src or "?"
    if m.src or m.dst:
        return f"{m.src or '?'}->{m.dst or '?'}"
    return "all"


def category_of(m: Measurement) -> str:
    if m.probe == "all_reduce":
        return "collective"
    return "latency" if m.unit in ("us", "ns") else "bandwidth"


class JudgeBase:
    """State and helpers of one judgement."""

    def __init__(self, results: Results, thresholds: Thresholds, environment: Mapping[str, str] | None) -> None:
        self.results = results
        self.t = thresholds
        self.env = dict(environment or {})
        self.facts = Facts.from_results(results)
        self.checks: list[Check] = []
        self.vm = bool(results.run.virtual_machine)
        self.pair_peer_missing: set[tuple[int, int]] = set()

    def gpu_name(self, *endpoints: str | None) -> str | None:
        for e in endpoints:
            d = self.facts.device(e)
            if d is not None:
                return d.name
        return next(iter(self.facts.devices.values())).name if self.facts.devices else None

    def band(self, test: str, *endpoints: str | None) -> Applied:
        return self.t.band(test, self.gpu_name(*endpoints))

    @staticmethod
    def grade(ratio: float, band: Applied) -> Verdict:
        if ratio < band.fail:
            return "FAIL"
        if ratio < band.warn:
            return "WARN"
        return "PASS"

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    def base(self, i: int, m: Measurement, verdict: Verdict, **kw: Any) -> Check:
        kw.setdefault("category", category_of(m))
        return Check(subject=subject_of(m), test=m.probe, verdict=verdict, unit=m.unit, src=m.src, dst=m.dst,
                     path_class=m.path_class, size_bytes=m.size_bytes, measurement_index=i, **kw)

    def link_state(self, d: DeviceInfo | None) -> str | None:
        """``Gen4 x16, max Gen5 x16`` when the link runs below its maximum, else None."""
        if d is None:
            return None
        gen_low = d.pcie_gen_current is not None and d.pcie_gen_max is not None and d.pcie_gen_current < d.pcie_gen_max
        width_low = (d.pcie_width_current is not None and d.pcie_width_max is not None
                     and d.pcie_width_current < d.pcie_width_max)
        if not (gen_low or width_low):
            return None
        return (f"{link_text(d.pcie_gen_current, d.pcie_width_current)}, below its maximum "
                f"{link_text(d.pcie_gen_max, d.pcie_width_max)}")

    def unidirectional_of(self, m: Measurement) -> Check | None:
        uni_key = m.probe.replace("_bidirectional", "")
        for c in self.checks:
            if c.test == uni_key and c.src == m.src and c.dst == m.dst and c.value is not None:
                return c
        return None

    def nvlink_down(self, *gpus: int) -> list[str]:
        out = []
        for g in gpus:
            d = self.facts.devices.get(g)
            if d and d.nvlinks:
                down = [link.link for link in d.nvlinks if not link.active]
                if down:
                    out.append(f"gpu{g}: {len(down)} of {len(d.nvlinks)} NVLinks down")
        return out

    def host_bandwidth(self, g: int) -> float | None:
        vals = [m.value for m in self.results.measurements
                if m.status == "ok" and m.value and m.unit == "GB/s" and m.host_memory == "pinned"
                and m.traffic == "unidirectional" and m.engine == "ce"
                and gpu_index(m.dst if m.direction == "h2d" else m.src) == g and m.direction in ("h2d", "d2h")]
        return max(vals) if vals else None
