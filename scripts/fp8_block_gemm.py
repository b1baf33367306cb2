"""Time vLLM's block-scaled FP8 linear path (activation quantization + CUTLASS GEMM) against BF16 at many
token counts, aligned and not aligned to 4, on one GPU. Needs a CUDA build of vLLM.

    python3 scripts/fp8_block_gemm.py OUT.json [--shapes qwen3-8b] [--graph]

Each (N, K) is one linear layer of the model (QKV, output, gate/up, down). For every token count M it records the
median of ``--reps`` CUDA-event timings of: the per-token-group (1 x 128) quantization vLLM runs before the GEMM,
the CUTLASS block-scaled GEMM, and a BF16 ``torch.mm`` of the same shape. Every GEMM is checked against a BF16
product of the dequantized operands. The file records the device, driver and versions, and when it ran.

``--graph`` times decode-sized token counts as vLLM runs them there: inside a CUDA graph. Each graph holds
``GRAPH_CALLS`` calls of one linear, each on its own copy of the weights (together larger than the L2 cache, as a
model's layers are), so the figure per call is the kernels' GPU time without launch gaps or cache reuse.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from functools import partial

SHAPES = {
    # (name, N, K) of Qwen3-8B: hidden 4096, 32 query + 8 KV heads of 128, intermediate 12288
    "qwen3-8b": [("qkv", 6144, 4096), ("o", 4096, 4096), ("gate_up", 24576, 4096), ("down", 4096, 12288)],
    # Qwen3-14B: hidden 5120, 40 query + 8 KV heads of 128, intermediate 17408
    "qwen3-14b": [("qkv", 7168, 5120), ("o", 5120, 5120), ("gate_up", 34816, 5120), ("down", 5120, 17408)],
}
TOKENS = [1, 2, 3, 4, 5, 7, 8, 16, 33, 64, 255, 256, 511, 512, 1023, 1024, 1025, 1026, 1027, 1028, 1040, 1042,
          2047, 2048, 2049, 2050, 3072, 3073, 4095, 4096, 4097, 4098, 6144, 6145, 7168, 7169, 7170, 7171, 7172,
          8191, 8192, 12288, 12289, 16383, 16384]
GRAPH_TOKENS = [1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512]
GRAPH_CALLS = 24
L2_BYTES = 64 << 20


def _time_ms(fn, reps: int) -> float:
    import torch

    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def _graph_ms(fns: list, reps: int) -> float:
    """GPU time of one call of ``fns`` (each a distinct call of the same shape), replayed from a CUDA graph."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for fn in fns:  # warm-up outside the graph: kernel selection, workspaces
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in fns:
            fn()
    graph.replay()
    torch.cuda.synchronize()
    return _time_ms(graph.replay, reps) / len(fns)


def graph_rows(shapes: list[tuple[str, int, int]], reps: int, doc: dict) -> None:
    """Decode-sized token counts, each linear timed in a CUDA graph (see the module docstring)."""
    import torch
    from vllm import _custom_ops as ops
    from vllm.model_executor.layers.quantization.utils.fp8_utils import per_token_group_quant_fp8

    dev = torch.device("cuda")
    fp8 = torch.float8_e4m3fn
    for name, n, k in shapes:
        copies = max(2, -(-L2_BYTES // (n * k)) + 1)  # FP8 copies that overflow the L2 cache together
        w16s = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) / k**0.5 for _ in range(copies)]
        wqs, wss = [], []
        for w16 in w16s:
            wblk = w16.float().reshape(n // 128, 128, k // 128, 128)
            ws = (wblk.abs().amax(dim=(1, 3)) / 448.0).clamp(min=1e-12)
            wqs.append((wblk / ws[:, None, :, None]).reshape(n, k).to(fp8))
            wss.append(ws)
        for m in GRAPH_TOKENS:
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            try:
                q, s = per_token_group_quant_fp8(x, 128, column_major_scales=True)
                out = ops.cutlass_scaled_mm(q, wqs[0].t(), out_dtype=torch.bfloat16, scale_a=s, scale_b=wss[0].t())
                ref = (q.float().reshape(m, k // 128, 128) * s[:, :, None]).reshape(m, k) @ \
                    (wqs[0].float().reshape(n // 128, 128, k // 128, 128)
                     * wss[0][:, None, :, None]).reshape(n, k).t()
                err = float((out.float() - ref).norm() / ref.norm().clamp(min=1e-12))
                idx = [i % copies for i in range(GRAPH_CALLS)]
                quant_ms = _graph_ms([partial(per_token_group_quant_fp8, x, 128, column_major_scales=True)]
                                     * GRAPH_CALLS, reps)
                gemm_ms = _graph_ms([partial(ops.cutlass_scaled_mm, q, wqs[i].t(), out_dtype=torch.bfloat16,
                                             scale_a=s, scale_b=wss[i].t()) for i in idx], reps)
                bf16_ms = _graph_ms([partial(torch.mm, x, w16s[i].t()) for i in idx], reps)
                doc["graph_rows"].append({"layer": name, "n": n, "k": k, "tokens": m, "quant_ms": round(quant_ms, 5),
                                          "fp8_gemm_ms": round(gemm_ms, 5), "bf16_gemm_ms": round(bf16_ms, 5),
                                          "rel_error": round(err, 6), "weight_copies": copies})
                print(f"graph {name:8s} M={m:5d} quant {quant_ms*1e3:7.2f} us  fp8 {gemm_ms*1e3:7.2f} us  "
                      f"bf16 {bf16_ms*1e3:7.2f} us  err {err:.1e}", flush=True)
            except Exception as e:  # noqa: BLE001 - record the shape that failed and go on with the others
                doc["problems"].append(f"graph {name} M={m}: {type(e).__name__}: {str(e)[:200]}")
                print(f"graph {name:8s} M={m:5d} FAILED {type(e).__name__}: {str(e)[:120]}", flush=True)
        w16s.clear()
        wqs.clear()
        wss.clear()
        torch.cuda.empty_cache()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--shapes", default="qwen3-8b", choices=sorted(SHAPES))
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--graph", action="store_true", help="decode-sized token counts timed inside CUDA graphs")
    args = ap.parse_args()
    import torch
    import vllm
    from vllm import _custom_ops as ops
    from vllm.model_executor.layers.quantization.utils.fp8_utils import per_token_group_quant_fp8

    dev = torch.device("cuda")
    torch.manual_seed(0)
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
    except Exception as e:  # noqa: BLE001 - the driver version is a nicety; the timings stand without it
        driver = f"unknown ({type(e).__name__})"
    doc: dict = {
        "kind": "fp8-block-gemm", "device_name": torch.cuda.get_device_name(0), "driver": driver,
        "torch_version": torch.__version__, "vllm_version": vllm.__version__, "cuda": torch.version.cuda,
        "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "shapes": args.shapes, "reps": args.reps, "rows": [], "problems": [],
    }
    if args.graph:
        doc["kind"] = "fp8-block-gemm-graph"
        doc["graph_calls"] = GRAPH_CALLS
        doc["graph_rows"] = []
        graph_rows(SHAPES[args.shapes], args.reps, doc)
        doc["ended_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
        return 0 if doc["graph_rows"] else 1
    fp8 = torch.float8_e4m3fn
    for name, n, k in SHAPES[args.shapes]:
        w16 = torch.randn(n, k, device=dev, dtype=torch.bfloat16) / k**0.5
        wblk = w16.float().reshape(n // 128, 128, k // 128, 128)
        ws = (wblk.abs().amax(dim=(1, 3)) / 448.0).clamp(min=1e-12)  # [N/128, K/128]
        wq = (wblk / ws[:, None, :, None]).reshape(n, k).to(fp8)
        for m in TOKENS:
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            try:
                q, s = per_token_group_quant_fp8(x, 128, column_major_scales=True)
                out = ops.cutlass_scaled_mm(q, wq.t(), out_dtype=torch.bfloat16, scale_a=s, scale_b=ws.t())
                ref = (q.float().reshape(m, k // 128, 128) * s[:, :, None]).reshape(m, k) @ \
                    (wq.float().reshape(n // 128, 128, k // 128, 128) * ws[:, None, :, None]).reshape(n, k).t()
                err = float((out.float() - ref).norm() / ref.norm().clamp(min=1e-12))
                quant_ms = _time_ms(lambda x=x: per_token_group_quant_fp8(x, 128, column_major_scales=True), args.reps)
                gemm_ms = _time_ms(lambda q=q, s=s, wq=wq, ws=ws: ops.cutlass_scaled_mm(
                    q, wq.t(), out_dtype=torch.bfloat16, scale_a=s, scale_b=ws.t()), args.reps)
                bf16_ms = _time_ms(lambda x=x, w16=w16: torch.mm(x, w16.t()), args.reps)
                doc["rows"].append({"layer": name, "n": n, "k": k, "tokens": m, "quant_ms": round(quant_ms, 5),
                                    "fp8_gemm_ms": round(gemm_ms, 5), "bf16_gemm_ms": round(bf16_ms, 5),
                                    "rel_error": round(err, 6), "scale_a_strides": list(s.stride())})
                print(f"{name:8s} M={m:6d} quant {quant_ms:8.4f} ms  fp8 {gemm_ms:8.4f} ms  bf16 {bf16_ms:8.4f} ms"
                      f"  err {err:.1e}", flush=True)
            except Exception as e:  # noqa: BLE001 - record the shape that failed and go on with the others
                doc["problems"].append(f"{name} M={m}: {type(e).__name__}: {str(e)[:200]}")
                print(f"{name:8s} M={m:6d} FAILED {type(e).__name__}: {str(e)[:120]}", flush=True)
            with open(args.out, "w") as f:
                json.dump(doc, f, indent=1)
    doc["ended_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    return 0 if doc["rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
