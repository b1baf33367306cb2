"""Accuracy of the speed predictions against the committed real vLLM runs, and how repeatable those runs are.

    python benchmarks/validation_accuracy.py [--fit-out DIR] > reports/h100-2026-11-25/accuracy.md

Three sets of real vLLM 0.26.0 runs on one H100 80GB HBM3 (2026-11-25), each a different machine lease:
  reference (lease 1): Llama-3.2-1B and Llama-3.1-8B shapes; the predictor's default speed factors were fitted
                       to these (``gpuprobe.predict.calibration.Calibration``), so they are in-sample here;
  lease 2:             the same two models again plus Llama-3.2-3B and Qwen2.5-7B shapes, never used to set the
                       defaults: the honest "before calibration" figure;
  lease 3:             the 1B twice, back to back on one machine: the run-to-run spread of the measurement.
Every engine ran eager and with CUDA graphs, four one-shot batches each. "After calibration" is always
held out: factors fitted on lease-2 runs without the predicted point's model (or engine run).
``--fit-out DIR`` also writes the calibration fitted on every lease-2 run (``calibration.json`` + fit report).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpuprobe.predict.calibration import Calibration  # noqa: E402
from gpuprobe.validate import calibrate  # noqa: E402
from gpuprobe.validate.compare import compare_run, measured_figures  # noqa: E402
from gpuprobe.validate.store import load_runs  # noqa: E402

REPORT = ROOT / "reports" / "h100-2026-11-25"
REFERENCE = ([REPORT / f"validation-{m}.json" for m in ("1b", "8b")], ROOT / "tests" / "data" /
             "h100-probe-2026-11-25.json")
LEASE2 = ([REPORT / "lease2" / f"validation-{m}.json" for m in ("1b", "3b", "qwen7b", "8b")],
          REPORT / "lease2" / "probe-run2.json")
REPEATS = [REPORT / "lease3-repeat" / f"validation-1b-rep{r}.json" for r in (1, 2)]
FIG = "output_tokens_per_s"


def _engine(key: str) -> str:
    return "eager" if key.endswith("eager") else "graphs"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.1f} %"


Errors = dict[tuple[str, str], float]
"""(run key ``i:model:layout``, workload) -> relative error of output tokens/s."""


def _fit_errors(fit: calibrate.CalibrationFit, which: str) -> Errors:
    return {(p.run, p.workload): e for p in fit.points if p.figure == FIG and (e := p.err(which)) is not None}


def _default_errors(all_runs: list, system: Path) -> Errors:
    """The stored-file comparison with the shipped defaults (no fit needed)."""
    out = {}
    for i, runs in enumerate(all_runs):
        for run in runs.layouts:
            for f in compare_run(runs, run, system=system).figures:
                if f.figure == FIG and f.rel_error is not None:
                    out[(f"{i}:{runs.model_name}:{run.layout.name}", f.workload)] = f.rel_error
    return out


def _summary(errors: Errors) -> str:
    rows = []
    for eng in ("eager", "graphs", "all"):
        errs = [abs(e) for (run, _), e in errors.items() if eng in ("all", _engine(run))]
        if errs:
            rows.append(f"| {eng} | {len(errs)} | {100 * statistics.median(errs):.1f} % | {100 * max(errs):.1f} % | "
                        f"{sum(e <= 0.10 for e in errs)} | {sum(e <= 0.05 for e in errs)} |")
    return "\n".join(["| engine | points | median abs error | max | within 10 % | within 5 % |",
                      "|---|---:|---:|---:|---:|---:|", *rows])


def _per_point(fit: calibrate.CalibrationFit, cols: list[tuple[str, Errors]]) -> str:
    head = "| run | workload | measured tok/s | " + " | ".join(title for title, _ in cols) + " |"
    out = [head, "|---|---|---:|" + "---:|" * len(cols)]
    for p in fit.points:
        if p.figure == FIG:
            out.append(f"| {p.run.split(':', 1)[1]} | {p.workload} | {p.measured:,.1f} | "
                       + " | ".join(_pct(errs.get((p.run, p.workload))) for _, errs in cols) + " |")
    return "\n".join(out)


def _repeatability() -> str:
    """Per workload, the relative difference of output tokens/s between two runs of the same engine config."""
    pairs = [("lease 3, run 1 vs run 2 (same machine, back to back)", REPEATS[0], REPEATS[1])]
    for m in ("1b", "8b"):
        pairs.append((f"reference vs lease 2 ({m}, two machines)", REPORT / f"validation-{m}.json",
                      REPORT / "lease2" / f"validation-{m}.json"))
    out = ["| pair | engine | workload | tok/s (a) | tok/s (b) | b / a − 1 |", "|---|---|---|---:|---:|---:|"]
    for label, a, b in pairs:
        ra, rb = load_runs(a), load_runs(b)
        for la, lb in zip(ra.layouts, rb.layouts, strict=True):
            fa, fb = measured_figures(la), measured_figures(lb)
            for (fig, wl), va in fa.items():
                vb = fb.get((fig, wl))
                if fig == FIG and va and vb:
                    eng = "eager" if la.layout.enforce_eager else "graphs"
                    out.append(f"| {label} | {eng} | {wl} | {va:,.1f} | {vb:,.1f} | {100 * (vb / va - 1):+.1f} % |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fit-out", type=Path, default=None)
    args = ap.parse_args()
    defaults = Calibration()
    ref_runs = [load_runs(p) for p in REFERENCE[0]]
    l2_runs = [load_runs(p) for p in LEASE2[0]]
    print("# Speed predictions vs real vLLM 0.26.0 on one H100 80GB HBM3 (2026-11-25)\n")
    print("Output tokens/s, error = (predicted − measured) / measured. Generated by "
          "`python benchmarks/validation_accuracy.py`.\n")
    print("## Before calibration (the shipped defaults)\n")
    print("Reference runs (lease 1; the defaults were fitted to them, so this is in-sample):\n")
    print(_summary(_default_errors(ref_runs, REFERENCE[1])) + "\n")
    l2 = calibrate.fit_calibration(l2_runs, system=str(LEASE2[1]), base=defaults, holdout="model")
    if args.fit_out:
        args.fit_out.mkdir(parents=True, exist_ok=True)
        calibrate.save_fit(l2, args.fit_out / "calibration.json")
    print("Lease 2 (another machine; 3B and Qwen2.5-7B never seen, 1B and 8B re-run) — **not used to set the "
          "defaults**:\n")
    before = _fit_errors(l2, "before")
    print(_summary(before) + "\n")
    l2_run = calibrate.fit_calibration(l2_runs, system=str(LEASE2[1]), base=defaults, holdout="run")
    print("## After calibration on lease-2 runs, held out\n")
    print(f"Fit: {calibrate.METHOD}. *model*: factors fitted on the other three models' runs; *run*: fitted on "
          "the other seven engine runs (the same model's other engine mode included).\n")
    print("Leave-one-model-out:\n")
    print(_summary(_fit_errors(l2, "heldout")) + "\n")
    print("Leave-one-run-out:\n")
    print(_summary(_fit_errors(l2_run, "heldout")) + "\n")
    print("In-sample (fitted on all 32 lease-2 points; not a claim, for reference):\n")
    print(_summary(_fit_errors(l2, "after")) + "\n")
    print("Factors fitted on all lease-2 runs (shipped default → fitted):\n")
    print("| factor | default | fitted |\n|---|---:|---:|")
    for f in l2.factors:
        print(f"| {f.name} | {f.before:.4g} | {f.after:.4g} |")
    print("\n## Per point (lease 2)\n")
    print(_per_point(l2, [("before", before), ("held out: model", _fit_errors(l2, "heldout")),
                          ("held out: run", _fit_errors(l2_run, "heldout"))]) + "\n")
    print("## How repeatable the measurement is\n")
    print(_repeatability() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
