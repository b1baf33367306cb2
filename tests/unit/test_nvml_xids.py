"""The live XID watch against a FAKE pynvml module (the shapes of nvidia-ml-py's event calls), so the path
that only runs on a GPU machine is exercised here: registration, events read until NVML says timeout, a
device that does not support events, and the replay of recorded events."""

from __future__ import annotations

from types import SimpleNamespace

from gpuprobe.system.nvml import LiveNvml, ReplayNvml


class FakeError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeNvml:
    NVMLError = FakeError
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_TIMEOUT = 10
    nvmlEventTypeXidCriticalError = 8

    def __init__(self, events, supported=True):
        self.events = list(events)
        self.supported = supported
        self.freed = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, i):
        return f"handle{i}"

    def nvmlEventSetCreate(self):
        return "set"

    def nvmlDeviceRegisterEvents(self, handle, kind, event_set):
        assert kind == 8 and event_set == "set"
        if not self.supported:
            raise FakeError(self.NVML_ERROR_NOT_SUPPORTED)

    def nvmlEventSetWait_v2(self, event_set, timeout_ms):
        if not self.events:
            raise FakeError(self.NVML_ERROR_TIMEOUT)
        g, xid = self.events.pop(0)
        return SimpleNamespace(device=f"handle{g}", eventData=xid)

    def nvmlDeviceGetIndex(self, handle):
        return int(handle.removeprefix("handle"))

    def nvmlEventSetFree(self, event_set):
        self.freed = True


def test_live_watch_reads_events_until_timeout():
    fake = FakeNvml([(1, 79), (0, 48)])
    watch = LiveNvml(module=fake).watch_xids([0, 1])
    assert watch.supported and watch.reason is None
    assert watch.poll() == [(1, 79), (0, 48)]
    assert watch.poll() == []
    watch.close()
    assert fake.freed


def test_live_watch_unsupported_says_why():
    fake = FakeNvml([], supported=False)
    watch = LiveNvml(module=fake).watch_xids([0])
    assert not watch.supported and "not supported" in watch.reason and "dmesg" in watch.reason
    assert watch.poll() == [] and fake.freed


def test_replay_watch():
    snap = {"kind": "gpuprobe.nvml-snapshot", "schema_version": 1, "calls": {"xidEvents()": {"value": [[0, 94]]}}}
    assert ReplayNvml(snap).watch_xids([0]).poll() == [(0, 94)]
    del snap["calls"]["xidEvents()"]
    assert not ReplayNvml(snap).watch_xids([0]).supported
