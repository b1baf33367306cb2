"""Health during the run: the NVML sampler's timeline judged, each finding named with its cause and next step.

Judged (one check per GPU and finding, category ``health``):

- XID events: 48, 63, 64, 74, 79, 94, 95 with their meaning and next step (FAIL); any other XID (WARN, generic).
- ECC: uncorrected errors counted during the run or present (FAIL); corrected errors climbing (WARN).
- Row remapping: a failed remap (FAIL), a pending remap or pending page retirement (WARN: reset the GPU).
- Clock-event (throttle) reasons seen in any sample: HW slowdown, HW thermal slowdown, HW power brake (FAIL),
  SW thermal slowdown (WARN); SW power cap is recorded (INFO): normal at the power limit under a matmul load.
- PCIe replay counter climbing during the run (WARN; FAIL above ``REPLAY_FAIL`` new replays).
- Clocks down under load: the median SM clock of the loaded samples below ``CLOCKS_DOWN_RATIO`` of the GPU's
  maximum (WARN, with the reasons NVML gave) -- unless every loaded sample names the SW power cap alone at
  ``AT_LIMIT`` of the enforced power limit (INFO: the power limit sets the clock; an H200 under a bf16 matmul runs
  about 1,500 MHz at its 700 W limit).

The XID meanings follow NVIDIA's XID catalogue (docs.nvidia.com/deploy/xid-errors) and DCGM's health watches.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from gpuprobe.results.qualification import Check, HealthSample, Timeline, Verdict

REASON_GPU_IDLE = 0x1
REASON_APP_CLOCKS = 0x2
REASON_SW_POWER_CAP = 0x4
REASON_HW_SLOWDOWN = 0x8
REASON_SW_THERMAL = 0x20
REASON_HW_THERMAL = 0x40
REASON_HW_POWER_BRAKE = 0x80
REPLAY_FAIL = 80
AT_LIMIT = 0.95
"""A GPU drawing this share of its enforced power limit is at the limit."""
AT_LIMIT_SHARE = 0.9
"""Share of the clock-down samples that must be at the limit (the H200's 5-minute burn-in: 313 of 315)."""
"""New PCIe replays during one run above which the link FAILs (DCGM's default max_pcie_replays is 80)."""
CLOCKS_DOWN_RATIO = 0.85
LOADED_UTIL_PCT = 90
MIN_LOADED_SAMPLES = 3

NEXT_DRAIN_RESET = ("drain the node, reset the GPU ('nvidia-smi -r -i N', or reboot) and run 'dcgmi diag -r 3'; "
                    "RMA the GPU if it happens again")

XIDS: dict[int, tuple[str, str]] = {
    48: ("double-bit ECC error (DBE): an uncorrectable memory error; the application using the GPU was stopped",
         "check 'nvidia-smi -q -d ECC,ROW_REMAPPER' (an XID 63 should follow: a row marked for remapping); "
         + NEXT_DRAIN_RESET),
    63: ("row remapping (or page retirement) recorded: a memory row was marked for remapping after ECC errors; "
         "it takes effect at the next GPU reset",
         "reset the GPU to apply the remap ('nvidia-smi -r -i N' with no process on it), then check "
         "'nvidia-smi -q -d ROW_REMAPPER' for a pending or failed remap"),
    64: ("row remapping (or page retirement) FAILED to be recorded: the GPU ran out of spare rows or could not "
         "write the remap",
         "take the GPU out of service: the memory fault cannot be repaired in the field; RMA the GPU"),
    74: ("NVLink error: a link saw CRC/replay errors or went down",
         "check 'nvidia-smi nvlink -e' and '-s' for the link and its peer; reset the GPUs (and restart the fabric "
         "manager on NVSwitch systems); reseat or RMA the board if it repeats"),
    79: ("GPU has fallen off the bus: it stopped answering on PCIe (power, thermal, PCIe link or board fault)",
         "drain the node and reboot; check 'dmesg' for AER errors and the PSU/thermal logs (BMC); reseat the "
         "GPU or riser; RMA if it repeats"),
    94: ("contained ECC error: an uncorrectable memory error confined to the application that hit it (that "
         "application was stopped; others continue)",
         "reset the GPU when it is idle to remap the row ('nvidia-smi -r -i N'); RMA if contained errors recur"),
    95: ("uncontained ECC error: an uncorrectable memory error that may have affected every application on the "
         "GPU", NEXT_DRAIN_RESET),
}
GENERIC_XID = ("XID {xid} reported by the driver", "look up XID {xid} in NVIDIA's XID catalogue "
               "(docs.nvidia.com/deploy/xid-errors) and the 'NVRM: Xid' line in 'dmesg' around that time")

THROTTLES: tuple[tuple[int, str, Verdict, str, str], ...] = (
    (REASON_HW_SLOWDOWN, "throttle_hw_slowdown", "FAIL",
     "HW slowdown: the hardware cut the clocks (by half or more) to protect itself: overheating, a power brake "
     "or an external slowdown signal",
     "check temperatures and fans/airflow ('nvidia-smi -q -d TEMPERATURE,PERFORMANCE'), the PSUs and the BMC's "
     "event log; re-run the burn-in after fixing the cooling or power"),
    (REASON_HW_THERMAL, "throttle_hw_thermal", "FAIL",
     "HW thermal slowdown: the GPU reached its hardware temperature limit",
     "check airflow, fan speeds, the inlet temperature and the heatsink mounting; compare with the other GPUs"),
    (REASON_HW_POWER_BRAKE, "throttle_hw_power_brake", "FAIL",
     "HW power brake: the system asserted the power-brake signal (PSU or chassis power limit)",
     "check the PSUs (all present and healthy), the chassis power budget and the BMC's power events"),
    (REASON_SW_THERMAL, "throttle_sw_thermal", "WARN",
     "SW thermal slowdown: the driver lowered clocks because the GPU (or its memory) ran hot",
     "check airflow and inlet temperature; compare the GPU's temperature with its peers"),
)


def _by_gpu(samples: list[HealthSample]) -> dict[int, list[HealthSample]]:
    out: dict[int, list[HealthSample]] = defaultdict(list)
    for s in samples:
        out[s.gpu].append(s)
    return out


def _check(g: int, test: str, verdict: Verdict, **kw: Any) -> Check:
    return Check(subject=f"gpu{g}", test=test, verdict=verdict, category="health", **kw)


def _delta(values: list[int | None]) -> tuple[int, int] | None:
    """(first, last - first) of the known values, None if none."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    return known[0], known[-1] - known[0]


def _loaded(tl: Timeline, samples: list[HealthSample]) -> list[HealthSample]:
    loaded = [p for p in tl.phases if p.loaded]
    if loaded:
        return [s for s in samples if any(p.start_s <= s.t_s <= (p.end_s if p.end_s is not None else 1e18)
                                          for p in loaded)]
    return [s for s in samples if s.util_pct is not None and s.util_pct >= LOADED_UTIL_PCT]


def judge_timeline(tl: Timeline) -> list[Check]:
    """Every finding of the timeline as checks (PASS checks for what was watched and found in order)."""
    checks: list[Check] = []
    by_gpu = _by_gpu(tl.samples)
    max_clock = {d.index: d.sm_clock_max_mhz for d in tl.devices}
    power_limit = {d.index: d.power_limit_w for d in tl.devices}
    gpus = sorted(set(by_gpu) | set(max_clock))
    seen_xid: set[int] = set()
    for ev in tl.xid_events:
        meaning, step = XIDS.get(ev.xid, (GENERIC_XID[0].format(xid=ev.xid), GENERIC_XID[1].format(xid=ev.xid)))
        seen_xid.add(ev.gpu)
        checks.append(_check(ev.gpu, "xid", "FAIL" if ev.xid in XIDS else "WARN", value=float(ev.xid), unit="xid",
                             cause=f"XID {ev.xid} at {ev.t_s:.0f} s: {meaning}", next_step=step))
    for g in gpus:
        samples = by_gpu.get(g, [])
        if tl.xid_supported and g not in seen_xid:
            checks.append(_check(g, "xid", "PASS", detail="no XID event during the run"))
        if not samples:
            checks.append(_check(g, "nvml_samples", "INFO", cause="no NVML sample of this GPU during the run"))
            continue
        checks.extend(_ecc(g, samples))
        checks.extend(_remap(g, samples))
        checks.extend(_throttles(g, samples))
        checks.extend(_replay(g, samples))
        checks.extend(_clocks(g, _loaded(tl, samples), max_clock.get(g), power_limit.get(g)))
    if not tl.xid_supported:
        checks.append(Check(subject="all", test="xid", verdict="INFO", category="health",
                            cause=f"XID events not watched: {tl.xid_note or 'unsupported'}",
                            next_step="read 'dmesg | grep -i xid' for the run's time window"))
    return checks


def _ecc(g: int, samples: list[HealthSample]) -> list[Check]:
    out = []
    unc = _delta([s.ecc_uncorrected for s in samples])
    cor = _delta([s.ecc_corrected for s in samples])
    if unc is not None:
        first, grew = unc
        if first + grew > 0:
            out.append(_check(g, "ecc_uncorrected", "FAIL", value=float(first + grew), unit="count", expected=0.0,
                              cause=f"{first + grew} uncorrected ECC errors (volatile)"
                                    + (f", {grew} during the run" if grew else "") + ": failing memory",
                              next_step="check 'nvidia-smi -q -d ECC,ROW_REMAPPER' and the XIDs (48, 63, 94, 95); "
                                        + NEXT_DRAIN_RESET))
        else:
            out.append(_check(g, "ecc_uncorrected", "PASS", value=0.0, unit="count", expected=0.0))
    if cor is not None and cor[1] > 0:
        out.append(_check(g, "ecc_corrected", "WARN", value=float(cor[1]), unit="count", expected=0.0,
                          cause=f"corrected ECC errors climbing: {cor[1]} during the run (from {cor[0]})",
                          next_step="watch the count over the next runs; if it keeps climbing, expect a row remap "
                                    "and check 'nvidia-smi -q -d ROW_REMAPPER'"))
    return out


def _remap(g: int, samples: list[HealthSample]) -> list[Check]:
    last = samples[-1]
    if any(s.remap_failed for s in samples):
        return [_check(g, "row_remap", "FAIL", cause="row remapping failed: no spare row left for a failing memory "
                       "row", next_step="take the GPU out of service and RMA it")]
    if any(s.remap_pending for s in samples) or any(s.retired_pending for s in samples):
        return [_check(g, "row_remap", "WARN", cause="a row remap (or page retirement) is pending: it takes "
                       "effect at the next GPU reset", next_step="reset the GPU when idle ('nvidia-smi -r -i N') "
                       "and check 'nvidia-smi -q -d ROW_REMAPPER' again")]
    if last.remap_failed is not None or last.retired_pending is not None:
        return [_check(g, "row_remap", "PASS", detail="no pending or failed row remap")]
    return []


def _throttles(g: int, samples: list[HealthSample]) -> list[Check]:
    out: list[Check] = []
    masks = [(s.t_s, s.clocks_event_reasons) for s in samples if s.clocks_event_reasons is not None]
    if not masks:
        return out
    for bit, test, verdict, cause, step in THROTTLES:
        hits = [t for t, m in masks if m & bit]
        if hits:
            out.append(_check(g, test, verdict, value=float(len(hits)), unit="samples",
                              cause=f"{cause} ({len(hits)} of {len(masks)} samples, first at {hits[0]:.0f} s)",
                              next_step=step))
    capped = [t for t, m in masks if m & REASON_SW_POWER_CAP]
    if capped:
        out.append(_check(g, "throttle_sw_power_cap", "INFO", value=float(len(capped)), unit="samples",
                          cause=f"SW power cap ({len(capped)} of {len(masks)} samples, first at {capped[0]:.0f} s): "
                                "the GPU ran at its power limit (normal under a full matmul load)"))
    if not any(c.verdict in ("WARN", "FAIL") for c in out):
        out.append(_check(g, "throttle", "PASS", detail="no HW slowdown, HW thermal, HW power brake or SW thermal "
                          "slowdown seen"))
    return out


def _replay(g: int, samples: list[HealthSample]) -> list[Check]:
    d = _delta([s.pcie_replay for s in samples])
    if d is None:
        return []
    first, grew = d
    if grew <= 0:
        return [_check(g, "pcie_replay_live", "PASS", value=0.0, unit="count", expected=0.0,
                       detail=f"replay counter steady at {first}")]
    return [_check(g, "pcie_replay_live", "FAIL" if grew > REPLAY_FAIL else "WARN", value=float(grew), unit="count",
                   expected=0.0, cause=f"PCIe replay counter climbing: {first} → {first + grew} during the run "
                   "(link-level retransmissions: signal integrity of the riser, cable, slot or retimer)",
                   next_step="check AER errors in 'dmesg' and 'nvidia-smi -q -d PCIE'; reseat the GPU or riser, "
                             "try another slot; FAIL above " f"{REPLAY_FAIL} new replays")]


def _at_power_limit(down: list[HealthSample], limit_w: float | None) -> bool:
    """The loaded samples with their clock down name the SW power cap alone (idle and application-clock bits
    aside), and nearly all of them (``AT_LIMIT_SHARE``: a load starting or changing dips for a second) draw at least
    ``AT_LIMIT`` of the enforced limit: the power limit sets the clock, as it should."""
    if not down or not limit_w:
        return False
    if any((s.clocks_event_reasons or 0) & ~(REASON_GPU_IDLE | REASON_APP_CLOCKS) != REASON_SW_POWER_CAP
           for s in down):
        return False
    at_limit = sum(1 for s in down if s.power_w is not None and s.power_w >= AT_LIMIT * limit_w)
    return at_limit >= AT_LIMIT_SHARE * len(down)


def _clocks(g: int, loaded: list[HealthSample], max_mhz: int | None, limit_w: float | None = None) -> list[Check]:
    clocks = [s.sm_clock_mhz for s in loaded if s.sm_clock_mhz is not None]
    if not max_mhz or len(clocks) < MIN_LOADED_SAMPLES:
        return []
    med = statistics.median(clocks)
    ratio = med / max_mhz
    base = dict(value=float(med), unit="MHz", expected=float(max_mhz), ratio=round(ratio, 4),
                expectation_basis=f"the GPU's maximum SM clock; WARN below {CLOCKS_DOWN_RATIO:.0%} under load "
                                  f"(median of {len(clocks)} loaded samples)")
    if ratio >= CLOCKS_DOWN_RATIO:
        return [_check(g, "clocks_under_load", "PASS", **base)]
    down = [s for s in loaded if s.sm_clock_mhz is not None and s.sm_clock_mhz < CLOCKS_DOWN_RATIO * max_mhz]
    if _at_power_limit(down, limit_w):
        watts = statistics.median(s.power_w for s in loaded if s.power_w is not None)
        return [_check(g, "clocks_under_load", "INFO", **base,
                       cause=f"clocks set by the power limit: median SM clock {med:.0f} MHz, {ratio:.0%} of "
                             f"{max_mhz} MHz, at {watts:.0f} W of the {limit_w:.0f} W enforced limit (SW power cap "
                             "only): the GPU runs as fast as its power limit allows",
                       next_step="nothing to do if the limit is the board's default ('nvidia-smi -q -d POWER': "
                                 "Current vs Default Power Limit)")]
    named = [(bit, name) for bit, name, *_ in THROTTLES] + [(REASON_SW_POWER_CAP, "throttle_sw_power_cap")]
    reasons = sorted({name for s in loaded for bit, name in named if (s.clocks_event_reasons or 0) & bit})
    why = f"; NVML reasons seen: {', '.join(r.removeprefix('throttle_') for r in reasons)}" if reasons else \
        "; NVML gave no throttle reason (application clocks or a clock lock?)"
    return [_check(g, "clocks_under_load", "WARN", **base,
                   cause=f"clocks down under load: median SM clock {med:.0f} MHz, {ratio:.0%} of {max_mhz} MHz{why}",
                   next_step="check 'nvidia-smi -q -d PERFORMANCE,CLOCK,POWER' under load: power limit, "
                             "application clocks ('nvidia-smi -rac'), locked clocks ('nvidia-smi -rgc'), cooling")]
