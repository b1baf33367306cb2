"""Host time of launching one BF16 GEMM (``torch.nn.functional.linear``, cuBLAS) when the token count changes
from call to call, as it does in vLLM's prompt steps above the CUDA-graph sizes, against the same count repeated.

    python3 scripts/gemm_launch_host.py OUT.json

For each linear layer of Qwen3-4B (QKV, output, gate/up, down) and each pattern, times ``--calls`` launches with
``time.perf_counter`` (no synchronisation inside the loop: what the host spends before the kernel is queued),
and the GPU time of the same launches with CUDA events. The file records the device, versions and when it ran.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time

LAYERS = [("qkv", 6144, 2560), ("o", 2560, 4096), ("gate_up", 19456, 2560), ("down", 2560, 9728)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda")
    doc: dict = {"kind": "gemm-launch-host", "device_name": torch.cuda.get_device_name(0),
                 "torch_version": torch.__version__, "cuda": torch.version.cuda,
                 "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                 "calls": args.calls, "rows": []}
    base = 1024
    for name, n, k in LAYERS:
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        x = torch.randn(base + 2 * args.calls + 64, k, device=dev, dtype=torch.bfloat16)
        patterns = {
            "same_m": [base] * args.calls,
            "new_m_each_call": [base + 1 + i for i in range(args.calls)],
            "new_m_second_pass": [base + 1 + i for i in range(args.calls)],
            "small_new_m": [8 + i for i in range(args.calls)],
        }
        for pat, ms in patterns.items():
            torch.cuda.synchronize()
            host = []
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for m in ms:
                t0 = time.perf_counter()
                F.linear(x[:m], w)
                host.append((time.perf_counter() - t0) * 1e6)
            end.record()
            end.synchronize()
            row = {"layer": name, "n": n, "k": k, "pattern": pat, "host_us_median": round(statistics.median(host), 2),
                   "host_us_mean": round(statistics.fmean(host), 2), "host_us_max": round(max(host), 1),
                   "gpu_ms_total": round(start.elapsed_time(end), 3)}
            doc["rows"].append(row)
            print(f"{name:8s} {pat:18s} host median {row['host_us_median']:8.1f} us  mean {row['host_us_mean']:8.1f}"
                  f"  max {row['host_us_max']:8.1f}  gpu total {row['gpu_ms_total']:8.2f} ms", flush=True)
    # a model step: 36 layers, each with its own weights of the four shapes, at one new token count per step
    ws = [[torch.randn(n, k, device=dev, dtype=torch.bfloat16) for _ in range(36)] for _, n, k in LAYERS]
    xs = {k: torch.randn(4096, k, device=dev, dtype=torch.bfloat16) for _, _, k in LAYERS}
    for step in range(12):
        m = 2048 + 7 * step
        first, rest = [], []
        torch.cuda.synchronize()
        for layer in range(36):
            for j, (_, _n, k) in enumerate(LAYERS):
                t0 = time.perf_counter()
                F.linear(xs[k][:m], ws[j][layer])
                (first if layer == 0 else rest).append((time.perf_counter() - t0) * 1e6)
        torch.cuda.synchronize()
        row = {"pattern": "model_step_new_m", "tokens": m, "layer0_host_us_median": round(statistics.median(first), 2),
               "other_layers_host_us_median": round(statistics.median(rest), 2),
               "step_host_ms": round((sum(first) + sum(rest)) / 1e3, 3)}
        doc["rows"].append(row)
        print(row, flush=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
