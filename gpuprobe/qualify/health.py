"""Link and device health from the facts NVML reported: PCIe link state and replays, NVLinks, ECC, persistence,
clocks, and peer access per pair."""

from __future__ import annotations

from typing import Any

from gpuprobe.qualify.expect import (
    link_text,
    pcie_line_gbps,
)
from gpuprobe.qualify.judge_base import (
    NEXT_ACS,
    NEXT_DOWNTRAINED,
    NEXT_NVLINK,
    JudgeBase,
)
from gpuprobe.results.model import DeviceInfo, GpuPair
from gpuprobe.results.qualification import Check, Verdict


class Health(JudgeBase):
    """One check per health fact of each GPU and pair."""

    def health(self) -> None:
        for g, d in sorted(self.facts.devices.items()):
            self.pcie_link(g, d)
            self.replays(g, d)
            self.nvlinks(g, d)
            self.ecc(g, d)
            self.persistence(g, d)
            self.clocks(g, d)
        for _key, pair in sorted(self.facts.pairs.items()):
            self.peer_access(pair)

    def hcheck(self, g: int, test: str, verdict: Verdict, **kw: Any) -> Check:
        return self.add(Check(subject=f"gpu{g}", test=test, verdict=verdict, category="health", **kw))

    def pcie_link(self, g: int, d: DeviceInfo) -> None:
        if d.pcie_gen_current is None and d.pcie_width_current is None:
            return
        cur = pcie_line_gbps(d.pcie_gen_current, d.pcie_width_current)
        mx = pcie_line_gbps(d.pcie_gen_max if d.pcie_gen_max is not None else d.pcie_gen_current,
                            d.pcie_width_max if d.pcie_width_max is not None else d.pcie_width_current)
        detail = f"{link_text(d.pcie_gen_current, d.pcie_width_current)} (max " \
                 f"{link_text(d.pcie_gen_max, d.pcie_width_max)})"
        base = dict(value=cur, unit="GB/s", expected=mx, detail=detail,
                    ratio=round(cur / mx, 4) if cur and mx else None,
                    expectation_basis="line rate per direction at the link's maximum generation and width")
        state = self.link_state(d)
        if state is None:
            self.hcheck(g, "pcie_link", "PASS", **base)
            return
        measured = self.host_bandwidth(g)
        if measured is not None and cur is not None and measured > cur * 1.02:
            self.hcheck(g, "pcie_link", "INFO", **base,
                        cause=f"NVML read {state} before the probes ran, but the copies reached {measured:.1f} "
                              f"GB/s, more than that link can carry ({cur:g} GB/s): the link was downclocked at "
                              "idle (power saving) and trained up under load")
            return
        band = self.band("pcie_link", f"gpu{g}")
        verdict: Verdict = "WARN"
        if measured is not None and mx:
            host = [c.ratio for c in self.checks if c.category == "bandwidth" and c.expected and c.ratio is not None
                    and (c.dst == f"gpu{g}" or c.src == f"gpu{g}") and ("host" in (c.src, c.dst))]
            if host and min(host) < band.fail:
                verdict = "FAIL"
        confirm = (f"; the host copies confirm it ({measured:.1f} GB/s at most)" if verdict == "FAIL" else
                   "; an idle GPU may downclock its link, so re-read it under load" if measured is None else "")
        self.hcheck(g, "pcie_link", verdict, **base, cause=f"downtrained slot: the link runs at {state}{confirm}",
                    next_step=NEXT_DOWNTRAINED)

    def replays(self, g: int, d: DeviceInfo) -> None:
        n = d.pcie_replay_counter
        if n is None:
            return
        limit = self.t.replay_limit(d.name)
        base = dict(value=float(n), unit="count", expected=0.0,
                    expectation_basis=f"0 replays; FAIL above {limit} (DCGM's max_pcie_replays is 80)")
        if n == 0:
            self.hcheck(g, "pcie_replay", "PASS", **base)
            return
        self.hcheck(g, "pcie_replay", "FAIL" if n > limit else "WARN", **base,
                    cause=f"{n} PCIe replays since the driver loaded: link-level retransmissions from signal "
                          "integrity problems (riser, cable, slot, retimer)",
                    next_step="watch the counter under load ('nvidia-smi -q -d PCIE'), check AER errors in "
                              "'dmesg'; reseat the GPU or riser, try another slot")

    def nvlinks(self, g: int, d: DeviceInfo) -> None:
        links = d.nvlinks
        required = self.t.nvlinks_required(d.name)
        nv_pairs = [p for p in self.facts.pairs.values() if g in (p.a, p.b) and p.path_class.startswith("NV")]
        if not links and not required:
            return
        active = sum(1 for link in links if link.active)
        down = len(links) - active
        others = [sum(1 for link in o.nvlinks if link.active) for i, o in self.facts.devices.items() if i != g]
        peak = max(others, default=0)
        base = dict(value=float(active), unit="links", expected=float(required or max(peak, active, len(links))),
                    detail=f"{active} of {len(links)} NVLinks active")
        if required and active < required:
            cause = f"{active} NVLinks active, {required} required by the thresholds file"
        elif down and nv_pairs:
            cause = (f"{down} of {len(links)} NVLinks down on a GPU with NVLink peers "
                     f"({', '.join(f'gpu{p.a}-gpu{p.b} {p.path_class}' for p in nv_pairs[:3])}"
                     f"{', ...' if len(nv_pairs) > 3 else ''})")
        elif active < peak:
            cause = f"{active} NVLinks active while other GPUs have {peak}"
        elif down and not active and any(o for o in others):
            cause = f"no NVLink active while other GPUs have {peak}"
        else:
            self.hcheck(g, "nvlink", "PASS" if active else "INFO", **base,
                        cause=None if active else "no NVLink active (a PCIe GPU without bridges)")
            return
        self.hcheck(g, "nvlink", "FAIL", **base, cause=f"NVLink down: {cause}; the fabric manager not running, "
                    "the NVSwitch fabric not trained, or a failed link", next_step=NEXT_NVLINK)

    def ecc(self, g: int, d: DeviceInfo) -> None:
        if d.ecc_errors_uncorrected:
            self.hcheck(g, "ecc", "FAIL", value=float(d.ecc_errors_uncorrected), unit="count", expected=0.0,
                        expectation_basis="0 uncorrected ECC errors (volatile count)",
                        cause=f"{d.ecc_errors_uncorrected} uncorrected ECC errors: failing memory or a pending "
                              "row remap",
                        next_step="check 'nvidia-smi -q -d ECC,ROW_REMAPPER,PAGE_RETIREMENT' and Xid errors in "
                                  "'dmesg'; reset the GPU to apply remaps; RMA if errors return")
        elif d.ecc_enabled is False:
            self.hcheck(g, "ecc", "WARN", cause="ECC is disabled: memory errors go undetected",
                        next_step="enable it ('nvidia-smi -e 1') and reboot, unless disabled on purpose")
        elif d.ecc_enabled is not None or d.ecc_errors_uncorrected is not None:
            self.hcheck(g, "ecc", "PASS", value=float(d.ecc_errors_uncorrected or 0), unit="count", expected=0.0,
                        expectation_basis="0 uncorrected ECC errors (volatile count)")

    def persistence(self, g: int, d: DeviceInfo) -> None:
        if d.persistence_mode is None:
            return
        if d.persistence_mode:
            self.hcheck(g, "persistence_mode", "PASS")
        else:
            self.hcheck(g, "persistence_mode", "WARN",
                        cause="persistence mode off: the driver tears the GPU state down between jobs (slow "
                              "starts, clocks and link state reset)",
                        next_step="run nvidia-persistenced (or 'nvidia-smi -pm 1')")

    def clocks(self, g: int, d: DeviceInfo) -> None:
        if d.sm_clock_mhz is None or d.sm_clock_max_mhz is None:
            return
        note = None
        if d.sm_clock_mhz < 0.5 * d.sm_clock_max_mhz:
            note = ("read before the probes, when an idle GPU runs slower; check throttle reasons under load "
                    "('nvidia-smi -q -d PERFORMANCE') if figures are low")
        self.hcheck(g, "clocks", "INFO", value=float(d.sm_clock_mhz), unit="MHz", expected=float(d.sm_clock_max_mhz),
                    detail=f"SM {d.sm_clock_mhz}/{d.sm_clock_max_mhz} MHz, memory {d.mem_clock_mhz}/"
                           f"{d.mem_clock_max_mhz} MHz (recorded, not judged)", cause=note)

    @staticmethod
    def peer_expected(pair: GpuPair | None) -> bool:
        if pair is None:
            return False
        nvml_ok = pair.p2p_nvml.get("read") == "ok" or pair.p2p_nvml.get("write") == "ok"
        return nvml_ok or pair.path_class.startswith("NV")

    def peer_access(self, pair: GpuPair) -> None:
        subject = f"gpu{pair.a},gpu{pair.b}"
        expected = self.peer_expected(pair)
        missing = pair.cuda_peer_access is False or (pair.a, pair.b) in self.pair_peer_missing
        nvml = ", ".join(f"{k} {v}" for k, v in sorted(pair.p2p_nvml.items())) or "not reported"
        base: dict[str, Any] = dict(
            subject=subject, test="peer_access", category="health", path_class=pair.path_class, src=f"gpu{pair.a}",
            dst=f"gpu{pair.b}", detail=f"NVML P2P: {nvml}; CUDA peer access: {pair.cuda_peer_access}")
        if expected and missing:
            vm = "this is a VM without a GPUDirect P2P clique, or " if self.vm else "a VM without P2P support, "
            self.add(Check(verdict="FAIL", **base,
                           cause=f"peer access missing: the topology says it should exist ({pair.path_class}, NVML "
                                 f"P2P {pair.p2p_nvml.get('read', '?')}) but CUDA cannot enable it: {vm}ACS or "
                                 "IOMMU on the PCIe path blocking peer requests, or P2P disabled by the driver",
                           next_step=NEXT_ACS))
            return
        regkey = [v for v in pair.p2p_nvml.values() if "regkey" in v]
        if regkey:
            self.add(Check(verdict="WARN", **base, cause="P2P disabled by a driver registry key (NVreg "
                           "RegistryDwords, e.g. RMForceP2PType / RmP2PDisable): copies go through the host",
                           next_step="remove the key from the nvidia module options and reload the driver"))
            return
        if not expected and pair.p2p_nvml:
            self.add(Check(verdict="INFO", **base, cause=f"no peer-to-peer on this path (NVML: {nvml}); copies "
                           "between these GPUs are staged through the host and judged as such"))
            return
        if expected and pair.cuda_peer_access:
            self.add(Check(verdict="PASS", **base))
