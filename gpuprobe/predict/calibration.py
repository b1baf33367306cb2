"""Calibration: every factor of the memory and performance models that real vLLM runs should pin down.

Defaults come from published figures (each field says which); ``load_calibration`` / ``save_calibration``
read and write them as a versioned JSON file so ``gpuprobe recommend --calibration FILE`` can use factors
fitted from this box's own vLLM runs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import ClassVar

from gpuprobe.results.io import document_from_data, read_json, write_json_atomic
from gpuprobe.results.serde import to_data

CALIBRATION_KIND = "gpuprobe.calibration"
CALIBRATION_SCHEMA_VERSION = 2
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

    sampler_bytes_per_logit: float = 2.0
    """Peak of the profile run's dummy sampler per element of its [min(max_num_seqs, max_num_batched_tokens),
    vocab] logits in vLLM 0.26's V2 GPU model runner (dense models): bf16 logits, sampled in place, 2 bytes.
    Measured on an H200 (2026-12-01): the activation peak of Llama-3.1-8B-, Qwen2.5-14B- and Llama-3.2-1B-shaped
    engines did not change between max_num_seqs 1 and 1024 (the forward's peak is larger)."""
    sampler_bytes_per_logit_v1: float = 21.4
    """The same in the V1 model runner, which vLLM 0.26 keeps for most MoE models (``memory.model_runner``): the
    dummy sampler runs twice with top-k/top-p over float32 copies (logits, probabilities, noise). 21.4 bytes
    from the Qwen3-30B-A3B-shaped engine on the H200 (3.21 GiB peak activation at max_num_seqs 1024, vocabulary
    151,936)."""
    forward_bytes_per_token_factor: float = 1.0
    """Scale on the forward-pass activation peak derived from the shapes (memory.forward_activation_bytes)."""
    activation_fixed_bytes: int = int(0.04 * GiB)
    """Part of the activation peak that does not grow with the tokens of the profile run: 0.04 GiB, the
    intercept of the peaks measured at 2,048 / 8,192 / 16,384 tokens on the H200."""
    non_torch_bytes: int = int(0.22 * GiB)
    """Memory outside torch that appears during profiling with tp = pp = 1 (cuBLAS and attention workspaces):
    0.22 GiB in every H200 engine of vLLM 0.26 (2026-12-01); older vLLM logs on H100 showed 0.13 GiB."""
    non_torch_parallel_bytes: int = int(0.42 * GiB)
    """Extra non-torch memory when the rank is in a TP or PP group (NCCL buffers, custom all-reduce IPC
    buffers): Llama-3.3-70B-FP8 at TP2 logged 0.55 GiB vs 0.13 at TP1 (same source)."""
    cudagraph_bytes_per_capture_size: int = 8 * MiB
    """The estimate of the CUDA-graph pool that the V1 model runner subtracts from the KV budget unless eager
    (``Estimated CUDA graph memory``), per capture size; the V2 runner subtracts none (``profile_cudagraph_memory``
    returns 0, confirmed by its H100 and H200 logs: available KV = budget − weights − activation − non-torch to the
    logged 0.01 GiB). With the default 67 capture sizes this gives 0.67 GiB; the Qwen3-30B-A3B engine logged
    0.64."""
    cudagraph_fixed_bytes: int = int(0.15 * GiB)
    """Fixed part of that estimate (the first captured graph's share of the pool)."""
    cuda_reserved_bytes: int | None = None
    """Override of NVML-total minus cudaMemGetInfo-total (None: the per-GPU default in gpu_specs)."""


@dataclass
class Calibration:
    """The factors of the step-time and front-end models (``gpuprobe.predict.stepcost``,
    ``gpuprobe.predict.simulate``), and the uncertainty band measured on the runs they were fitted to.

    The defaults are a reference calibration: fitted (``python benchmarks/predictor_accuracy.py --fit``) to
    real vLLM 0.26.0 runs of Llama-3.2-1B- and Llama-3.1-8B-shaped engines (offline on an H100 and an H200, eager
    and CUDA graphs, and served on the H200), a Qwen3-30B-A3B (MoE) and a Qwen3-8B-FP8 engine offline on the H200
    (tests/data/vllm-h200-2026-12-01, -12-02, tests/data/vllm-h100-2026-11-25), and scored there on runs never
    used to fit them (other models, other machines, serving of the MoE and FP8 models). Another box, GPU or vLLM
    version can fit its own (``validate --fit-calibration``, then ``recommend --calibration``).
    """

    hbm_efficiency: float = 0.9645218
    """Achieved bytes/s of a step over the achievable HBM bandwidth (measured copy, or 0.89 x datasheet)."""
    prefill_compute_efficiency: float = 0.8219431
    """GEMM FLOP/s over the datasheet peak in steps that carry prompt tokens."""
    decode_compute_efficiency: float = 0.4018322
    """GEMM FLOP/s over the peak in decode-only steps (small, skinny GEMMs)."""
    gemm_half_hidden: float = 1135.847
    """GEMMs of small models reach less of the peak: both compute efficiencies are scaled by h / (h + this),
    h the hidden size (1.0 for a very wide model)."""
    attention_efficiency: float = 0.7575466
    """Prompt attention FLOP/s over the bf16 peak (FlashAttention on long prompts), for the causal FLOP count
    (4 x layers x heads x head_dim x n(n + 1)/2). An effective factor: the model's other prefill terms absorb
    part of the cost of long prompts."""
    roofline_sharpness: float = 4.0
    """How compute and memory time join: (a^k + b^k)^(1/k); large k is the plain max."""
    fp8_gemm_efficiency: float = 0.7349706
    """FP8 GEMM FLOP/s over (the FP8 peak x the compute efficiencies above): what FP8 weights really gain."""
    gpu_per_layer_us: float = 29.79121
    """GPU time per Llama-style layer (ten kernels) per step that scales with neither bytes nor FLOPs (kernel gaps
    and tails); a layer with more kernels (q/k norms) takes its share more (``stepcost.layer_kernels``)."""
    fp8_per_layer_us: float = 9.278531
    """Extra GPU time per layer with FP8 weights (the activation-quantization kernels before each GEMM). Fitted;
    the four quantization kernels of a Qwen3-8B or Qwen3-14B layer measure about 9 us together at decode sizes
    (``scripts/fp8_block_gemm.py --graph``)."""
    fp8_unaligned_gemm_efficiency: float = 0.112
    """Block-scaled FP8 GEMM FLOP/s over the FP8 peak on Hopper when a step's token count is not a multiple of 4
    and above ``stepcost.FP8_SHORT_STEP_TOKENS``: vLLM 0.26's CUTLASS kernel then runs at about 200-240 TFLOP/s on
    an H200, slower than BF16, whatever the other factors say. Measured, not fitted, twice: ``scripts/
    fp8_block_gemm.py`` on an H200 (machine 10), Qwen3-8B's four linear layers together, 3,073 to 16,383 tokens
    (0.103-0.123); and ``scripts/fp8_prompt_step.py`` in vLLM's engine (an unprobed H200), one prompt of N + 1
    against N tokens, Qwen3-8B-FP8 and Qwen3-14B-FP8, 3,073 to 12,289 tokens (0.097-0.119, median 0.11; Qwen3-14B
    keeps the short rate up to 4,097 tokens: where the slow regime begins depends on the shape). The served
    Qwen3-8B-FP8 engine shows it step by step (machine 10): 7 prompts of 1,024 tokens + 1 decode took 442 ms, 7 of
    1,025 + 1 (7,176 tokens) 108 ms."""
    fp8_unaligned_short_gemm_efficiency: float = 0.135
    """The same for steps of at most ``stepcost.FP8_SHORT_STEP_TOKENS`` tokens (a prompt or two): 0.129-0.143
    over 1,023 to 2,050 tokens in both measurements above (median 0.135)."""
    fp8_aligned_weight_rate: float = 0.53
    """Weight bytes per second a block-scaled FP8 GEMM streams at decode sizes on Hopper, over what a BF16 GEMM of
    the same shape streams, when the step's token count is a multiple of 4: vLLM 0.26's CUTLASS kernel then reads
    its FP8 weights at about 1.6-2.1 TB/s on an H200 (BF16: about 3.5-3.7), so FP8 halves the bytes but not the
    time. Measured, not fitted: ``scripts/fp8_block_gemm.py --graph`` on an H200 (machine 12), each linear in a
    CUDA graph on weights larger than the L2 cache, Qwen3-8B's and Qwen3-14B's four linear shapes, the median
    over 4 to 128 tokens (0.46-0.62; tests/data/vllm-h200-2026-12-02/fp8-block-gemm-graph-*-machine12.json)."""
    fp8_unaligned_weight_rate: float = 0.75
    """The same ratio when the token count is not a multiple of 4 (the kernel the slow large steps also get): the
    median over 1 to 96 tokens, 0.71-0.84. Served Qwen3-8B-FP8 steps show both: a decode step of 1 or 2 requests
    takes about 4 ms, one of 4 to 15 (padded to 4, 8 or 16) about 6 ms."""
    moe_half_intermediate: float = 255.9515
    """The routed experts' grouped GEMMs (vLLM's fused-MoE kernels) reach i / (i + this) of a dense GEMM's
    FLOP/s, i the expert intermediate size per TP rank: narrow experts (Qwen3-30B-A3B: 768) run small tiles,
    wide ones (Mixtral: 14,336) about as fast as a dense GEMM."""
    moe_per_layer_us: float = 11.19875
    """Extra GPU time per MoE layer (routing, token alignment, combine; grouped GEMMs below the roofline)."""
    step_overhead_ms: float = 1.979522
    """Host time per step: scheduling, input preparation, sampler launch, output (overlaps the GPU)."""
    seq_overhead_us: float = 15.07275
    """Host time per request in the step (block tables, inputs, outputs)."""
    prompt_token_overhead_us: float = 0.3134444
    """Host time per prompt token in the step (token ids, positions, block hashes)."""
    step_serial_ms: float = 0.3808501
    """Per-step time that never overlaps (sampled tokens back to the scheduler)."""
    prompt_step_serial_ms: float = 5.552552
    """Extra time of a step that carries prompt tokens that does not overlap the GPU (input preparation that
    waits on it)."""
    request_latency_ms: float = 2.367678
    """Latency between the front end handing a request over and the scheduler seeing it (engine IPC, request
    set-up); it delays the request but occupies nothing."""
    graph_launch_us: float = 47.09649
    """Host time to replay a step's full CUDA graph."""
    piecewise_launch_per_layer_us: float = 6.337713
    """Host time per layer of a piecewise-graph step (attention launched between the graph pieces)."""
    eager_launch_per_layer_us: float = 494.6391
    """Host time per layer of a step without graphs (every kernel launched from Python)."""
    moe_launch_per_layer_us: float = 1051.576
    """Extra host time per MoE layer of a step without graphs (router top-k, token alignment, the two grouped
    GEMMs and the combine, dispatched from Python)."""
    compiled_launch_ratio: float = 0.8113209
    """Host launch time of a step above the largest capture size (vLLM's torch.compile'd code, no graph) over
    that of the same step in eager mode (fused kernels: fewer launches)."""
    prompt_launch_per_layer_us: float = 457.1064
    """Extra host time per layer of a step that carries prompt tokens and runs without CUDA graphs (eager, or
    above the largest capture size): the prefill path of the attention launched between the compiled pieces. The
    step logs of served engines show it: a 1,024-token prompt step under Poisson load costs about 1.1 ms per layer
    more than a decode step (Llama-3.2-1B and Qwen3-4B shapes, H200; ``benchmarks/step_log.py``), while large
    decode batches out of the graphs cost less compiled than eager (Qwen3-30B-A3B at 1,024 requests: 82 against
    125 ms), so the cost is the prompt's, not the compiled path's. Offline prompt steps are mostly GPU-bound and
    hide it; the served Llama-3.2-1B engine of the fit set pins it. Not settled: an idle offline Qwen3-8B-FP8
    engine ran one 1,024-token prompt in 23 ms, generate() included (``scripts/fp8_prompt_step.py``), where this
    term makes the step host-bound at 39 ms, and served Llama-3.1-8B's Poisson TPOT comes out 25 % long with it;
    without it the host-bound 1B engine of machine 9 comes out 38 % short. The fit set's machines differ in host
    speed (one client's TTFT: 32 to 58 ms on the same GPU), which this per-layer term partly stands in for. Idle
    offline engines on machine 13 took 0.6-0.7 ms a layer for such a step (Llama-3.2-1B, Qwen3-4B, Llama-3.1-8B;
    ``scripts/prompt_step.py``) against the 0.86 charged here with the compiled launch, while that machine's
    served Qwen3-4B answered one client 26 ms later than its idle engine: the served path's cost, in this term."""
    batch_intake_us: float = 26.67456
    """Offline ``LLM.generate``: time to hand one request to the engine."""
    batch_output_seq_us: float = 29.1432
    """Offline: time per request per step to take its new token (no detokenizing)."""
    serve_intake_us: float = 720.4677
    """``vllm serve``: the API server's time per request before the engine sees it (HTTP, validation)."""
    serve_intake_per_token_us: float = 2.747259
    """``vllm serve``: the API server's time per prompt token (tokenizing)."""
    serve_output_seq_us: float = 77.8432
    """``vllm serve``: the API server's time per request per step (detokenizing, streaming the chunk)."""
    output_step_us: float = 1061.319
    """The front end's time per step output (receiving it from the engine process)."""
    allreduce_efficiency: float = 1.0
    """Multiplier on measured all-reduce times (> 1: slower inside vLLM than in the microbenchmark)."""
    p2p_efficiency: float = 0.8
    """NCCL send/recv bandwidth over copy-engine P2P bandwidth (PP stage boundaries)."""
    p2p_alpha_us: float = 10.0
    """Fixed cost of one PP send/recv (AIC p2p_latency 10 us)."""
    band_output_tokens_per_s: list[float] = field(default_factory=lambda: [0.6705, 1.4997])
    """The uncertainty band of output tokens/s, as [low, high] ratios of measured to predicted: the 2.5th and
    97.5th percentiles of that ratio over the runs the factors were fitted to, each machine's runs predicted by
    the factors fitted to the other machines' runs (leave-one-machine-out: the band a machine the factors never
    saw can expect; host speed differs from machine to machine more than from run to run)."""
    band_ttft_ms: list[float] = field(default_factory=lambda: [0.6534, 1.6379])
    band_tpot_ms: list[float] = field(default_factory=lambda: [0.6496, 1.6124])
    memory: MemoryCalibration = field(default_factory=MemoryCalibration)
    source: str = "defaults"
    """Where these factors came from: ``defaults`` or the file they were loaded from."""

    RANGES: ClassVar[dict[str, tuple[float, float, bool]]] = {}
    """What a loaded file may hold, as ``(low, high, low_open)`` (filled in below the class): efficiencies and
    ratios in (0, 1.5], times finite, >= 0 and below 10 s, bands (0, 10]."""

    def band(self, figure: str, predicted: float) -> list[float]:
        """[low, high] of a predicted figure (``output_tokens_per_s``, ``ttft_ms`` or ``tpot_ms``)."""
        lo, hi = getattr(self, f"band_{figure}")
        return sorted([predicted * lo, predicted * hi])


HOST_FACTORS = (
    "step_overhead_ms", "seq_overhead_us", "prompt_token_overhead_us", "step_serial_ms", "prompt_step_serial_ms",
    "request_latency_ms", "graph_launch_us",
    "piecewise_launch_per_layer_us", "eager_launch_per_layer_us", "moe_launch_per_layer_us", "compiled_launch_ratio",
    "prompt_launch_per_layer_us", "batch_intake_us",
    "batch_output_seq_us",
    "serve_intake_us", "serve_intake_per_token_us", "serve_output_seq_us", "output_step_us",
)
"""Host and front-end time factors."""


def _ranges() -> dict[str, tuple[float, float, bool]]:
    out: dict[str, tuple[float, float, bool]] = {}
    for f in dataclasses.fields(Calibration):
        if f.name.endswith(("_efficiency", "_ratio")):
            out[f.name] = (0.0, 1.5, True)
        elif f.name.endswith("_ms"):
            out[f.name] = (0.0, 1e4, False)
        elif f.name.endswith("_us"):
            out[f.name] = (0.0, 1e7, False)
        elif f.name.startswith("band_"):
            out[f.name] = (0.0, 10.0, True)
    return out


Calibration.RANGES = _ranges()


@dataclass
class CalibrationFile:
    """The file ``save_calibration`` writes: the factors in a versioned envelope."""

    kind: str
    schema_version: int
    calibration: Calibration


_FIT_HINT = "fit one: 'gpuprobe validate --compare RUNS.json --fit-calibration FILE'"


def load_calibration(path: str | os.PathLike[str]) -> Calibration:
    """A calibration file; a file that is not one, of another schema version or with a factor out of its range
    (``Calibration.RANGES``) is one ResultsFileError line (exit 1, as every bad input file)."""
    doc = document_from_data(CalibrationFile, read_json(path, what="calibration file"), kind=CALIBRATION_KIND,
                             schema_version=CALIBRATION_SCHEMA_VERSION, min_version=CALIBRATION_SCHEMA_VERSION,
                             what="calibration file", origin=str(path), hint=_FIT_HINT)
    cal = doc.calibration
    cal.source = str(path)
    return cal


def save_calibration(cal: Calibration, path: str | os.PathLike[str]) -> None:
    write_json_atomic(
        path, {"kind": CALIBRATION_KIND, "schema_version": CALIBRATION_SCHEMA_VERSION, "calibration": to_data(cal)},
        "the calibration file",
    )
