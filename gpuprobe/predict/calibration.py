"""Calibration: every factor of the memory and performance models that real vLLM runs should pin down.

Defaults come from published figures (each field says which); ``load_calibration`` / ``save_calibration``
read and write them as a versioned JSON file so ``gpuprobe recommend --calibration FILE`` can use factors
fitted from this box's own vLLM runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from gpuprobe.errors import UsageError
from gpuprobe.results.io import read_json, write_json_atomic
from gpuprobe.results.serde import SerdeError, from_data, to_data

CALIBRATION_KIND = "gpuprobe.calibration"
CALIBRATION_SCHEMA_VERSION = 1
GiB = 1 << 30
MiB = 1 << 20


@dataclass
class MemoryCalibration:
    """The terms of vLLM's startup memory accounting that gpuprobe cannot derive from shapes alone.

    How to pin each from one vLLM start (``vllm serve`` at default log level, plus
    ``VLLM_LOGGING_LEVEL=DEBUG`` for the profile breakdown):
    ``Model loading took X GiB`` checks weights; the debug ``memory_profiling`` result gives
    ``torch_peak_increase`` (activation peak) and ``non_torch_increase``; ``Estimated CUDA graph memory:
    X GiB total`` gives the graph estimate; ``Available KV cache memory`` and ``GPU KV cache size: N tokens``
    are the end result to hold the model against.
    """

    sampler_logits_copies: float = 9.58
    """Peak of the profile run's dummy sampler, in float32 copies of a [max_num_seqs, vocab] logits tensor.
    Fitted to three vLLM logs on H100 at max_num_seqs 1024 (llm-d config_explorer empirical results: peak
    activation 4.76 GiB Llama-3.1-8B, 5.56 GiB Qwen3-0.6B, 7.38 GiB gpt-oss-20b; all three within 0.5 %)."""
    forward_bytes_per_token_factor: float = 1.0
    """Scale on the forward-pass activation peak derived from the shapes (memory.forward_activation_bytes)."""
    non_torch_bytes: int = int(0.13 * GiB)
    """Memory outside torch that appears during profiling with tp = pp = 1 (cuBLAS/attention workspaces):
    0.13 GiB in the same H100 logs (Llama-3.1-8B, Qwen3-0.6B, gpt-oss-20b)."""
    non_torch_parallel_bytes: int = int(0.42 * GiB)
    """Extra non-torch memory when the rank is in a TP or PP group (NCCL buffers, custom all-reduce IPC
    buffers): Llama-3.3-70B-FP8 at TP2 logged 0.55 GiB vs 0.13 at TP1 (same source)."""
    cudagraph_bytes_per_capture_size: int = 8 * MiB
    """vLLM >= 0.21 subtracts an estimate of the CUDA-graph pool (``Estimated CUDA graph memory``) from the KV
    budget unless --enforce-eager. Modelled as bytes per capture size; published estimates for dense models
    are 0.36-0.61 GiB (vLLM 0.2x logs quoted in docs/sources.md and public serve logs)."""
    cudagraph_fixed_bytes: int = int(0.15 * GiB)
    """Fixed part of the CUDA-graph estimate (shared pool memory of the first captured graph)."""
    cuda_reserved_bytes: int | None = None
    """Override of NVML-total minus cudaMemGetInfo-total (None: the per-GPU default in gpu_specs)."""


@dataclass
class Calibration:
    """Efficiency factors of the performance model, with the spread used for the uncertainty band.

    Defaults of the speed terms (HBM and prefill efficiency, per-layer GPU floor, host overheads, request
    overhead) are a reference calibration: fitted (``gpuprobe validate --fit-calibration``) to the real vLLM
    0.26.0 runs of a 1B- and an 8B-shaped Llama, eager and CUDA graphs, on one H100 80GB HBM3 (2026-11-25,
    ``reports/h100-2026-11-25/validation-{1b,8b}.json``). They were checked on runs not used to set them
    (another host, two more models: ``reports/h100-2026-11-25/lease2/``). Other GPUs, hosts and vLLM versions
    should fit their own (``recommend --calibration``).
    """

    hbm_efficiency: float = 0.93
    """Decode: achieved bytes/s over the achievable HBM bandwidth (measured copy or 0.89 x datasheet).
    Reference fit (see the class docstring) 0.93, next to ``gpu_per_layer_us``; roofline studies of vLLM decode
    on H100 quote 75-90 % of copy bandwidth without a separate per-kernel term (BLIS, AIC mem_bw scaling 0.8)."""
    hbm_efficiency_range: list[float] = field(default_factory=lambda: [0.79, 1.0])
    prefill_compute_efficiency: float = 0.62
    """Prefill MFU against the dense datasheet peak (reference fit 0.62; BLIS roofline ~0.45; AIC GEMM tables
    0.5-0.7)."""
    prefill_compute_efficiency_range: list[float] = field(default_factory=lambda: [0.45, 0.79])
    decode_compute_efficiency: float = 0.35
    """MFU of small-batch GEMMs in decode when compute-bound (BLIS ~0.30)."""
    gpu_per_layer_us: float = 20.0
    """GPU time per layer per step that does not scale with bytes or FLOPs: the gaps between a layer's ~10
    kernels and the ramp of small ones (a few microseconds each, also inside a CUDA graph)."""
    step_overhead_ms: float = 2.4
    """Per-step fixed host cost that overlaps the forward with CUDA graphs: scheduler, input preparation."""
    step_serial_ms: float = 0.33
    """Per-step host cost that never overlaps the forward (sampled tokens back to the scheduler)."""
    seq_overhead_us: float = 4.2
    """Per-step host cost per running sequence (scheduling, block tables, input and output bookkeeping)."""
    eager_overhead_per_layer_us: float = 420.0
    """Extra host cost per layer per step without CUDA graphs (--enforce-eager): launching every kernel from
    Python. Varies by tens of percent between engine starts on the same VM (README, validation)."""
    prefill_overhead_per_layer_ms: float = 0.07
    """Per-layer fixed cost of a prefill forward (AIC uses 0.8 ms/layer for vLLM prefill dispatch on older
    versions; v1 with torch.compile is much lower)."""
    request_overhead_ms: float = 8.6
    """Fixed latency of a one-shot batch before its first scheduled step (request intake, engine-core IPC)
    and of handing the first token back; added to the TTFT and to the batch's total time."""
    allreduce_efficiency: float = 1.0
    """Multiplier on measured all-reduce times (> 1: slower inside vLLM than in the microbenchmark)."""
    p2p_efficiency: float = 0.8
    """NCCL send/recv bandwidth over copy-engine P2P bandwidth (PP stage boundaries)."""
    p2p_alpha_us: float = 10.0
    """Fixed cost of one PP send/recv (AIC p2p_latency 10 us)."""
    memory: MemoryCalibration = field(default_factory=MemoryCalibration)
    source: str = "defaults"
    """Where these factors came from: ``defaults`` or the file they were loaded from."""

    def variant(self, which: str) -> Calibration:
        """The pessimistic (``low``) or optimistic (``high``) end of the efficiency spread."""
        i = 0 if which == "low" else 1
        out = replace(self)
        out.hbm_efficiency = self.hbm_efficiency_range[i]
        out.prefill_compute_efficiency = self.prefill_compute_efficiency_range[i]
        scale = self.hbm_efficiency_range[i] / self.hbm_efficiency
        out.decode_compute_efficiency = self.decode_compute_efficiency * scale
        host = 1.5 if i == 0 else 0.7
        out.step_overhead_ms = self.step_overhead_ms * host
        out.step_serial_ms = self.step_serial_ms * host
        out.seq_overhead_us = self.seq_overhead_us * host
        out.eager_overhead_per_layer_us = self.eager_overhead_per_layer_us * host
        out.allreduce_efficiency = self.allreduce_efficiency * (1.25 if i == 0 else 0.9)
        return out


def load_calibration(path: str | os.PathLike[str]) -> Calibration:
    data = read_json(path, what="calibration file")
    if not isinstance(data, dict) or data.get("kind") != CALIBRATION_KIND:
        raise UsageError(f"{path} is not a gpuprobe calibration file (kind must be {CALIBRATION_KIND!r})")
    if data.get("schema_version") != CALIBRATION_SCHEMA_VERSION:
        raise UsageError(f"{path}: calibration schema version {data.get('schema_version')!r} is not supported")
    body = data.get("calibration")
    try:
        cal = from_data(Calibration, body)
    except SerdeError as exc:
        raise UsageError(f"{path} is damaged: {exc}") from None
    cal.source = str(path)
    return cal


def save_calibration(cal: Calibration, path: str | os.PathLike[str]) -> None:
    write_json_atomic(
        path, {"kind": CALIBRATION_KIND, "schema_version": CALIBRATION_SCHEMA_VERSION, "calibration": to_data(cal)}
    )
