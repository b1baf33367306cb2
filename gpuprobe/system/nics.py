"""A node's network interfaces from sysfs (no timing): ``/sys/class/net`` (name, type, operstate, speed),
``/sys/class/infiniband`` (RDMA ports: state, rate), the GPUs nearest each NIC on the PCIe tree, and whether
GPUDirect RDMA's ``nvidia_peermem`` module is loaded. ``root`` points at a fake sysfs in tests."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from gpuprobe.results.model import DeviceInfo, Nic

_NET_TYPES = {"1": "ethernet", "32": "infiniband", "772": "loopback"}


def _read(path: Path) -> str | None:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return path.read_text().strip()
    return None


def _pci_path(device_link: Path) -> list[str] | None:
    """The chain of PCI addresses from the root complex down to a device (its resolved sysfs path)."""
    with contextlib.suppress(OSError):
        parts = [p for p in Path(os.path.realpath(device_link)).parts if re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:"
                                                                                      r"[0-9a-f]{2}\.[0-9a-f]", p)]
        return parts or None
    return None


def _norm_bus_id(bus_id: str) -> str:
    """NVML's ``00000000:3B:00.0`` as sysfs writes it, ``0000:3b:00.0``."""
    b = bus_id.lower()
    return b[-12:] if len(b) > 12 else b


def _common(a: list[str], b: list[str]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def nearest_gpus(nic_path: list[str] | None, gpu_paths: dict[int, list[str]]) -> list[int] | None:
    """GPUs sharing the most PCI bridges with the NIC (at least one besides the root port); [] when none does."""
    if nic_path is None or not gpu_paths:
        return None
    shared = {g: _common(nic_path[:-1], p[:-1]) for g, p in gpu_paths.items()}
    best = max(shared.values())
    return sorted(g for g, s in shared.items() if s == best) if best >= 1 else []


def read_nics(devices: list[DeviceInfo] | None = None, root: str | os.PathLike[str] = "/") -> list[Nic]:
    """Every non-loopback network interface and every RDMA port under ``root``."""
    base = Path(root)
    gpu_paths: dict[int, list[str]] = {}
    for d in devices or []:
        if d.pci_bus_id:
            p = _pci_path(base / "sys/bus/pci/devices" / _norm_bus_id(d.pci_bus_id))
            if p:
                gpu_paths[d.index] = p
    nics: list[Nic] = []
    rdma_of_net: dict[str, str] = {}
    ib = base / "sys/class/infiniband"
    net = base / "sys/class/net"
    if ib.is_dir():
        for dev in sorted(ib.iterdir()):
            netdirs = sorted((dev / "device" / "net").glob("*")) if (dev / "device" / "net").is_dir() else []
            for nd in netdirs:
                rdma_of_net[nd.name] = dev.name
    if net.is_dir():
        for iface in sorted(net.iterdir()):
            kind = _NET_TYPES.get(_read(iface / "type") or "", "other")
            if kind == "loopback" or iface.name == "lo":
                continue
            speed = _read(iface / "speed")
            rate = float(speed) / 1000 if speed and speed.lstrip("-").isdigit() and int(speed) > 0 else None
            path = _pci_path(iface / "device") if (iface / "device").exists() else None
            nics.append(Nic(name=iface.name, kind=kind, state=_read(iface / "operstate"), link_rate_gbps=rate,
                            pci_bus_id=path[-1] if path else None, nearest_gpus=nearest_gpus(path, gpu_paths),
                            rdma_device=rdma_of_net.get(iface.name)))
    if ib.is_dir():
        for dev in sorted(ib.iterdir()):
            path = _pci_path(dev / "device") if (dev / "device").exists() else None
            net_name = next((n for n, d in rdma_of_net.items() if d == dev.name), None)
            for port in sorted((dev / "ports").glob("*")) if (dev / "ports").is_dir() else []:
                state = _read(port / "state")
                rate_text = _read(port / "rate")
                m = re.match(r"([\d.]+)\s*Gb/sec", rate_text or "")
                layer = (_read(port / "link_layer") or "infiniband").lower()
                nics.append(Nic(name=f"{dev.name}/{port.name}", kind="infiniband" if layer == "infiniband" else
                                f"rdma-{layer}", state=state.split(":")[-1].strip() if state else None,
                                link_rate_gbps=float(m.group(1)) if m else None,
                                pci_bus_id=path[-1] if path else None, nearest_gpus=nearest_gpus(path, gpu_paths),
                                rdma_device=net_name))
    return nics


def gpudirect_rdma(root: str | os.PathLike[str] = "/") -> bool | None:
    """True when ``nvidia_peermem`` is loaded, False when not, None when the module list cannot be read."""
    base = Path(root)
    if (base / "sys/module/nvidia_peermem").exists():
        return True
    modules = _read(base / "proc/modules")
    if modules is None:
        return None
    return any(line.split()[0] == "nvidia_peermem" for line in modules.splitlines() if line.strip())
