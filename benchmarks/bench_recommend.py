"""Time the whole layout search of ``gpuprobe recommend`` on the CPU: every TP x PP x replicas layout of 8 GPUs,
each simulated with 1,000 requests (closed loop, as ``vllm bench serve --num-prompts 1000``), 8B and 70B models,
at several loads. Target: < 1 s per search.

Run: python benchmarks/bench_recommend.py  (one line per case: median and max of 5 searches)
The measured system is a derived 8x H100 NVSwitch results object (published figures, see
tests/unit/predict/conftest.py); the spec system is the datasheet description.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit" / "predict"))

from conftest import h100_box  # noqa: E402

from gpuprobe.predict.calibration import Calibration  # noqa: E402
from gpuprobe.predict.model_spec import load_model_spec  # noqa: E402
from gpuprobe.predict.options import ServeOptions  # noqa: E402
from gpuprobe.predict.recommend import recommend  # noqa: E402
from gpuprobe.predict.system import system_from_results, system_from_spec  # noqa: E402
from gpuprobe.predict.traffic import Traffic  # noqa: E402

CONFIGS = ROOT / "tests" / "data" / "configs"


def bench(label: str, build_system, model: str, traffic: Traffic, repeats: int = 5) -> None:
    spec = load_model_spec(CONFIGS / model)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rec = recommend(spec, build_system(), ServeOptions(max_model_len=16384), traffic, Calibration())
        times.append(time.perf_counter() - t0)
    fits = sum(r.fits for r in rec.layouts)
    load = f"c={traffic.concurrency} {traffic.input_len}->{traffic.output_len}"
    print(f"| {label} | {model.removesuffix('.json')} | {load} | {len(rec.layouts)} ({fits}) | "
          f"{statistics.median(times) * 1e3:.0f} ms | {max(times) * 1e3:.0f} ms |")


def main() -> None:
    measured = h100_box(8)
    print("| system | model | load (1,000 requests) | layouts (fit) | median | max |")
    print("|---|---|---|---|---:|---:|")
    for model in ("llama-3.1-8b.json", "llama-3.1-70b.json"):
        for c, i, o in ((64, 1024, 256), (256, 1024, 256), (16, 8192, 256)):
            traffic = Traffic("closed", 1000, i, o, c)
            bench("8x H100 (spec)", lambda: system_from_spec("H100-SXM", 8), model, traffic)
            bench("8x H100 (results)", lambda: system_from_results(measured), model, traffic)


if __name__ == "__main__":
    main()
