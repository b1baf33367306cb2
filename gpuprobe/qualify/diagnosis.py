"""Why a figure fell short: the cause and the next step of a WARN or FAIL, from the link facts and the other
figures of the same run."""

from __future__ import annotations

from gpuprobe.qualify.expect import (
    Expectation,
    gpu_index,
)
from gpuprobe.qualify.judge_base import (
    NEXT_ACS,
    NEXT_DOWNTRAINED,
    NEXT_HOST,
    NEXT_NVLINK,
    JudgeBase,
)
from gpuprobe.results.model import Measurement, reverse_note
from gpuprobe.results.qualification import Check


class Diagnosis(JudgeBase):
    """Causes and next steps of the checks that fall short."""

    def diagnose(self, m: Measurement, value: float, exp: Expectation, check: Check) -> tuple[str, str]:
        if m.probe == "all_reduce":
            return self.diagnose_allreduce(m, exp)
        if exp.kind == "pcie" or (exp.kind == "latency" and m.direction in ("h2d", "d2h")):
            return self.diagnose_host(m, value, check)
        if exp.kind == "nvlink" or (exp.kind == "latency" and exp.link == "NVLink"):
            return self.diagnose_nvlink(m, value)
        if exp.kind in ("pcie_p2p", "latency") and m.direction == "d2d" and m.engine != "staged":
            sys_path = " The path crosses the CPU interconnect (SYS), which is slow for P2P." if (
                m.path_class == "SYS") else ""
            vm = " This is a VM: peer traffic may be translated by the hypervisor's IOMMU." if self.vm else ""
            return (f"peer traffic slowed on the PCIe path ({m.path_class or 'PCIe'}): ACS redirecting it to the "
                    f"root complex, IOMMU translation, or a shared switch.{sys_path}{vm}", NEXT_ACS)
        if exp.kind == "staged" or m.engine == "staged":
            return ("host-staged copy slower than expected: host memory bandwidth or NUMA placement of the "
                    "staging buffer, or a slow PCIe link of either GPU (see their host checks)", NEXT_HOST)
        if exp.kind == "hbm":
            d = self.facts.device(m.src)
            clocks = ""
            if d and d.mem_clock_mhz and d.mem_clock_max_mhz and d.mem_clock_mhz < d.mem_clock_max_mhz:
                clocks = f" (memory clock {d.mem_clock_mhz} of {d.mem_clock_max_mhz} MHz when read)"
            return (f"local HBM copy below the datasheet{clocks}: clocks throttled (power or thermal), another "
                    "process using the GPU, or pending row remapping",
                    "check throttle reasons and clocks ('nvidia-smi -q -d PERFORMANCE,CLOCK'), the power limit, "
                    "row remapping ('nvidia-smi -q -d ROW_REMAPPER'); make the GPU idle and re-run")
        return ("below the expectation", "re-run; compare with the other GPUs and pairs")

    def diagnose_host(self, m: Measurement, value: float, check: Check) -> tuple[str, str]:
        gpu = m.dst if m.direction == "h2d" else m.src
        d = self.facts.device(gpu)
        state = self.link_state(d)
        replays = f"; the PCIe replay counter is {d.pcie_replay_counter} (signal integrity)" if (
            d and d.pcie_replay_counter) else ""
        if state:
            return (f"downtrained slot: the link of {gpu} runs at {state}, so the copy cannot reach the "
                    f"expectation of the full link{replays}", NEXT_DOWNTRAINED)
        if m.traffic == "bidirectional":
            rate = m.reverse_rate_gbps()
            reverse = reverse_note(rate) if rate is not None else None
            uni = self.unidirectional_of(m)
            if uni is not None and uni.verdict == "PASS":
                check.detail = reverse
                return (f"reverse-traffic asymmetry: this direction reaches {uni.value:.1f} GB/s alone "
                        f"({uni.ratio:.0%} of its expectation) but slows while the reverse copy runs"
                        f"{' (' + reverse + ')' if reverse else ''}; the host bridge or IOMMU arbitrates the two "
                        "directions unevenly (nvbandwidth #11, #53)",
                        "compare the sum of both directions with the unidirectional figures; check IOMMU/ATS "
                        "settings and the NUMA placement of the pinned buffers; a known trait of many hosts")
        if self.vm:
            return ("virtual machine: host-side NUMA placement of the guest's memory or IOMMU translation slows "
                    f"host<->GPU copies{replays}",
                    "compare on bare metal or ask the provider how the GPU is passed through (IOMMU, NUMA node "
                    "of the guest memory); " + NEXT_HOST)
        return ("host<->GPU copies slower than the link: NUMA-remote pinned memory, IOMMU translation, a PCIe "
                f"switch shared with other devices, or the GPU busy or throttled{replays}", NEXT_HOST)

    def diagnose_nvlink(self, m: Measurement, value: float) -> tuple[str, str]:
        a, b = gpu_index(m.src), gpu_index(m.dst)
        down = self.nvlink_down(*(g for g in (a, b) if g is not None))
        pcie = None
        if a is not None and b is not None:
            lines = [self.facts.pcie(self.facts.devices.get(g)) for g in (a, b)]
            known = [x for x in lines if x]
            if len(known) == len(lines):
                pcie = min(x[0] for x in known)
        at_pcie = m.unit == "GB/s" and pcie is not None and value <= pcie * 1.05
        if at_pcie or down:
            why = (f"the figure ({value:.1f} GB/s) is at PCIe speed (link {pcie:g} GB/s) on an "
                   f"{m.path_class or 'NV#'} pair" if at_pcie else f"{'; '.join(down)}")
            return (f"NVLink down or unused: {why}; NVLinks down, the fabric manager not running or the NVSwitch "
                    "fabric not trained (the traffic falls back to PCIe or fewer links)", NEXT_NVLINK)
        return ("NVLink slower than its links: links degraded (CRC/replay errors), clocks throttled, or another "
                "job using the GPUs", NEXT_NVLINK + "; check throttle reasons ('nvidia-smi -q -d PERFORMANCE')")

    def diagnose_allreduce(self, m: Measurement, exp: Expectation) -> tuple[str, str]:
        env = {k: v for k, v in self.env.items() if k in ("NCCL_P2P_DISABLE", "NCCL_P2P_LEVEL", "NCCL_ALGO",
                                                             "NCCL_PROTO", "NCCL_SHM_DISABLE", "NCCL_NVLS_ENABLE")}
        env_text = (" NCCL settings in the environment: " + ", ".join(f"{k}={v}" for k, v in sorted(env.items()))
                    + ".") if env else ""
        ranks = m.ranks or []
        peer = [c for c in self.checks if c.category == "bandwidth" and c.src and c.dst
                and gpu_index(c.src) in ranks and gpu_index(c.dst) in ranks and c.verdict in ("WARN", "FAIL")]
        if peer:
            return (f"the links of the group are slow too ({len(peer)} peer-copy checks below their band): the "
                    f"all-reduce follows them.{env_text}", "fix the peer links first (see those checks)")
        if exp.link and exp.link.startswith("NV"):
            return ("NCCL not using NVLink at full rate although the peer copies are fine: P2P disabled by the "
                    "environment (NCCL_P2P_DISABLE=1, NCCL_P2P_LEVEL), a forced NCCL_ALGO/NCCL_PROTO, or NCCL's "
                    f"topology detection (e.g. in a container without /sys).{env_text}",
                    "unset NCCL_* variables and re-run; NCCL_DEBUG=INFO shows the transport each channel uses "
                    "(P2P/CUMEM over NVLink versus SHM through the host)")
        return ("all-reduce over PCIe slower than expected: P2P unavailable so NCCL goes through host memory, "
                f"ACS/IOMMU on the path, or P2P disabled by the environment (NCCL_P2P_DISABLE).{env_text}", NEXT_ACS)
