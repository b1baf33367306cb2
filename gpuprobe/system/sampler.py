"""The NVML health sampler: once a second per GPU, in a thread, through the gateway of ``system/nvml.py``.

Each reading records clocks (SM, memory), power, temperature, utilisation, clock-event (throttle) reasons, the
PCIe replay counter, volatile ECC counts, row-remap state and retired pages; XID events arrive through an NVML
event set where the driver supports one (``XidWatch``), else the timeline says why not. A query NVML refuses
is None in the sample and listed once in the timeline's notes; a sampler problem never stops the run: it is
written in the notes and the samples so far are kept.

``Sampler.sample_once`` takes one reading (tests drive it with a ``ReplaySequence`` and no thread);
``start``/``stop`` run it in a daemon thread. ``clock`` and ``sleep`` are injectable, so orchestration tests run
with a simulated clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from gpuprobe.results.qualification import HealthSample, Phase, Timeline, TimelineDevice, XidEvent
from gpuprobe.system.nvml import gpu

CLOCK_SM = 1
CLOCK_MEM = 2
TEMPERATURE_GPU = 0
ECC_CORRECTED = 0
ECC_UNCORRECTED = 1
ECC_VOLATILE = 0
RETIRE_SBE = 0
RETIRE_DBE = 1


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


class Sampler:
    """Reads every GPU in ``indices`` through ``nvml`` about every ``interval_s`` seconds."""

    def __init__(self, nvml: Any, indices: list[int], interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, constructed: bool = False) -> None:
        self.nvml = nvml
        self.indices = list(indices)
        self.clock = clock
        self.timeline = Timeline(interval_s=interval_s, constructed=constructed)
        self._t0: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._xids: Any = None

    # -- set-up -----------------------------------------------------------------------------------------------
    def now(self) -> float:
        if self._t0 is None:
            self._t0 = self.clock()
        return round(self.clock() - self._t0, 3)

    def open(self) -> None:
        """Read the fixed facts of each GPU and register for XID events (never raises)."""
        self.now()
        try:
            for i in self.indices:
                g = gpu(i)
                power = _int(self.nvml.query("nvmlDeviceGetEnforcedPowerLimit", g, optional=True))
                self.timeline.devices.append(TimelineDevice(
                    index=i, name=self.nvml.query("nvmlDeviceGetName", g, optional=True),
                    sm_clock_max_mhz=_int(self.nvml.query("nvmlDeviceGetMaxClockInfo", g, CLOCK_SM, optional=True)),
                    mem_clock_max_mhz=_int(self.nvml.query("nvmlDeviceGetMaxClockInfo", g, CLOCK_MEM,
                                                           optional=True)),
                    power_limit_w=power / 1000 if power is not None else None))
            watch = getattr(self.nvml, "watch_xids", None)
            self._xids = watch(self.indices) if watch is not None else None
            if self._xids is None:
                self.timeline.xid_note = "this NVML gateway cannot watch XID events"
            else:
                self.timeline.xid_supported = self._xids.supported
                self.timeline.xid_note = self._xids.reason
        except Exception as exc:  # noqa: BLE001 - the sampler must never end the run
            self.timeline.notes.append(f"sampler set-up failed: {type(exc).__name__}: {exc}")

    # -- readings ---------------------------------------------------------------------------------------------
    def _read(self, i: int, t: float) -> HealthSample:
        q = self.nvml.query
        g = gpu(i)
        power = _int(q("nvmlDeviceGetPowerUsage", g))
        util = q("nvmlDeviceGetUtilizationRates", g)
        reasons = q("nvmlDeviceGetCurrentClocksEventReasons", g, optional=True)
        if reasons is None:
            reasons = q("nvmlDeviceGetCurrentClocksThrottleReasons", g)
        remap = q("nvmlDeviceGetRemappedRows", g, optional=True)
        sbe = q("nvmlDeviceGetRetiredPages", g, RETIRE_SBE, optional=True)
        dbe = q("nvmlDeviceGetRetiredPages", g, RETIRE_DBE, optional=True)
        pending = q("nvmlDeviceGetRetiredPagesPendingStatus", g, optional=True)
        return HealthSample(
            t_s=t, gpu=i,
            sm_clock_mhz=_int(q("nvmlDeviceGetClockInfo", g, CLOCK_SM)),
            mem_clock_mhz=_int(q("nvmlDeviceGetClockInfo", g, CLOCK_MEM)),
            power_w=power / 1000 if power is not None else None,
            temperature_c=_int(q("nvmlDeviceGetTemperature", g, TEMPERATURE_GPU)),
            util_pct=_int(util.get("gpu")) if isinstance(util, dict) else None,
            clocks_event_reasons=_int(reasons),
            pcie_replay=_int(q("nvmlDeviceGetPcieReplayCounter", g)),
            ecc_corrected=_int(q("nvmlDeviceGetTotalEccErrors", g, ECC_CORRECTED, ECC_VOLATILE)),
            ecc_uncorrected=_int(q("nvmlDeviceGetTotalEccErrors", g, ECC_UNCORRECTED, ECC_VOLATILE)),
            remapped_rows_uncorrectable=_int(remap[1]) if isinstance(remap, list) and len(remap) >= 4 else None,
            remap_pending=bool(remap[2]) if isinstance(remap, list) and len(remap) >= 4 else None,
            remap_failed=bool(remap[3]) if isinstance(remap, list) and len(remap) >= 4 else None,
            retired_pages=(len(sbe or []) + len(dbe or [])) if sbe is not None or dbe is not None else None,
            retired_pending=bool(pending) if pending is not None else None,
        )

    def sample_once(self) -> None:
        """One reading of every GPU, and the XID events that arrived (never raises)."""
        step = getattr(self.nvml, "next_sample", None)
        try:
            if step is not None:
                step()
            t = self.now()
            samples = [self._read(i, t) for i in self.indices]
            events = [XidEvent(t_s=t, gpu=g, xid=x) for g, x in (self._xids.poll() if self._xids else [])]
        except Exception as exc:  # noqa: BLE001 - a failed reading is a note, the run goes on
            note = f"a reading failed: {type(exc).__name__}: {exc}"
            with self._lock:
                if note not in self.timeline.notes:
                    self.timeline.notes.append(note)
            return
        with self._lock:
            self.timeline.samples.extend(samples)
            self.timeline.xid_events.extend(events)

    # -- phases -----------------------------------------------------------------------------------------------
    def phase(self, name: str, loaded: bool = False) -> None:
        """Close the open phase and start ``name``."""
        t = self.now()
        with self._lock:
            self._end_phase(t)
            self.timeline.phases.append(Phase(name=name, start_s=t, loaded=loaded))

    def _end_phase(self, t: float) -> None:
        if self.timeline.phases and self.timeline.phases[-1].end_s is None:
            self.timeline.phases[-1].end_s = t

    # -- thread -----------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        interval = self.timeline.interval_s
        next_t = time.monotonic()  # paced by the real clock; the injected one only stamps the samples
        while True:
            self.sample_once()
            next_t = max(next_t + interval, time.monotonic() - interval)  # a slow reading skips, never bursts
            if self._stop.wait(max(0.0, next_t - time.monotonic())):
                return

    def start(self) -> Sampler:
        self.open()
        self._thread = threading.Thread(target=self._loop, name="gpuprobe-nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Timeline:
        """Stop the thread (if running), close the open phase and XID watch; the timeline so far."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            self.sample_once()  # the state at the end of the run (counters, remaps)
        with self._lock:
            self._end_phase(self.now())
        if self._xids is not None:
            try:
                self._xids.close()
            except Exception as exc:  # noqa: BLE001 - closing must not lose the timeline
                self.timeline.notes.append(f"closing the XID event set failed: {exc}")
            self._xids = None
        unavailable = getattr(self.nvml, "unavailable", [])
        for u in unavailable:
            if u not in self.timeline.notes:
                self.timeline.notes.append(f"NVML: {u}")
        return self.timeline

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
