"""The result model: the one contract between gpuprobe's stages (probe -> topology -> predict -> ...).

Everything here is a plain dataclass that round-trips through JSON losslessly (``gpuprobe.results.io``).
Units are in the field names or in ``Measurement.unit``: GB/s means 1e9 bytes per second, sizes are bytes.
A figure that could not be measured is ``None`` with a ``reason``, never a string such as "N/A".

This module imports nothing else from gpuprobe but ``results.run_info`` (the run header's shared fields).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from gpuprobe.results.run_info import RunInfoBase

SCHEMA_VERSION = 1
RESULTS_KIND = "gpuprobe.results"

MAX_DEVICES = 256
"""The most GPUs one results file (one host) may describe; a GPU index is below it. Larger counts in a file are
damage, and refusing them keeps every per-pair step of the later stages bounded."""
MAX_RANKS = 1 << 16
"""The most ranks one collective's group may have (a cluster's GPUs or CPU processes)."""
MAX_CPUS = 1 << 16
"""The most CPU cores an affinity list may name (CPU numbers are below it)."""

Status = Literal["ok", "waived", "error", "mismatch"]
"""ok: measured and verified; waived: not applicable on this system (reason says why);
error: the probe failed (reason); mismatch: measured but the copied data did not verify."""

Unit = Literal["GB/s", "us", "ns"]


@dataclass
class Stat:
    """Summary of a measurement's samples. ``median`` is the reported figure."""

    n: int
    median: float
    min: float
    max: float
    mean: float
    stdev: float
    cv: float
    """Coefficient of variation, stdev / mean (0 when n == 1)."""
    p95: float

    NONNEGATIVE: ClassVar[tuple[str, ...]] = ("n", "median", "min", "max", "mean", "stdev", "cv", "p95")
    """Every figure gpuprobe measures (bandwidths, times) is >= 0, and so is every summary of them."""


@dataclass
class Measurement:
    """One figure: a probe on one source/destination (or one GPU group and message size)."""

    probe: str
    """Registry key, e.g. ``host_to_device_memcpy_ce`` (nvbandwidth's name where one exists)."""
    status: Status
    unit: Unit
    src: str | None = None
    """Where the data comes from: ``host``, ``gpu0``, ... (None for collectives)."""
    dst: str | None = None
    initiator: str | None = None
    """Whose context/stream issues the copy (read: the destination GPU; write: the source GPU)."""
    direction: str | None = None
    """``h2d``, ``d2h``, ``d2d``, ``local`` or ``collective``."""
    engine: str | None = None
    """``ce`` (copy engine), ``sm`` (copy kernel), ``staged`` (through host), ``nccl``, ``gloo``."""
    traffic: Literal["unidirectional", "bidirectional"] = "unidirectional"
    """Bidirectional: reverse traffic ran at the same time; the figure is the measured direction only."""
    host_memory: str | None = None
    """``pinned`` or ``pageable`` for host buffers."""
    size_bytes: int | None = None
    """Bytes per copy (or message size for collectives) that the figure is computed from."""
    samples: list[float] = field(default_factory=list)
    """Every sample, in ``unit``."""
    stat: Stat | None = None
    verified: bool | None = None
    """True when every copied byte was checked against the expected pattern and matched."""
    wrong_elements: int | None = None
    path_class: str | None = None
    """Link crossed, in ``nvidia-smi topo -m`` vocabulary (NV#, PIX, PXB, PHB, NODE, SYS) or ``PCIe``/``HBM``."""
    ranks: list[int] | None = None
    """GPU indices (or CPU process ranks) of a collective's group."""
    algbw_gbps: float | None = None
    busbw_gbps: float | None = None
    reverse_gbps: float | None = None
    """Bidirectional host copies: the reverse direction's rate, median over its own window (None for one-way
    copies, other tools' outputs and files written before this field). Also in ``notes`` (``reverse_note``);
    read it through ``reverse_rate_gbps()``, which falls back to that note in older files."""
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    duration_s: float | None = None
    """Wall time this measurement took, setup and verification included."""

    NONNEGATIVE: ClassVar[tuple[str, ...]] = ("samples", "wrong_elements")
    """Bandwidths and times are >= 0 (the unit is in ``unit``, not in the name)."""

    @property
    def value(self) -> float | None:
        """The reported figure (median of the samples), or None if nothing was measured."""
        return self.stat.median if self.stat else None

    def reverse_rate_gbps(self) -> float | None:
        """The reverse direction's rate of a bidirectional copy, in files of any version (older ones state it
        only in ``notes``); None when neither says."""
        if self.reverse_gbps is not None:
            return self.reverse_gbps
        for note in self.notes:
            if note.startswith(REVERSE_RAN):
                with contextlib.suppress(ValueError):
                    return float(note.removeprefix(REVERSE_RAN).split()[0])
        return None


REVERSE_RAN = "reverse direction ran at "
"""How a bidirectional copy's ``notes`` state the reverse direction's rate (``Measurement.reverse_gbps``)."""


def reverse_note(gbps: float) -> str:
    """The note of a bidirectional copy's reverse rate, as the probe writes it."""
    return f"{REVERSE_RAN}{gbps:.2f} GB/s (median over its own window)"


CUDA_SKIPPED = "CUDA probes skipped: "
"""How ``problems`` states that the CUDA probes did not run (``Results.cuda_unavailable`` holds the reason)."""


def gpu_index(endpoint: str | None) -> int | None:
    """The index of a ``gpuN`` endpoint name (``src``, ``dst``, ``initiator``, graph nodes); None for another."""
    if endpoint and endpoint.startswith("gpu") and endpoint[3:].isdigit():
        return int(endpoint[3:])
    return None


def now_utc() -> str:
    """The time stamps of every document: UTC, ISO 8601, to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class RunInfo(RunInfoBase):
    """Where, when and with what a results file was made (the shared fields first: ``RunInfoBase``)."""

    driver_version: str | None = None
    cuda_driver_version: str | None = None
    cuda_runtime_version: str | None = None
    torch_version: str | None = None
    nccl_version: str | None = None
    cupy_version: str | None = None
    virtual_machine: bool | None = None
    command: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    source: str = "gpuprobe"
    """``gpuprobe`` for its own runs; ``nvbandwidth``, ``nccl-tests``, ... for imported outputs."""


@dataclass
class NvLink:
    link: int
    active: bool
    version: int | None = None
    remote_pci_bus_id: str | None = None


@dataclass
class DeviceInfo:
    """Facts about one GPU (NVML and CUDA). None means the driver did not say."""

    index: int
    name: str
    uuid: str | None = None
    pci_bus_id: str | None = None
    memory_total_bytes: int | None = None
    compute_capability: str | None = None
    multiprocessor_count: int | None = None
    sm_clock_max_mhz: int | None = None
    mem_clock_max_mhz: int | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    persistence_mode: bool | None = None
    ecc_enabled: bool | None = None
    ecc_errors_uncorrected: int | None = None
    power_limit_w: float | None = None
    pcie_gen_current: int | None = None
    pcie_gen_max: int | None = None
    pcie_width_current: int | None = None
    pcie_width_max: int | None = None
    pcie_replay_counter: int | None = None
    numa_node: int | None = None
    cpu_affinity: list[int] | None = None
    nvlinks: list[NvLink] = field(default_factory=list)


@dataclass
class GpuPair:
    """How two GPUs are connected (unordered pair, a < b)."""

    a: int
    b: int
    path_class: str
    """``nvidia-smi topo -m`` vocabulary: NV#, PIX, PXB, PHB, NODE, SYS (or ``unknown``)."""
    nvlink_count: int = 0
    p2p_nvml: dict[str, str] = field(default_factory=dict)
    """NVML P2P status per capability (read, write, nvlink, atomics): ``ok`` or the reason it is not."""
    cuda_peer_access: bool | None = None


@dataclass
class Topology:
    gpu_count: int
    pairs: list[GpuPair] = field(default_factory=list)
    source: str = "nvml"
    unavailable: list[str] = field(default_factory=list)
    """NVML queries the driver did not answer (e.g. NVLink state on a PCIe GPU), each once."""


@dataclass
class Results:
    """A probe run: the facts, the topology and every measurement (in the order they were made)."""

    run: RunInfo
    devices: list[DeviceInfo] = field(default_factory=list)
    topology: Topology | None = None
    measurements: list[Measurement] = field(default_factory=list)
    status: Literal["running", "complete", "partial", "interrupted", "error"] = "running"
    problems: list[str] = field(default_factory=list)
    """Run-level problems in one line each (a probe that crashed, an interrupt, ...)."""
    cuda_unavailable: str | None = None
    """Why the CUDA probes did not run (no GPU, no driver, CuPy missing); None when CUDA was there or not needed.
    Also listed in ``problems`` as ``CUDA probes skipped: <reason>``."""
    notes: list[str] = field(default_factory=list)
    """Run-level notes (buffers reduced to fit memory, ...)."""
    probe_seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each probe (setup, timing and verification), by probe key."""
    setup_seconds: float | None = None
    """Time spent before the first probe (NVML inventory, CUDA context, kernel compilation)."""
    cluster: Cluster | None = None
    """A run over several nodes (``gpuprobe.cluster`` section): every node's results, the links between them and
    the collectives over them; None for a one-node run (and in files written before it existed)."""
    kind: str = RESULTS_KIND
    schema_version: int = SCHEMA_VERSION

    def find(self, probe: str, **match: Any) -> list[Measurement]:
        """Measurements of ``probe`` whose fields equal ``match`` (e.g. ``src="host"``)."""
        return [
            m for m in self.measurements if m.probe == probe and all(getattr(m, k) == v for k, v in match.items())
        ]


    def cuda_skip_reason(self) -> str | None:
        """Why the CUDA probes did not run, in files of any version (older ones say it only in ``problems``)."""
        if self.cuda_unavailable is not None:
            return self.cuda_unavailable
        return next((p.removeprefix(CUDA_SKIPPED) for p in self.problems if p.startswith(CUDA_SKIPPED)), None)


CLUSTER_KIND = "gpuprobe.cluster"
CLUSTER_SCHEMA_VERSION = 1
"""Version of the ``Results.cluster`` section (its own, so the one-node results schema stays unchanged)."""


@dataclass
class Nic:
    """A network interface of a node (``/sys/class/net``, ``/sys/class/infiniband``). None: the system did not say."""

    name: str
    kind: str
    """``ethernet``, ``infiniband`` (an RDMA device's port) or another ``/sys/class/net`` type."""
    state: str | None = None
    """``up``/``down`` (operstate) or the RDMA port's state (``ACTIVE``, ``DOWN``, ...)."""
    link_rate_gbps: float | None = None
    """Link rate in Gbit/s (10⁹ bit/s) as the driver reports it (not measured)."""
    pci_bus_id: str | None = None
    nearest_gpus: list[int] | None = None
    """GPU indices sharing the deepest PCIe switch with the NIC; None when PCI paths are unknown."""
    rdma_device: str | None = None
    """The RDMA device behind a network interface (``mlx5_0``), or the net device of an RDMA port."""


@dataclass
class ClusterNode:
    """One node of the cluster run (one process per node)."""

    rank: int
    name: str
    status: Literal["ok", "missing", "lost"]
    """ok: its results arrived and it stayed to the end; missing: its results never arrived (killed, hung or
    crashed before its local probes ended); lost: its results arrived, then it stopped answering."""
    reason: str | None = None
    results: Results | None = None
    """The node's own run (``cluster`` is None inside it)."""
    nics: list[Nic] = field(default_factory=list)
    gpudirect_rdma: bool | None = None
    """True when the ``nvidia_peermem`` module is loaded (GPUDirect RDMA); None when that cannot be read."""


@dataclass
class Cluster:
    """The cluster section: nodes, node-to-node links and collectives over the nodes."""

    launcher: str
    """``torchrun``, ``slurm``, ``mpi`` or ``env`` (RANK/WORLD_SIZE/MASTER_ADDR set by hand)."""
    world_size: int
    backend: str
    """``gloo`` or ``nccl``: the process group of the cluster phase (one process per node)."""
    master_addr: str
    master_port: int
    timeout_s: float
    """How long a node may be late (or silent) before it is named missing or lost."""
    nodes: list[ClusterNode] = field(default_factory=list)
    links: list[Measurement] = field(default_factory=list)
    """``node_p2p_bandwidth`` (GB/s) and ``node_p2p_latency`` (µs, half a round trip) per ordered node pair:
    ``src`` sends, ``dst`` receives (names of ``nodes``)."""
    collectives: list[Measurement] = field(default_factory=list)
    """``all_reduce`` over the nodes; ``ranks`` are node ranks."""
    problems: list[str] = field(default_factory=list)
    kind: str = CLUSTER_KIND
    schema_version: int = CLUSTER_SCHEMA_VERSION

    def node_name(self, rank: int) -> str:
        return next((n.name for n in self.nodes if n.rank == rank), f"rank{rank}")
