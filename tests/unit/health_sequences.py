"""CONSTRUCTED NVML sequences for the health sampler and its judgement: not measurements.

Each step is an NVML snapshot (``gpuprobe.nvml-snapshot``) whose call keys are the sampler's; the values of
a healthy step are those of the real H100 snapshot (tests/data/nvml-h100-2026-11-25.json: name, clocks,
power limit) with a GPU under load (SM clock at its 1980 MHz maximum, 690 W, 65 °C, 100 % busy). A fault is
put into the steps from ``at`` on, so the judgement sees it appear part way through the run. The hostname of
every snapshot says it is a constructed test sequence.
"""

from __future__ import annotations

import copy
from typing import Any

from gpuprobe.system.nvml import ReplaySequence
from gpuprobe.system.sampler import Sampler

HOST = "CONSTRUCTED TEST SEQUENCE (not a measurement)"


def healthy(gpu: int = 0) -> dict[str, Any]:
    g = f"gpu{gpu}"
    return {
        "nvmlDeviceGetCount()": {"value": gpu + 1},
        f"nvmlDeviceGetName({g})": {"value": "NVIDIA H100 80GB HBM3"},
        f"nvmlDeviceGetMaxClockInfo({g},1)": {"value": 1980},
        f"nvmlDeviceGetMaxClockInfo({g},2)": {"value": 2619},
        f"nvmlDeviceGetEnforcedPowerLimit({g})": {"value": 700000},
        f"nvmlDeviceGetClockInfo({g},1)": {"value": 1980},
        f"nvmlDeviceGetClockInfo({g},2)": {"value": 2619},
        f"nvmlDeviceGetPowerUsage({g})": {"value": 690000},
        f"nvmlDeviceGetTemperature({g},0)": {"value": 65},
        f"nvmlDeviceGetUtilizationRates({g})": {"value": {"gpu": 100, "memory": 80}},
        f"nvmlDeviceGetCurrentClocksEventReasons({g})": {"value": 0},
        f"nvmlDeviceGetPcieReplayCounter({g})": {"value": 0},
        f"nvmlDeviceGetTotalEccErrors({g},0,0)": {"value": 0},
        f"nvmlDeviceGetTotalEccErrors({g},1,0)": {"value": 0},
        f"nvmlDeviceGetRemappedRows({g})": {"value": [0, 0, 0, 0]},
        f"nvmlDeviceGetRetiredPages({g},0)": {"error": "NVML_ERROR_NOT_SUPPORTED"},
        f"nvmlDeviceGetRetiredPages({g},1)": {"error": "NVML_ERROR_NOT_SUPPORTED"},
        f"nvmlDeviceGetRetiredPagesPendingStatus({g})": {"error": "NVML_ERROR_NOT_SUPPORTED"},
        "xidEvents()": {"value": []},
    }


def snapshot(calls: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "gpuprobe.nvml-snapshot", "schema_version": 1, "hostname": HOST, "calls": calls}


def sequence(steps: int = 6, at: int = 3, fault: dict[str, Any] | None = None, once: set[str] | None = None,
             gpus: int = 1) -> ReplaySequence:
    """``steps`` snapshots of ``gpus`` healthy GPUs; from step ``at`` on the keys of ``fault`` replace theirs
    (keys in ``once`` only at step ``at``: an event, not a state)."""
    out = []
    for i in range(steps):
        calls: dict[str, Any] = {}
        for g in range(gpus):
            calls.update(healthy(g))
        calls["nvmlDeviceGetCount()"] = {"value": gpus}
        if fault and i >= at:
            for k, v in fault.items():
                if once and k in once and i != at:
                    continue
                calls[k] = copy.deepcopy(v)
        out.append(snapshot(calls))
    return ReplaySequence(out, origin="constructed NVML sequence")


def sampled(seq: ReplaySequence, gpus: int = 1, loaded: bool = True):
    """Run the sampler over every step of ``seq`` (no thread, a simulated clock: one second a step)."""
    t = [0.0]
    sampler = Sampler(seq, list(range(gpus)), clock=lambda: t[0], constructed=True)
    sampler.open()
    sampler.phase("load", loaded=loaded)
    for _ in seq.steps:
        sampler.sample_once()
        t[0] += 1.0
    return sampler.stop()
