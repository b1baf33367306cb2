"""The one door to the CUDA runtime (through CuPy): devices, buffers, streams, events, kernels, peers.

Everything allocated through :class:`Cuda` is freed by ``close()`` (or the ``with`` block), also when a
probe fails half way. Pointers are plain ints (unified addressing: pinned host memory allocated *mapped*
can be read and written by kernels directly).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from gpuprobe.errors import MissingDependency, NoGpu
from gpuprobe.probes.core.kernels import SOURCE

HOST_ALLOC_PORTABLE = 1
HOST_ALLOC_MAPPED = 2
MEMCPY_DEFAULT = 4
SPIN_TIMEOUT_CYCLES = 20_000_000_000  # ~10 s at ~2 GHz, as nvbandwidth


def import_cupy() -> Any:
    try:
        import cupy
    except ImportError:
        raise MissingDependency.of("cupy", "the CUDA probes need CuPy") from None
    return cupy


class Cuda:
    """CUDA runtime helpers bound to one process. Use as a context manager."""

    def __init__(self) -> None:
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # same indices as nvidia-smi and NVML
        self.cp = import_cupy()
        self.rt = self.cp.cuda.runtime
        try:
            self.device_count = self.rt.getDeviceCount()
        except self.rt.CUDARuntimeError as exc:
            raise NoGpu(f"no usable CUDA GPU ({_cuda_msg(exc)})") from None
        if self.device_count == 0:
            raise NoGpu("no CUDA GPU found")
        self._module = self.cp.RawModule(code=SOURCE, options=("-std=c++17",))
        self._kernels: dict[str, Any] = {}
        self._device_allocs: list[tuple[int, int]] = []
        self._host_allocs: list[int] = []
        self._flag_ptr = self.host_alloc(8, mapped=True)
        self._flag = (ctypes.c_int * 2).from_address(self._flag_ptr)
        self._flag[0] = 0
        self._flag[1] = 0
        self._props: dict[int, dict[str, Any]] = {}

    # -- lifetime -----------------------------------------------------------------------------------
    def __enter__(self) -> Cuda:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            for dev in range(self.device_count):
                with self.cp.cuda.Device(dev):
                    self.rt.deviceSynchronize()
        for dev, ptr in reversed(self._device_allocs):
            with contextlib.suppress(Exception), self.cp.cuda.Device(dev):
                self.rt.free(ptr)
        self._device_allocs.clear()
        for ptr in reversed(self._host_allocs):
            with contextlib.suppress(Exception):
                self.rt.freeHost(ptr)
        self._host_allocs.clear()

    # -- facts --------------------------------------------------------------------------------------
    def props(self, dev: int) -> dict[str, Any]:
        if dev not in self._props:
            self._props[dev] = self.rt.getDeviceProperties(dev)
        return self._props[dev]

    def sm_count(self, dev: int) -> int:
        return int(self.props(dev)["multiProcessorCount"])

    def mem_info(self, dev: int) -> tuple[int, int]:
        """(free, total) bytes on ``dev``."""
        with self.cp.cuda.Device(dev):
            free, total = self.rt.memGetInfo()
        return int(free), int(total)

    def versions(self) -> dict[str, str]:
        def fmt(v: int) -> str:
            return f"{v // 1000}.{(v % 1000) // 10}"

        return {"cuda_runtime_version": fmt(self.rt.runtimeGetVersion()),
                "cuda_driver_version": fmt(self.rt.driverGetVersion()),
                "cupy_version": self.cp.__version__}

    # -- memory -------------------------------------------------------------------------------------
    def device_alloc(self, dev: int, nbytes: int) -> int:
        with self.cp.cuda.Device(dev):
            ptr = int(self.rt.malloc(nbytes))
        self._device_allocs.append((dev, ptr))
        return ptr

    def host_alloc(self, nbytes: int, mapped: bool = True, cpus: list[int] | None = None) -> int:
        """Pinned host memory (portable, mapped for kernels), allocated from ``cpus`` (the GPU's NUMA node).

        The allocating thread is pinned to ``cpus`` for the call, so the pages come from the local node.
        """
        old = None
        if cpus:
            with contextlib.suppress(OSError):
                old = os.sched_getaffinity(0)
                os.sched_setaffinity(0, cpus)
        try:
            flags = HOST_ALLOC_PORTABLE | (HOST_ALLOC_MAPPED if mapped else 0)
            ptr = int(self.rt.hostAlloc(nbytes, flags))
        finally:
            if old is not None:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, old)
        self._host_allocs.append(ptr)
        return ptr

    def free(self, ptr: int) -> None:
        """Free one buffer early (device or pinned host)."""
        for i, (dev, p) in enumerate(self._device_allocs):
            if p == ptr:
                with self.cp.cuda.Device(dev):
                    self.rt.free(ptr)
                del self._device_allocs[i]
                return
        if ptr in self._host_allocs:
            self.rt.freeHost(ptr)
            self._host_allocs.remove(ptr)

    @contextlib.contextmanager
    def scoped(self) -> Iterator[None]:
        """Frees whatever is allocated inside the block when it ends."""
        d0, h0 = len(self._device_allocs), len(self._host_allocs)
        try:
            yield
        finally:
            self.synchronize_all()
            for dev, ptr in self._device_allocs[d0:]:
                with contextlib.suppress(Exception), self.cp.cuda.Device(dev):
                    self.rt.free(ptr)
            del self._device_allocs[d0:]
            for ptr in self._host_allocs[h0:]:
                with contextlib.suppress(Exception):
                    self.rt.freeHost(ptr)
            del self._host_allocs[h0:]

    # -- streams, events, kernels -------------------------------------------------------------------
    def stream(self, dev: int) -> Any:
        with self.cp.cuda.Device(dev):
            return self.cp.cuda.Stream(non_blocking=True)

    def event(self, dev: int) -> Any:
        with self.cp.cuda.Device(dev):
            return self.cp.cuda.Event()

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self.cp.cuda.get_elapsed_time(start, end))

    def kernel(self, name: str) -> Any:
        if name not in self._kernels:
            self._kernels[name] = self._module.get_function(name)
        return self._kernels[name]

    def launch(self, dev: int, name: str, grid: int, block: int, args: tuple, stream: Any) -> None:
        with self.cp.cuda.Device(dev):
            self.kernel(name)((grid,), (block,), args, stream=stream)

    def preload(self, devs: list[int]) -> None:
        """Compile and load every kernel on every device before timing (lazy loading can deadlock
        behind a blocked stream)."""
        for dev in devs:
            s = self.stream(dev)
            scratch = self.device_alloc(dev, 8192)
            self.fill(dev, scratch, 4096, 1, s)
            s.synchronize()
            if self.check(dev, scratch, 4096, 1) != 0:
                raise RuntimeError(f"GPU {dev}: the pattern check kernel disagrees with the fill kernel")
            other = scratch + 4096
            self.launch(dev, "copy_u4", 1, 32, (np.uint64(scratch), np.uint64(other), np.uint64(128)), s)
            self.launch(dev, "spin", 1, 1, (np.uint64(self._flag_ptr + 4), np.uint64(self._flag_ptr + 4),
                                             np.uint64(0)), s)
            self.launch(dev, "chase", 1, 1, (np.uint64(scratch), np.uint64(0), np.uint64(other)), s)
            s.synchronize()
            self.free(scratch)
            self._flag[1] = 0

    # -- blocked-stream start ----------------------------------------------------------------------
    def block(self, dev: int, stream: Any) -> None:
        """Enqueue the spin kernel: ``stream`` waits until :meth:`release`."""
        self.launch(dev, "spin", 1, 1, (np.uint64(self._flag_ptr), np.uint64(self._flag_ptr + 4),
                                         np.uint64(SPIN_TIMEOUT_CYCLES)), stream)

    def arm(self) -> None:
        self._flag[0] = 0
        self._flag[1] = 0

    def release(self) -> bool:
        """Let every blocked stream go. Returns False if a spin kernel timed out before (timing is suspect)."""
        self._flag[0] = 1
        return self._flag[1] == 0

    def spin_timed_out(self) -> bool:
        return self._flag[1] != 0

    # -- data patterns ------------------------------------------------------------------------------
    def _grid(self, dev: int) -> int:
        return self.sm_count(dev) * 4

    def fill(self, dev: int, ptr: int, nbytes: int, seed: int, stream: Any = None) -> None:
        """Write the verification pattern of ``seed`` into ``nbytes`` at ``ptr`` (device or mapped host)."""
        s = stream if stream is not None else self.stream(dev)
        self.launch(dev, "fill", self._grid(dev), 256, (np.uint64(ptr), np.uint64(nbytes // 4), np.uint32(seed)), s)
        if stream is None:
            s.synchronize()

    def check(self, dev: int, ptr: int, nbytes: int, seed: int) -> int:
        """Number of 4-byte words at ``ptr`` that differ from the pattern of ``seed`` (0 = verified)."""
        counter = self._counter(dev)
        with self.cp.cuda.Device(dev):
            self.rt.memset(counter, 0, 8)
            s = self.stream(dev)
            self.launch(dev, "check", self._grid(dev), 256,
                        (np.uint64(ptr), np.uint64(nbytes // 4), np.uint32(seed), np.uint64(counter)), s)
            s.synchronize()
            out = np.zeros(1, dtype=np.uint64)
            self.rt.memcpy(out.ctypes.data, counter, 8, MEMCPY_DEFAULT)
        return int(out[0])

    def _counter(self, dev: int) -> int:
        attr = f"_counter_{dev}"
        if not hasattr(self, attr):
            ptr = self.device_alloc(dev, 8)
            # counters live for the whole run: keep them out of scoped() frees
            self._device_allocs.remove((dev, ptr))
            setattr(self, attr, ptr)
        return getattr(self, attr)

    def memcpy(self, dst: int, src: int, nbytes: int) -> None:
        self.rt.memcpy(dst, src, nbytes, MEMCPY_DEFAULT)

    def memcpy_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self.rt.memcpyAsync(dst, src, nbytes, MEMCPY_DEFAULT, stream.ptr)

    def synchronize_all(self) -> None:
        for dev in range(self.device_count):
            with self.cp.cuda.Device(dev):
                self.rt.deviceSynchronize()

    # -- peers --------------------------------------------------------------------------------------
    def can_access_peer(self, dev: int, peer: int) -> bool:
        return bool(self.rt.deviceCanAccessPeer(dev, peer))

    def set_peer_access(self, dev: int, peer: int, enabled: bool) -> None:
        """Enable/disable ``dev``'s access to ``peer``'s memory; tolerates 'already enabled/disabled'."""
        with self.cp.cuda.Device(dev):
            try:
                if enabled:
                    self.rt.deviceEnablePeerAccess(peer)
                else:
                    self.rt.deviceDisablePeerAccess(peer)
            except self.rt.CUDARuntimeError as exc:
                msg = _cuda_msg(exc)
                if "AlreadyEnabled" in msg or "NotEnabled" in msg or "704" in msg or "705" in msg:
                    return
                raise


def _cuda_msg(exc: Exception) -> str:
    return str(exc).strip() or type(exc).__name__
