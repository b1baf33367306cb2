"""Time the whole layout search of ``gpuprobe recommend`` on the CPU: 8 GPUs, 8B and 70B models.

Run: python benchmarks/bench_recommend.py  (prints one line per case; target < 1 s each)
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
from gpuprobe.predict.options import ServeOptions, Workload  # noqa: E402
from gpuprobe.predict.recommend import recommend  # noqa: E402
from gpuprobe.predict.system import system_from_results, system_from_spec  # noqa: E402

CONFIGS = ROOT / "tests" / "data" / "configs"


def bench(label: str, build_system, model: str, repeats: int = 5) -> None:
    spec = load_model_spec(CONFIGS / model)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rec = recommend(spec, build_system(), ServeOptions(max_model_len=8192), Workload(), Calibration())
        times.append(time.perf_counter() - t0)
    fits = sum(r.fits for r in rec.layouts)
    print(f"{label:<22} {model:<20} layouts {len(rec.layouts):>3} (fit {fits:>2})  "
          f"median {statistics.median(times) * 1e3:7.1f} ms  max {max(times) * 1e3:7.1f} ms")


def main() -> None:
    measured = h100_box(8)
    for model in ("llama-3.1-8b.json", "llama-3.1-70b.json"):
        bench("8x H100 (spec)", lambda: system_from_spec("H100-SXM", 8), model)
        bench("8x H100 (results)", lambda: system_from_results(measured), model)


if __name__ == "__main__":
    main()
