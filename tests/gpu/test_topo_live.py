"""On a GPU machine: live NVML facts equal the replay of the snapshot recorded in the same run."""

from __future__ import annotations

import pytest

from gpuprobe.errors import NvmlUnavailable
from gpuprobe.system.inventory import load_system

pytestmark = pytest.mark.gpu


def test_live_equals_replay_of_its_recording(tmp_path):
    path = tmp_path / "nvml.json"
    try:
        live = load_system(record_to=path)
    except NvmlUnavailable as exc:
        pytest.skip(f"no NVML here: {exc}")
    replay = load_system(nvml_snapshot=path)
    assert len(live.devices) == len(replay.devices) >= 1
    for a, b in zip(live.devices, replay.devices, strict=True):
        assert a == b
    assert live.topology.pairs == replay.topology.pairs
    assert live.topology.unavailable == replay.topology.unavailable
    assert live.driver == replay.driver
