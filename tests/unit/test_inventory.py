"""Inventory: the pure mapping rules (tables) and device/topology collection from the recorded H100 snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprobe.errors import NoGpu
from gpuprobe.system.inventory import (
    NVLINK_DEVICE_GPU,
    NVLINK_DEVICE_SWITCH,
    bus_id_key,
    collect_devices,
    collect_topology,
    combine_p2p,
    device_count,
    driver_info,
    ids_from_mask,
    load_system,
    nvlink_counts,
    p2p_status_text,
    path_class,
)
from gpuprobe.system.nvml import SNAPSHOT_KIND, ReplayNvml

H100_SNAPSHOT = Path(__file__).parents[1] / "data" / "nvml-h100-2026-11-25.json"


@pytest.fixture
def h100() -> ReplayNvml:
    return ReplayNvml.from_file(H100_SNAPSHOT)


@pytest.mark.parametrize(
    "level, links, expected",
    [
        (0, 0, "PIX"),  # INTERNAL
        (10, 0, "PIX"),  # SINGLE
        (20, 0, "PXB"),  # MULTIPLE
        (30, 0, "PHB"),  # HOSTBRIDGE
        (40, 0, "NODE"),
        (50, 0, "SYS"),
        (None, 0, "unknown"),
        (35, 0, "unknown"),
        (50, 4, "NV4"),  # NVLink wins over any PCIe path
        (None, 18, "NV18"),
    ],
)
def test_path_class(level, links, expected):
    assert path_class(level, links) == expected


@pytest.mark.parametrize(
    "code, text",
    [
        (0, "ok"),
        (1, "chipset not supported"),
        (2, "GPU not supported"),
        (3, "topology not supported"),
        (4, "disabled by regkey"),
        (5, "not supported"),
        (6, "unknown"),
        (9, "unknown status 9"),
        (None, "not reported by the driver"),
    ],
)
def test_p2p_status_text(code, text):
    assert p2p_status_text(code) == text


def test_combine_p2p():
    assert combine_p2p("ok", "ok") == "ok"
    assert combine_p2p("ok", "disabled by regkey") == "a->b ok; b->a disabled by regkey"


@pytest.mark.parametrize(
    "words, ids",
    [
        ([65535, 0], list(range(16))),  # the H100 VM's mask: CPUs 0-15
        ([0, 1], [64]),
        ([0b1010], [1, 3]),
        ([], []),
    ],
)
def test_ids_from_mask(words, ids):
    assert ids_from_mask(words) == ids


@pytest.mark.parametrize(
    "text, key",
    [
        ("00000000:18:00.0", (0, 0x18, 0, 0)),
        ("0000:18:00.0", (0, 0x18, 0, 0)),
        ("00000001:AF:1f.7", (1, 0xAF, 0x1F, 7)),
        ("18:00", (0, 0x18, 0, 0)),
        ("garbage", None),
        (None, None),
    ],
)
def test_bus_id_key(text, key):
    assert bus_id_key(text) == key


# Derived inputs for nvlink_counts: bus ids and link lists written to show each rule, not recordings.
BUS = {0: "00000000:18:00.0", 1: "00000000:2A:00.0", 2: "00000000:3A:00.0", 3: "00000000:5D:00.0"}


def test_nvlink_counts_direct_bridges():
    links = {
        0: [(BUS[1], NVLINK_DEVICE_GPU)] * 4,
        1: [("0000:18:00.0", NVLINK_DEVICE_GPU)] * 4,  # other spelling of GPU0's bus id
        2: [(BUS[3], None)] * 2,  # remote type not reported: the bus id decides
        3: [],  # seen from one side only: still counted
    }
    assert nvlink_counts(links, BUS) == {(0, 1): 4, (2, 3): 2}


def test_nvlink_counts_through_switches():
    switch = "00000000:C1:00.0"
    links = {i: [(switch, NVLINK_DEVICE_SWITCH)] * 18 for i in range(4)}
    links[3] = links[3][:16]  # two links down on GPU3
    counts = nvlink_counts(links, BUS)
    assert counts[(0, 1)] == 18 and counts[(0, 3)] == 16 and len(counts) == 6


def test_nvlink_counts_ignores_unknown_remotes():
    links = {0: [("00000000:99:00.0", None)], 1: []}
    assert nvlink_counts(links, BUS) == {}


def test_collect_devices_from_h100_snapshot(h100):
    (d,) = collect_devices(h100)
    assert d.name == "NVIDIA H100 80GB HBM3"
    assert d.pci_bus_id == "00000000:00:06.0"
    assert d.uuid and d.uuid.startswith("GPU-")
    assert d.memory_total_bytes == 85520809984
    assert d.compute_capability == "9.0"
    assert d.multiprocessor_count is None
    assert (d.pcie_gen_current, d.pcie_gen_max, d.pcie_width_current, d.pcie_width_max) == (5, 5, 16, 16)
    assert d.pcie_replay_counter == 0
    assert d.sm_clock_max_mhz == 1980 and d.mem_clock_max_mhz == 2619
    assert d.persistence_mode is True and d.ecc_enabled is True and d.ecc_errors_uncorrected == 0
    assert d.power_limit_w == 700.0
    assert d.numa_node == 0  # nvidia-smi topo -m on that machine: NUMA Affinity 0
    assert d.cpu_affinity == list(range(16))  # nvidia-smi: CPU Affinity 0-15
    assert d.nvlinks == []  # PCIe H100: NVLink state not supported


def test_collect_topology_from_h100_snapshot(h100):
    devices = collect_devices(h100)
    topo = collect_topology(h100, devices)
    assert topo.gpu_count == 1 and topo.pairs == []
    assert topo.source == "nvml-snapshot"
    assert topo.unavailable == ["nvmlDeviceGetNvLinkState: not supported"]
    assert driver_info(h100) == {"driver_version": "580.159.04", "cuda_driver_version": "13.0"}


def test_load_system_from_snapshot_file():
    facts = load_system(nvml_snapshot=H100_SNAPSHOT)
    assert len(facts.devices) == 1 and facts.driver["driver_version"] == "580.159.04"
    assert str(H100_SNAPSHOT) in facts.origin


def test_no_gpu_from_a_zero_count():
    # Constructed snapshot: NVML answering a device count of 0.
    nvml = ReplayNvml({"kind": SNAPSHOT_KIND, "schema_version": 1, "calls": {"nvmlDeviceGetCount()": {"value": 0}}})
    with pytest.raises(NoGpu):
        device_count(nvml)


def test_load_system_from_the_h200_snapshot():
    """NVML recorded on one H200 in a virtual machine (2026-12-01, driver 580.159.04): one GPU on PCIe."""
    snapshot = Path(__file__).parents[1] / "data" / "nvml-h200-2026-12-01.json"
    facts = load_system(nvml_snapshot=snapshot)
    [gpu] = facts.devices
    assert gpu.name == "NVIDIA H200" and facts.driver["driver_version"] == "580.159.04"
    assert facts.topology is not None and facts.topology.gpu_count == 1 and facts.topology.pairs == []
