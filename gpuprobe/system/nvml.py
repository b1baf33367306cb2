"""The one door to NVML: every NVML call in gpuprobe goes through a gateway from this module.

Two gateways answer the same ``query(func_name, *args)`` calls:

* ``LiveNvml`` calls the driver through ``pynvml``. It loads and initialises NVML on the first query that needs
  it (constructing it never fails) and raises ``NvmlUnavailable`` when the library or driver is missing. It can
  record every call it makes into a snapshot.
* ``ReplayNvml`` answers from a recorded snapshot file, so the same inventory code runs on a machine without a GPU.

What holds for both:

* A device argument is written ``gpu(i)`` (a ``Gpu``); the live gateway turns it into an NVML handle.
* Every value returned is plain JSON data: NVML structs become dicts, tuples and ctypes arrays become lists,
  bytes become str. Live and replayed answers are therefore the same objects.
* A call NVML refuses returns ``default`` (None unless given) and is listed once per function in
  ``unavailable`` (``"nvmlDeviceGetNumaNodeId: not supported"``) unless it was made with ``optional=True``.
  Such a call is "unavailable", not an error.

Snapshot file (``gpuprobe topo --record-nvml FILE`` writes one)::

    {"kind": "gpuprobe.nvml-snapshot", "schema_version": 1, "captured_utc": "...", "hostname": "...",
     "gpuprobe_version": "...",
     "calls": {"nvmlDeviceGetCount()": {"value": 1},
               "nvmlDeviceGetName(gpu0)": {"value": "NVIDIA H100 80GB HBM3"},
               "nvmlDeviceGetNvLinkState(gpu0,0)": {"error": "NVML_ERROR_NOT_SUPPORTED"}}}

A call key is ``func(arg,arg,...)`` with no spaces: ``gpuN`` for device N, integers in decimal, strings quoted.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import importlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gpuprobe.errors import NvmlUnavailable, ResultsFileError
from gpuprobe.results.model import MAX_DEVICES

SNAPSHOT_KIND = "gpuprobe.nvml-snapshot"
SNAPSHOT_SCHEMA_VERSION = 1
MAX_CALLS = 1_000_000
"""The most recorded calls a snapshot may hold (an 8-GPU host records a few thousand)."""

_SNAPSHOT_HINT = "record one on the GPU machine with 'gpuprobe topo --record-nvml FILE'"
_MISSING = "NOT_IN_SNAPSHOT"


@dataclass(frozen=True)
class Gpu:
    """A device argument: the gateway resolves it to the NVML handle of GPU ``index``."""

    index: int

    def __str__(self) -> str:
        return f"gpu{self.index}"


def gpu(index: int) -> Gpu:
    return Gpu(index)


def call_key(func_name: str, *args: Any) -> str:
    """The snapshot key of a call, e.g. ``nvmlDeviceGetP2PStatus(gpu0,gpu1,2)``."""
    parts = []
    for a in args:
        if isinstance(a, Gpu):
            parts.append(str(a))
        elif isinstance(a, bool) or not isinstance(a, int | str):
            raise TypeError(f"NVML call argument {a!r} of {func_name} must be gpu(i), int or str")
        else:
            parts.append(json.dumps(a) if isinstance(a, str) else str(a))
    return f"{func_name}({','.join(parts)})"


def to_plain(value: Any) -> Any:
    """An NVML return value as JSON data: structs -> dicts, arrays/tuples -> lists, bytes -> str."""
    if isinstance(value, ctypes.Structure | ctypes.Union):
        return {name: to_plain(getattr(value, name)) for name, *_ in value._fields_}
    if isinstance(value, ctypes.Array):
        return [to_plain(v) for v in value]
    if isinstance(value, ctypes._SimpleCData):
        return to_plain(value.value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").rstrip("\x00")
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def error_text(code_name: str) -> str:
    """``NVML_ERROR_NOT_SUPPORTED`` -> ``not supported`` (the form shown to users)."""
    if code_name == _MISSING:
        return "not recorded in the snapshot"
    return code_name.removeprefix("NVML_ERROR_").replace("_", " ").lower()


class NvmlGateway(Protocol):
    """What inventory code needs from a gateway (``LiveNvml`` or ``ReplayNvml``)."""

    unavailable: list[str]

    def query(self, func_name: str, *args: Any, default: Any = None, optional: bool = False) -> Any: ...


class _GatewayBase:
    """Shared bookkeeping: the once-per-function list of unavailable queries."""

    source = "nvml"

    def __init__(self) -> None:
        self.unavailable: list[str] = []
        self._unavailable_funcs: set[str] = set()

    def _note_failure(self, func_name: str, code_name: str, optional: bool) -> None:
        if optional or func_name in self._unavailable_funcs:
            return
        self._unavailable_funcs.add(func_name)
        self.unavailable.append(f"{func_name}: {error_text(code_name)}")


class LiveNvml(_GatewayBase):
    """NVML through pynvml, initialised on first use. ``record=True`` keeps every call for ``snapshot()``.

    Use as a context manager (or call ``close()``) to shut NVML down again.
    """

    source = "nvml"

    def __init__(self, record: bool = False, module: Any = None) -> None:
        super().__init__()
        self.record = record
        self.calls: dict[str, dict[str, Any]] = {}
        self._module = module
        self._lib: Any = None
        self._handles: dict[int, Any] = {}
        self._code_names: dict[int, str] = {}

    # -- set-up ---------------------------------------------------------------------------------------------
    def _nvml(self) -> Any:
        if self._lib is not None:
            return self._lib
        lib = self._module
        if lib is None:
            try:
                lib = importlib.import_module("pynvml")  # loaded only when NVML is needed
            except ImportError:
                raise NvmlUnavailable(
                    "the nvidia-ml-py package (pynvml) is not installed", hint="pip install nvidia-ml-py"
                ) from None
        try:
            lib.nvmlInit()
        except lib.NVMLError as exc:
            raise NvmlUnavailable(f"cannot initialise NVML: {exc}") from None
        except OSError as exc:  # a broken libnvidia-ml.so
            raise NvmlUnavailable(f"cannot load the NVML library: {exc}") from None
        self._code_names = {
            getattr(lib, n): n for n in dir(lib) if n.startswith("NVML_ERROR_") and isinstance(getattr(lib, n), int)
        }
        self._lib = lib
        return lib

    def close(self) -> None:
        """Shut NVML down if this gateway initialised it (safe to call more than once)."""
        if self._lib is not None:
            with contextlib.suppress(self._lib.NVMLError):
                self._lib.nvmlShutdown()
            self._lib = None
            self._handles.clear()

    def __enter__(self) -> LiveNvml:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queries --------------------------------------------------------------------------------------------
    def _code_name(self, exc: Exception) -> str:
        value = getattr(exc, "value", None)
        return self._code_names.get(value, f"NVML_ERROR_{value}") if isinstance(value, int) else "NVML_ERROR_UNKNOWN"

    def _handle(self, lib: Any, index: int) -> Any:
        if index not in self._handles:
            self._handles[index] = lib.nvmlDeviceGetHandleByIndex(index)
        return self._handles[index]

    def query(self, func_name: str, *args: Any, default: Any = None, optional: bool = False) -> Any:
        """Call ``pynvml.<func_name>(*args)``; the value as JSON data, or ``default`` when NVML refuses."""
        key = call_key(func_name, *args)
        lib = self._nvml()
        try:
            fn = getattr(lib, func_name)
        except AttributeError:
            code = "NVML_ERROR_FUNCTION_NOT_FOUND"  # an older pynvml without this call
            self._store(key, {"error": code})
            self._note_failure(func_name, code, optional)
            return default
        try:
            real_args = [self._handle(lib, a.index) if isinstance(a, Gpu) else a for a in args]
            value = to_plain(fn(*real_args))
        except lib.NVMLError as exc:
            code = self._code_name(exc)
            self._store(key, {"error": code})
            self._note_failure(func_name, code, optional)
            return default
        self._store(key, {"value": value})
        return value

    def _store(self, key: str, answer: dict[str, Any]) -> None:
        if self.record:
            self.calls[key] = answer

    def watch_xids(self, indices: list[int]) -> XidWatch:
        """Register for XID (critical error) events on ``indices``; the watch says when NVML cannot."""
        lib = self._nvml()
        try:
            event_set = lib.nvmlEventSetCreate()
        except (lib.NVMLError, AttributeError) as exc:
            return XidWatch(None, f"NVML event sets unavailable: {exc}")
        kind = getattr(lib, "nvmlEventTypeXidCriticalError", 0x8)
        try:
            for i in indices:
                lib.nvmlDeviceRegisterEvents(self._handle(lib, i), kind, event_set)
        except lib.NVMLError as exc:
            with contextlib.suppress(lib.NVMLError):
                lib.nvmlEventSetFree(event_set)
            return XidWatch(None, f"XID events not supported here ({exc}): read 'dmesg' for Xid lines instead")
        return XidWatch(_LiveXids(lib, event_set), None)

    # -- snapshot -------------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The recorded calls as a snapshot document (JSON data)."""
        from gpuprobe import __version__

        return {
            "kind": SNAPSHOT_KIND,
            "schema_version": SNAPSHOT_SCHEMA_VERSION,
            "captured_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "hostname": socket.gethostname(),
            "gpuprobe_version": __version__,
            "calls": dict(self.calls),
        }

    def write_snapshot(self, path: str | os.PathLike[str]) -> None:
        """Write ``snapshot()`` to ``path`` atomically."""
        from gpuprobe.results.io import write_json_atomic

        write_json_atomic(path, self.snapshot(), "the NVML snapshot")


class ReplayNvml(_GatewayBase):
    """Answers queries from a snapshot's ``calls``. A call not in the snapshot returns ``default``."""

    source = "nvml-snapshot"

    def __init__(self, snapshot: dict[str, Any], origin: str = "NVML snapshot") -> None:
        super().__init__()
        self.snapshot = validate_snapshot(snapshot, origin)
        self.calls: dict[str, dict[str, Any]] = self.snapshot["calls"]
        self.hostname: str | None = self.snapshot.get("hostname")
        self.captured_utc: str | None = self.snapshot.get("captured_utc")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ReplayNvml:
        """Load a snapshot written by ``LiveNvml.write_snapshot``; a bad file raises ``ResultsFileError``."""
        from gpuprobe.results.io import read_json

        data = read_json(path, what="NVML snapshot")
        return cls(data, origin=f"NVML snapshot {Path(path)}")

    def query(self, func_name: str, *args: Any, default: Any = None, optional: bool = False) -> Any:
        answer = self.calls.get(call_key(func_name, *args))
        if answer is None:
            self._note_failure(func_name, _MISSING, optional)
            return default
        if "error" in answer:
            self._note_failure(func_name, str(answer["error"]), optional)
            return default
        return answer.get("value", default)

    def watch_xids(self, indices: list[int]) -> XidWatch:
        """XID events from the snapshot's ``xidEvents()`` call (a list of [gpu, xid]), if it has one."""
        if call_key("xidEvents") not in self.calls:
            return XidWatch(None, "XID events not recorded in the snapshot")
        return XidWatch(_ReplayXids(self), None)

    def close(self) -> None:
        """Nothing to release (same interface as ``LiveNvml``)."""

    def __enter__(self) -> ReplayNvml:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReplaySequence(ReplayNvml):
    """Answers from one snapshot after another: ``next_sample()`` moves to the next (the sampler calls it before
    each reading; the last snapshot repeats). Builds NVML sequences for tests: a fault appearing part way."""

    source = "nvml-sequence"

    def __init__(self, snapshots: list[dict[str, Any]], origin: str = "NVML sequence") -> None:
        if not snapshots:
            raise ResultsFileError(f"{origin} has no snapshots")
        super().__init__(snapshots[0], origin)
        self.steps = [validate_snapshot(s, f"{origin} step {i}")["calls"] for i, s in enumerate(snapshots)]
        self.step = -1

    def next_sample(self) -> None:
        self.step = min(self.step + 1, len(self.steps) - 1)
        self.calls = self.steps[self.step]

    def watch_xids(self, indices: list[int]) -> XidWatch:
        if not any(call_key("xidEvents") in calls for calls in self.steps):
            return XidWatch(None, "XID events not recorded in the sequence")
        return XidWatch(_ReplayXids(self), None)


class XidWatch:
    """Registered XID events: ``poll()`` returns the (gpu index, xid) pairs that arrived since the last poll.
    ``reason`` says why events cannot be watched (then ``supported`` is False and ``poll`` returns [])."""

    def __init__(self, source: _LiveXids | _ReplayXids | None, reason: str | None) -> None:
        self._source = source
        self.reason = reason

    @property
    def supported(self) -> bool:
        return self._source is not None

    def poll(self) -> list[tuple[int, int]]:
        return self._source.poll() if self._source is not None else []

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None


class _LiveXids:
    def __init__(self, lib: Any, event_set: Any) -> None:
        self.lib = lib
        self.event_set = event_set

    def poll(self) -> list[tuple[int, int]]:
        lib, out = self.lib, []
        wait = getattr(lib, "nvmlEventSetWait_v2", None) or lib.nvmlEventSetWait
        for _ in range(64):  # at most this many events per poll
            try:
                data = wait(self.event_set, 0)
            except lib.NVMLError:  # NVML_ERROR_TIMEOUT: nothing waiting
                break
            try:
                index = int(lib.nvmlDeviceGetIndex(data.device))
            except lib.NVMLError:
                index = -1
            out.append((index, int(data.eventData)))
        return out

    def close(self) -> None:
        with contextlib.suppress(self.lib.NVMLError):
            self.lib.nvmlEventSetFree(self.event_set)


class _ReplayXids:
    def __init__(self, nvml: ReplayNvml) -> None:
        self.nvml = nvml

    def poll(self) -> list[tuple[int, int]]:
        value = self.nvml.query("xidEvents", default=[], optional=True) or []
        return [(int(g), int(x)) for g, x in value]

    def close(self) -> None:
        pass


def validate_snapshot(data: Any, origin: str = "NVML snapshot") -> dict[str, Any]:
    """Check a snapshot's envelope; returns it or raises ``ResultsFileError`` naming what is wrong."""
    if not isinstance(data, dict) or data.get("kind") != SNAPSHOT_KIND:
        kind = data.get("kind") if isinstance(data, dict) else None
        raise ResultsFileError(f"{origin} is not a gpuprobe NVML snapshot (kind is {kind!r})", hint=_SNAPSHOT_HINT)
    version = data.get("schema_version")
    if not isinstance(version, int) or not 1 <= version <= SNAPSHOT_SCHEMA_VERSION:
        raise ResultsFileError(
            f"{origin} has schema version {version!r}; this gpuprobe reads versions 1..{SNAPSHOT_SCHEMA_VERSION}",
            hint="upgrade gpuprobe to read snapshots written by a newer version",
        )
    calls = data.get("calls")
    if not isinstance(calls, dict) or not all(isinstance(v, dict) for v in calls.values()):
        raise ResultsFileError(f"{origin} is damaged: 'calls' must map call keys to objects", hint=_SNAPSHOT_HINT)
    if len(calls) > MAX_CALLS:
        raise ResultsFileError(f"{origin} is damaged: {len(calls)} calls; a snapshot has at most {MAX_CALLS}",
                               hint=_SNAPSHOT_HINT)
    count = calls.get(call_key("nvmlDeviceGetCount"), {}).get("value")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                              or not 0 <= count <= MAX_DEVICES):
        raise ResultsFileError(f"{origin} is damaged: nvmlDeviceGetCount is {str(count)[:40]!r}, not a GPU count "
                               f"in 0..{MAX_DEVICES}", hint=_SNAPSHOT_HINT)
    return data
