"""The NVML gateway: call keys, value conversion, replay answers, unavailable bookkeeping, snapshot files."""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import pynvml
import pytest

from gpuprobe.errors import NvmlUnavailable, ResultsFileError
from gpuprobe.system.nvml import (
    SNAPSHOT_KIND,
    LiveNvml,
    ReplayNvml,
    call_key,
    error_text,
    gpu,
    to_plain,
    validate_snapshot,
)

H100_SNAPSHOT = Path(__file__).parents[1] / "data" / "nvml-h100-2026-11-25.json"


def _snapshot(calls: dict) -> dict:
    """A snapshot envelope around ``calls``: constructed to exercise the replay mechanics, not device data."""
    return {"kind": SNAPSHOT_KIND, "schema_version": 1, "captured_utc": None, "hostname": None, "calls": calls}


def test_call_key_format():
    assert call_key("nvmlDeviceGetCount") == "nvmlDeviceGetCount()"
    assert call_key("nvmlDeviceGetName", gpu(0)) == "nvmlDeviceGetName(gpu0)"
    assert call_key("nvmlDeviceGetP2PStatus", gpu(1), gpu(3), 2) == "nvmlDeviceGetP2PStatus(gpu1,gpu3,2)"
    assert call_key("f", "a b") == 'f("a b")'
    with pytest.raises(TypeError):
        call_key("f", 1.5)


def test_to_plain_converts_real_pynvml_structs():
    pci = pynvml.nvmlPciInfo_t()
    pci.busId = b"00000000:18:00.0"
    pci.domain, pci.bus, pci.device = 0, 0x18, 0
    plain = to_plain(pci)
    assert plain["busId"] == "00000000:18:00.0" and plain["bus"] == 0x18
    mem = pynvml.c_nvmlMemory_t()
    mem.total = 85520809984
    assert to_plain(mem) == {"total": 85520809984, "free": 0, "used": 0}
    assert to_plain((ctypes.c_ulonglong * 2)(65535, 0)) == [65535, 0]
    assert to_plain((9, 0)) == [9, 0]
    assert to_plain(b"580.159.04\x00") == "580.159.04"
    json.dumps(plain, allow_nan=False)


def test_error_text():
    assert error_text("NVML_ERROR_NOT_SUPPORTED") == "not supported"
    assert error_text("NVML_ERROR_NO_PERMISSION") == "no permission"


def test_replay_recorded_error_is_none_and_listed_once():
    nvml = ReplayNvml(
        _snapshot(
            {
                "nvmlDeviceGetNumaNodeId(gpu0)": {"error": "NVML_ERROR_NOT_SUPPORTED"},
                "nvmlDeviceGetNumaNodeId(gpu1)": {"error": "NVML_ERROR_NOT_SUPPORTED"},
                "nvmlDeviceGetCount()": {"value": 2},
            }
        )
    )
    assert nvml.query("nvmlDeviceGetCount") == 2
    assert nvml.query("nvmlDeviceGetNumaNodeId", gpu(0)) is None
    assert nvml.query("nvmlDeviceGetNumaNodeId", gpu(1), default=-1) == -1
    assert nvml.unavailable == ["nvmlDeviceGetNumaNodeId: not supported"]


def test_replay_missing_key_is_none_and_listed():
    nvml = ReplayNvml(_snapshot({}))
    assert nvml.query("nvmlDeviceGetName", gpu(0)) is None
    assert nvml.unavailable == ["nvmlDeviceGetName: not recorded in the snapshot"]


def test_optional_query_is_not_listed():
    nvml = ReplayNvml(_snapshot({"nvmlDeviceGetNvLinkState(gpu0,18)": {"error": "NVML_ERROR_INVALID_ARGUMENT"}}))
    assert nvml.query("nvmlDeviceGetNvLinkState", gpu(0), 18, optional=True) is None
    assert nvml.unavailable == []


@pytest.mark.parametrize(
    "data, message",
    [
        ({"kind": "gpuprobe.results", "schema_version": 1, "calls": {}}, "not a gpuprobe NVML snapshot"),
        ([], "not a gpuprobe NVML snapshot"),
        ({"kind": SNAPSHOT_KIND, "schema_version": 99, "calls": {}}, "schema version 99"),
        ({"kind": SNAPSHOT_KIND, "schema_version": 1, "calls": []}, "damaged"),
    ],
)
def test_bad_snapshot_envelopes(data, message):
    with pytest.raises(ResultsFileError, match=message):
        validate_snapshot(data)


def test_snapshot_file_errors(tmp_path):
    with pytest.raises(ResultsFileError, match="does not exist"):
        ReplayNvml.from_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ResultsFileError, match="not valid JSON"):
        ReplayNvml.from_file(bad)


def test_live_gateway_is_lazy_and_raises_nvml_unavailable_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    nvml = LiveNvml()  # constructing never touches NVML
    with pytest.raises(NvmlUnavailable, match="nvidia-ml-py"):
        nvml.query("nvmlDeviceGetCount")


def test_live_gateway_without_driver_raises_nvml_unavailable():
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("NVML works on this machine")
    with pytest.raises(NvmlUnavailable, match="cannot initialise NVML"):
        LiveNvml().query("nvmlDeviceGetCount")


class _StandInNvml:
    """Stands in for the pynvml module to check what the live gateway records (real pynvml error and struct
    types; the answers are arbitrary, not device data)."""

    NVMLError = pynvml.NVMLError
    NVML_ERROR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED

    def __init__(self) -> None:
        self.shutdowns = 0

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetPciInfo(self, handle):
        assert handle == ("handle", 0)
        pci = pynvml.nvmlPciInfo_t()
        pci.busId = b"00000000:00:06.0"
        return pci

    def nvmlDeviceGetNumaNodeId(self, handle):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


def test_live_records_what_replay_reads(tmp_path):
    module = _StandInNvml()
    with LiveNvml(record=True, module=module) as live:
        answers = [
            live.query("nvmlDeviceGetCount"),
            live.query("nvmlDeviceGetPciInfo", gpu(0)),
            live.query("nvmlDeviceGetNumaNodeId", gpu(0)),
            live.query("nvmlDeviceGetNoSuchCall", gpu(0)),
        ]
        live.write_snapshot(tmp_path / "snap.json")
    assert module.shutdowns == 1
    assert live.calls["nvmlDeviceGetNumaNodeId(gpu0)"] == {"error": "NVML_ERROR_NOT_SUPPORTED"}
    replay = ReplayNvml.from_file(tmp_path / "snap.json")
    replayed = [
        replay.query("nvmlDeviceGetCount"),
        replay.query("nvmlDeviceGetPciInfo", gpu(0)),
        replay.query("nvmlDeviceGetNumaNodeId", gpu(0)),
        replay.query("nvmlDeviceGetNoSuchCall", gpu(0)),
    ]
    assert replayed == answers
    assert answers[1]["busId"] == "00000000:00:06.0" and answers[2] is None
    assert (
        replay.unavailable
        == live.unavailable
        == [
            "nvmlDeviceGetNumaNodeId: not supported",
            "nvmlDeviceGetNoSuchCall: function not found",
        ]
    )


def test_recorded_h100_snapshot_envelope():
    nvml = ReplayNvml.from_file(H100_SNAPSHOT)
    assert nvml.snapshot["kind"] == SNAPSHOT_KIND
    for key, answer in nvml.calls.items():
        assert key.endswith(")") and "(" in key and " " not in key
        assert set(answer) in ({"value"}, {"error"})
        assert "error" not in answer or answer["error"].startswith("NVML_ERROR_")
    assert nvml.query("nvmlDeviceGetCount") == 1
    assert nvml.query("nvmlDeviceGetName", gpu(0)) == "NVIDIA H100 80GB HBM3"
    assert nvml.query("nvmlDeviceGetNvLinkState", gpu(0), 0) is None
    assert nvml.unavailable == ["nvmlDeviceGetNvLinkState: not supported"]


class _StandInMemory(_StandInNvml):
    """Two GPUs with memory in use (pynvml's own struct), for the validation runner's sampler."""

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA H200"

    def nvmlDeviceGetMemoryInfo(self, handle):
        mem = pynvml.c_nvmlMemory_t()
        mem.total, mem.used = 143_771 << 20, (1 + handle[1]) << 30
        mem.free = mem.total - mem.used
        return mem


def test_validation_memory_sampler_goes_through_the_gateway() -> None:
    from gpuprobe.validate.gpumem import Nvml

    module = _StandInMemory()
    nvml = Nvml(_gateway=LiveNvml(module=module))
    assert nvml.count() == 2 and nvml.name(1) == "NVIDIA H200"
    assert nvml.used_bytes([0, 1]) == 3 << 30 and nvml.reason is None
    nvml.close()
    assert module.shutdowns == 1
    broken = Nvml(_gateway=LiveNvml(module=_Uninitialisable()))
    assert broken.count() == 0 and broken.used_bytes([0]) is None and broken.name(0) is None
    assert broken.reason is not None and broken.reason.startswith("NVML not available (cannot initialise NVML")


class _Uninitialisable(_StandInNvml):
    def nvmlInit(self):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
