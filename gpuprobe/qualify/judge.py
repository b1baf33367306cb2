"""Judge a results file: every measurement against its expectation, every link-health fact, outliers.

Rules (the band comes from ``Thresholds``: defaults WARN below 0.85, FAIL below 0.75 of the expectation):

- measured figure: ratio = measured / expected (bandwidth) or expected / measured (latency);
  PASS at or above the warn ratio, WARN below it, FAIL below the fail ratio. A bidirectional figure whose
  link reaches its rate one way (the unidirectional figure of the same direction passes) is at most WARN:
  the link works, the reverse traffic slows this direction down.
- ``mismatch`` (copied data did not verify) and ``error`` (the probe failed): FAIL.
- ``waived``: SKIP with the probe's reason, except peer copies waived for lack of peer access where NVML
  says P2P is possible (that is a ``peer_access`` FAIL for the pair).
- no expectation (pageable copies, unknown GPU, ...): INFO, recorded with the reason.
- link health per GPU: PCIe below its maximum generation or width (WARN; FAIL when the measured host
  bandwidth confirms it; INFO when the measured bandwidth exceeds what the reported link could carry, i.e.
  the link was only downclocked at idle when NVML read it), replay counter (WARN above 0, FAIL above
  ``replay_fail``), NVLinks down (FAIL on a GPU with NV# pairs or fewer links than the other GPUs),
  uncorrected ECC errors (FAIL), ECC off (WARN), persistence mode off (WARN), clocks (INFO only: they are
  read before the probes run, when an idle GPU may run slower).
- peer access per pair: CUDA refuses peer access (or the peer probes were waived for it) where NVML says P2P
  is ok or the pair is NV#: FAIL; P2P disabled by a registry key: WARN; not supported on the path: INFO.
- outliers: a GPU or pair below ``outlier_below_median`` of the median of the same test over at least three
  subjects; ranked, furthest below first; a PASS check that is an outlier becomes WARN.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from gpuprobe import __version__
from gpuprobe.qualify.expect import (
    Expectation,
    Facts,
    NoExpectation,
    allreduce_expectation,
    expectation,
    gpu_index,
    link_text,
    pcie_line_gbps,
)
from gpuprobe.qualify.thresholds import Applied, Thresholds
from gpuprobe.results.model import CUDA_SKIPPED, DeviceInfo, GpuPair, Measurement, Results, now_utc
from gpuprobe.results.qualification import Check, Outlier, Qualification, Verdict, exit_code, worst

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


def _subject(m: Measurement) -> str:
    if m.probe == "all_reduce" or m.direction == "collective":
        return ",".join(f"gpu{r}" for r in (m.ranks or [])) or "all"
    if m.direction == "local":
        return m.src or "?"
    if m.src or m.dst:
        return f"{m.src or '?'}->{m.dst or '?'}"
    return "all"


def _category(m: Measurement) -> str:
    if m.probe == "all_reduce":
        return "collective"
    return "latency" if m.unit in ("us", "ns") else "bandwidth"


class _Judge:
    def __init__(self, results: Results, thresholds: Thresholds, environment: Mapping[str, str] | None) -> None:
        self.results = results
        self.t = thresholds
        self.env = dict(environment or {})
        self.facts = Facts.from_results(results)
        self.checks: list[Check] = []
        self.vm = bool(results.run.virtual_machine)
        self.pair_peer_missing: set[tuple[int, int]] = set()

    # -- helpers ------------------------------------------------------------------------------------------
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

    # -- measurements ---------------------------------------------------------------------------------------
    def measurements(self) -> None:
        groups: dict[tuple[int, ...], list[tuple[int, Measurement]]] = {}
        for i, m in enumerate(self.results.measurements):
            if m.probe == "all_reduce" and m.status == "ok":
                groups.setdefault(tuple(m.ranks or []), []).append((i, m))
                continue
            self.measurement(i, m)
        for members in groups.values():
            self.allreduce(members)

    def base(self, i: int, m: Measurement, verdict: Verdict, **kw: Any) -> Check:
        kw.setdefault("category", _category(m))
        return Check(subject=_subject(m), test=m.probe, verdict=verdict, unit=m.unit, src=m.src, dst=m.dst,
                     path_class=m.path_class, size_bytes=m.size_bytes, measurement_index=i, **kw)

    def measurement(self, i: int, m: Measurement) -> None:
        if m.status == "waived":
            reason = m.reason or "waived"
            if PEER_WAIVED in reason:
                a, b = gpu_index(m.src), gpu_index(m.dst)
                if a is not None and b is not None and self.peer_expected(self.facts.pair(a, b)):
                    self.pair_peer_missing.add((min(a, b), max(a, b)))
                    reason += " although NVML reports P2P possible: see the peer_access check of this pair"
            self.add(self.base(i, m, "SKIP", cause=reason))
            return
        if m.status == "error":
            self.add(self.base(i, m, "FAIL", category="run", cause=f"the probe failed: {m.reason}",
                               next_step="re-run with GPUPROBE_DEBUG=1 to see the traceback; fix the setup "
                                         "(packages, GPU busy or in a bad state) and probe again"))
            return
        value = m.value
        if m.status == "mismatch":
            self.add(self.base(i, m, "FAIL", category="data", value=value,
                               cause=f"data corruption: the copied data did not verify ({m.reason or 'mismatch'})",
                               next_step=NEXT_RERUN + "; on switched PCIe a corrupting P2P path (ACS/IOMMU, "
                                         "broken P2P) is a known cause: compare the staged copy of the same pair"))
            return
        if value is None:
            self.add(self.base(i, m, "SKIP", cause=m.reason or "no figure recorded"))
            return
        band = self.band(m.probe, m.dst, m.src)
        if band.skip:
            self.add(self.base(i, m, "SKIP", value=value, cause=f"not judged ({band.origin} says skip)"))
            return
        exp = expectation(m, self.facts)
        self.judge_value(i, m, value, exp, band)

    def judge_value(self, i: int, m: Measurement, value: float, exp: Expectation | NoExpectation,
                    band: Applied, **extra: Any) -> Check:
        higher = exp.higher_is_better if isinstance(exp, Expectation) else m.unit not in ("us", "ns")
        if band.expected is not None:
            derived = f" (derived: {exp.value:.4g} {exp.unit}, {exp.basis})" if isinstance(exp, Expectation) else ""
            exp = Expectation(band.expected, m.unit, f"set by the thresholds file ({band.origin}){derived}",
                              higher_is_better=higher, kind=exp.kind if isinstance(exp, Expectation) else "set")
        if isinstance(exp, NoExpectation):
            return self.add(self.base(i, m, "INFO", value=value, cause=exp.reason, higher_is_better=higher, **extra))
        ratio = value / exp.value if exp.higher_is_better else exp.value / value if value > 0 else 0.0
        verdict = self.grade(ratio, band)
        check = self.base(i, m, verdict, value=value, expected=exp.value, ratio=round(ratio, 4),
                          expectation_basis=exp.basis, warn_below=band.warn, fail_below=band.fail,
                          higher_is_better=exp.higher_is_better, **extra)
        if verdict != "PASS":
            check.cause, check.next_step = self.diagnose(m, value, exp, check)
            if verdict == "FAIL" and check.cause.startswith("reverse-traffic asymmetry"):
                check.verdict = "WARN"  # the link reaches its rate one way: not a link failure
        return self.add(check)

    # -- diagnosis --------------------------------------------------------------------------------------------
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
            reverse = next((n for n in m.notes if n.startswith("reverse direction")), None)
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

    def diagnose_nvlink(self, m: Measurement, value: float) -> tuple[str, str]:
        a, b = gpu_index(m.src), gpu_index(m.dst)
        down = self.nvlink_down(*(g for g in (a, b) if g is not None))
        pcie = None
        if a is not None and b is not None:
            lines = [self.facts.pcie(self.facts.devices.get(g)) for g in (a, b)]
            if all(lines):
                pcie = min(x[0] for x in lines)  # type: ignore[index]
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

    # -- all-reduce -----------------------------------------------------------------------------------------
    def allreduce(self, members: list[tuple[int, Measurement]]) -> None:
        i, best = max(members, key=lambda im: im[1].busbw_gbps or 0.0)
        exp = allreduce_expectation(best, self.facts)
        subject = _subject(best)
        if isinstance(exp, NoExpectation):
            self.add(Check(subject=subject, test="all_reduce", verdict="SKIP", category="collective",
                           cause=exp.reason, measurement_index=i, size_bytes=best.size_bytes, unit="GB/s",
                           path_class=best.path_class))
            return
        if best.busbw_gbps is None:
            self.add(Check(subject=subject, test="all_reduce", verdict="SKIP", category="collective",
                           cause="no busbw recorded", measurement_index=i))
            return
        band = self.band("all_reduce", f"gpu{(best.ranks or [0])[0]}")
        if band.skip:
            self.add(Check(subject=subject, test="all_reduce", verdict="SKIP", category="collective",
                           value=best.busbw_gbps, unit="GB/s", cause=f"not judged ({band.origin} says skip)"))
            return
        shadow = Measurement(probe="all_reduce", status="ok", unit="GB/s", direction="collective", engine=best.engine,
                             ranks=best.ranks, size_bytes=best.size_bytes, path_class=best.path_class,
                             notes=best.notes)
        check = self.judge_value(i, shadow, best.busbw_gbps, exp, band,
                                 detail=f"peak busbw over {len(members)} message sizes, at "
                                        f"{best.size_bytes or 0} B per rank ({best.value:.1f} µs)")
        check.test = "all_reduce"

    # -- health ----------------------------------------------------------------------------------------------
    def host_bandwidth(self, g: int) -> float | None:
        vals = [m.value for m in self.results.measurements
                if m.status == "ok" and m.value and m.unit == "GB/s" and m.host_memory == "pinned"
                and m.traffic == "unidirectional" and m.engine == "ce"
                and gpu_index(m.dst if m.direction == "h2d" else m.src) == g and m.direction in ("h2d", "d2h")]
        return max(vals) if vals else None

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

    # -- run -------------------------------------------------------------------------------------------------
    def run_checks(self) -> None:
        r = self.results
        if r.status in ("interrupted", "running"):
            self.add(Check(subject="run", test="run", verdict="WARN", category="run",
                           cause=f"the run is {r.status}: not every probe ran", next_step="run the probes again"))
        cuda = r.cuda_skip_reason()
        for p in r.problems:
            if cuda is not None and p == f"{CUDA_SKIPPED}{cuda}":
                continue
            self.add(Check(subject="run", test="run", verdict="WARN", category="run", cause=p,
                           next_step="fix the problem and run the probes again"))
        if not r.devices:
            self.add(Check(subject="run", test="run", verdict="WARN", category="run",
                           cause="no device facts (NVML) in the results file: links cannot be checked and "
                                 "most expectations cannot be derived",
                           next_step="run on a machine where NVML works (the NVIDIA driver is loaded)"))
        disable = self.env.get("NCCL_P2P_DISABLE", "")
        if disable not in ("", "0") and any(len(m.ranks or []) > 1 for m in r.measurements if m.probe == "all_reduce"):
            self.add(Check(subject="run", test="environment", verdict="WARN", category="run",
                           cause=f"NCCL_P2P_DISABLE={disable} in the environment: the all-reduce ran without "
                                 "peer-to-peer (through host memory)",
                           next_step="unset NCCL_P2P_DISABLE to qualify the links NCCL will use"))

    # -- outliers --------------------------------------------------------------------------------------------
    def outliers(self) -> list[Outlier]:
        by_test: dict[str, list[Check]] = {}
        for c in self.checks:
            if c.category in ("bandwidth", "latency", "collective") and c.value is not None and c.value > 0 and (
                    c.verdict in ("PASS", "WARN", "FAIL", "INFO")) and c.measurement_index is not None:
                by_test.setdefault(c.test, []).append(c)
        found: list[tuple[float, Check, float, int]] = []
        for checks in by_test.values():
            if len(checks) < 3:
                continue
            values = [(c, c.value) for c in checks if c.value is not None]
            med = statistics.median(v for _, v in values)
            for c, v in values:
                rel = v / med if c.higher_is_better else med / v
                if rel < self.t.outlier_below_median:
                    found.append((rel, c, med, len(checks)))
        found.sort(key=lambda x: x[0])
        out = []
        for rank, (rel, c, med, n) in enumerate(found, 1):
            out.append(Outlier(rank=rank, test=c.test, subject=c.subject, value=c.value, unit=c.unit or "",  # type: ignore[arg-type]
                               median=round(med, 4), ratio_to_median=round(rel, 4), compared_with=n,
                               path_class=c.path_class))
            text = (f"outlier: {rel:.0%} of the median of {n} subjects ({med:.4g} {c.unit}) for the same test: "
                    "a weaker link, slot, riser or NUMA-remote path")
            if c.verdict in ("PASS", "INFO"):
                c.verdict = "WARN"
                c.cause = text
                c.next_step = ("compare this GPU's or pair's link state and NUMA placement with the others "
                               "('nvidia-smi topo -m', 'nvidia-smi -q -d PCIE'); swap slots to see if it follows")
            else:
                c.detail = f"{c.detail + '; ' if c.detail else ''}{text}"
        return out


def judge(results: Results, thresholds: Thresholds | None = None, *, source: str | None = None,
          environment: Mapping[str, str] | None = None) -> Qualification:
    """Judge every measurement and link-health fact of ``results``; never raises for what it finds.

    ``source`` names the results file (shown in the outputs); ``environment`` (the variables the probes
    ran with, when they ran in this process) lets the diagnosis name NCCL settings such as NCCL_P2P_DISABLE.
    """
    t = thresholds or Thresholds()
    j = _Judge(results, t, environment)
    j.measurements()
    j.health()
    j.run_checks()
    outliers = j.outliers()
    verdict = worst([c.verdict for c in j.checks])
    counts = {v: sum(1 for c in j.checks if c.verdict == v) for v in ("PASS", "WARN", "FAIL", "SKIP", "INFO")}
    return Qualification(
        verdict=verdict, exit_code=exit_code(verdict), checks=j.checks, outliers=outliers, counts=counts,
        host=results.run.hostname, gpus=[f"gpu{d.index} {d.name}" for d in results.devices],
        run_started=results.run.started_utc, results_source=source, thresholds_source=t.source,
        thresholds=t.summary(), gpuprobe_version=__version__, judged_utc=now_utc(),
        notes=[f"virtual machine: {results.run.virtual_machine}"] if results.run.virtual_machine else [],
    )
