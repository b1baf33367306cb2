"""Datasheet figures for common GPUs: used for compute peaks (never measured by gpuprobe) and for
systems described by name (``--gpu H100-SXM --num-gpus 8``), where every figure is labelled ``spec``.

Sources: NVIDIA product datasheets (H100 SXM/PCIe/NVL, H200, A100, L40S, L4, A10) and the Ada
architecture whitepaper (RTX 4090). TFLOP/s are dense (no sparsity) tensor-core figures; bf16 uses
FP32 accumulation. ``nvml_memory_mib`` is what NVML / ``nvidia-smi`` reports as total memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpuprobe.errors import UsageError

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class GpuSpec:
    key: str
    """Short name accepted by ``--gpu`` (case-insensitive, '-' or '_' optional)."""
    marketing_name: str
    name_pattern: str
    """Regular expression matched against the NVML device name."""
    nvml_memory_mib: int
    hbm_gbps: float
    bf16_tflops: float
    fp8_tflops: float | None
    nvlink_gbps: float
    """NVLink bandwidth per direction per GPU (0: none); all GPUs of a node reach each other through NVSwitch."""
    pcie_gen: int
    p2p_supported: bool = True
    """False where the driver disables PCIe peer-to-peer (GeForce cards)."""
    sm: str = "9.0"

    @property
    def pcie_gbps(self) -> float:
        """PCIe x16 line rate per direction (GB/s)."""
        return {3: 15.75, 4: 31.5, 5: 63.0}.get(self.pcie_gen, 31.5)


GPU_SPECS: tuple[GpuSpec, ...] = (
    GpuSpec("H100-SXM", "H100 SXM 80GB", r"H100.*(HBM3|SXM)|H100 80GB", 81559, 3350, 989.4, 1978.9, 450, 5),
    GpuSpec("H100-NVL", "H100 NVL 94GB", r"H100 NVL", 95830, 3900, 835.0, 1670.0, 0, 5),
    GpuSpec("H100-PCIe", "H100 PCIe 80GB", r"H100.*PCIe", 81559, 2000, 756.0, 1513.0, 0, 5),
    GpuSpec("H200", "H200 SXM 141GB", r"H200", 143771, 4800, 989.4, 1978.9, 450, 5),
    GpuSpec("A100-80G", "A100 SXM 80GB", r"A100.*SXM.*80|A100 80GB(?!.*PCIe)", 81920, 2039, 312.0, None, 300, 4,
            sm="8.0"),
    GpuSpec("A100-40G", "A100 SXM 40GB", r"A100.*SXM.*40|A100-SXM4-40GB", 40960, 1555, 312.0, None, 300, 4,
            sm="8.0"),
    GpuSpec("A100-PCIe-80G", "A100 PCIe 80GB", r"A100.*80GB.*PCIe|A100-PCIE-80GB", 81920, 1935, 312.0, None, 0, 4,
            sm="8.0"),
    GpuSpec("A100-PCIe-40G", "A100 PCIe 40GB", r"A100-PCIE-40GB|A100.*40GB.*PCIe", 40960, 1555, 312.0, None, 0, 4,
            sm="8.0"),
    GpuSpec("L40S", "L40S 48GB", r"L40S", 46068, 864, 362.05, 733.0, 0, 4, sm="8.9"),
    GpuSpec("L4", "L4 24GB", r"\bL4\b", 23034, 300, 121.0, 242.5, 0, 4, sm="8.9"),
    GpuSpec("A10", "A10 24GB", r"\bA10\b", 23028, 600, 125.0, None, 0, 4, sm="8.6"),
    GpuSpec("RTX-4090", "GeForce RTX 4090 24GB", r"RTX 4090", 24564, 1008, 165.2, 330.3, 0, 4, p2p_supported=False,
            sm="8.9"),
)

CUDA_RESERVED_BYTES: dict[str, int] = {"H100-SXM": int(0.47 * GiB), "H200": int(0.60 * GiB)}
"""NVML total minus what ``cudaMemGetInfo`` (and so vLLM) reports as total. H100 80GB HBM3: NVML 81,559 MiB
(79.65 GiB) vs 79.18 GiB in vLLM's own log ("Free memory on device (78.57/79.18 GiB)", llm-d
config_explorer/empirical-vllm-memory-results.md). H200: NVML 143,771 MiB (140.40 GiB) vs 139.80 GiB in vLLM
0.26's log on the H200 used here (2026-12-01). Other GPUs use DEFAULT_CUDA_RESERVED_BYTES."""

DEFAULT_CUDA_RESERVED_BYTES = int(0.45 * GiB)


def _norm(s: str) -> str:
    return re.sub(r"[\s_\-]", "", s).lower()


def spec_by_key(key: str) -> GpuSpec:
    """The spec for a ``--gpu`` name; UsageError listing the known names otherwise."""
    k = _norm(key)
    for spec in GPU_SPECS:
        if _norm(spec.key) == k:
            return spec
    for spec in GPU_SPECS:
        if re.search(spec.name_pattern, key, re.IGNORECASE):
            return spec
    known = ", ".join(s.key for s in GPU_SPECS)
    raise UsageError(f"unknown GPU {key[:40]!r}; known: {known}")


def spec_for_device_name(name: str) -> GpuSpec | None:
    """Match an NVML device name (e.g. ``NVIDIA H100 80GB HBM3``) to a spec; None if unknown."""
    for spec in GPU_SPECS:
        if re.search(spec.name_pattern, name, re.IGNORECASE):
            return spec
    return None


def cuda_visible_bytes(spec: GpuSpec | None, nvml_total_bytes: int) -> int:
    """Total memory vLLM sees (``torch.cuda.mem_get_info()[1]``) for a GPU whose NVML total is given."""
    reserved = CUDA_RESERVED_BYTES.get(spec.key, DEFAULT_CUDA_RESERVED_BYTES) if spec else DEFAULT_CUDA_RESERVED_BYTES
    return nvml_total_bytes - reserved
