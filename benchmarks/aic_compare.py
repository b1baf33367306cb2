"""gpuprobe's engine simulation and NVIDIA AIConfigurator side by side on the same measured serving points.

    python benchmarks/aic_compare.py

The points are the closed-loop loads of the real `vllm serve` runs on the H200 (vLLM 0.26.0 at its defaults, TP1,
tests/data/vllm-h200-2026-12-01/{llama-3.1-8b-serve-warm,qwen2.5-14b-serve,qwen3-30b-a3b-serve,
qwen3-8b-fp8-serve}.json, and the MoE and FP8 engines again on machine 5 with four to eight times the requests,
{qwen3-30b-a3b,qwen3-8b-fp8}-serve-long.json, Qwen3-4B on machine 6, qwen3-4b-serve.json, four engines again on
machine 7 (*-serve-steps.json, 1 and 8 clients), Qwen3-4B on machine 8 started three times
(qwen3-4b-serve-starts.json) and three engines on machine 9 (tests/data/vllm-h200-2026-12-02/*-serve-rates.json,
1 and 32 clients, 16 with ~8K prompts), and on machine 10 Qwen3-8B-FP8 started twice (qwen3-8b-fp8-serve-align.json,
with 1,023- and 1,025-token prompts beside the 1,024 ones) and Qwen3-4B (qwen3-4b-serve-rates-machine10.json), and
Llama-3.1-8B on machine 11 at 32, 128 and 256 clients with 128 to 1,024 requests (llama-3.1-8b-serve-highc.json), and
on machine 12 Qwen3-14B-FP8 (qwen3-14b-fp8-serve.json, and qwen3-14b-fp8-serve-highc.json for 128 clients) and
Mistral-7B (mistral-7b-serve.json), two shapes never run before, and on machine 13 Qwen3-4B started twice and
Llama-3.2-1B (*-serve-machine13.json), on machine 14 Qwen2.5-7B, a shape never served before, and Qwen3-4B
(*-serve-machine14.json), and on machine 15 Qwen3-8B in BF16 (never served before) and Llama-3.1-8B
(*-serve-machine15.json); all but the
Qwen2.5-14B on later machines with the fixed one-token-a-word tokenizer, FP8 with VLLM_USE_DEEP_GEMM=0):
concurrency 1 to 256 with ~1K-token prompts and 16 with ~8K-token prompts, 128 output tokens. AIConfigurator
0.12.0's predictions for them are in reports/h200-2026-12-01/ (made with benchmarks/aic_points.py; its database was
profiled on vLLM 0.24.0): once at the nominal prompt lengths the loads were sent with (1,024 / 8,192 words), once
at the mean prompt lengths the server counted (the Qwen2.5-14B run's words were tokenized to fewer tokens, ~710 and
~5,684; for the other runs the two are the same). gpuprobe is given the lengths the server counted, per request.
AIC has no arrival-rate mode, so the Poisson loads are left out.

The H100 section: no H100 served runs exist, so the offline batches of the H100 engines with CUDA graphs
(tests/data/vllm-h100-2026-11-25/, machine 1 in the fit set, machine 2 held out: 1 to 64 requests at t = 0) stand
in, each compared with AIC's answer for a server at that concurrency (reports/h200-2026-12-01/
aic-0.12.0-h100-offline.json, AIC's H100 database; the model configs the runs recorded are in aic-h100-configs/).

gpuprobe's reference calibration was fitted to the Llama-3.1-8B runs (among others), so its Llama column is
in-sample; the Qwen2.5-14B, Qwen3-30B-A3B, Qwen3-8B-FP8 and Qwen3-4B serving runs are held out (the
Qwen3-30B-A3B and Qwen3-8B-FP8 offline runs are in its fit set; Qwen3-4B is in none). AIC was fitted to none of
them.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpuprobe.validate.compare import compare_run  # noqa: E402
from gpuprobe.validate.store import load_runs  # noqa: E402

DATA = ROOT / "tests" / "data" / "vllm-h200-2026-12-01"
DATA9 = ROOT / "tests" / "data" / "vllm-h200-2026-12-02"
REPORT = ROOT / "reports" / "h200-2026-12-01"
SYSTEM = DATA / "probe-machine1.json"
RUNS = [("Llama-3.1-8B", "Llama-3.1-8B", DATA / "llama-3.1-8b-serve-warm.json", DATA / "probe-machine3.json", "fit"),
        ("Qwen2.5-14B", "Qwen2.5-14B", DATA / "qwen2.5-14b-serve.json", SYSTEM, "held out"),
        ("Qwen3-30B-A3B", "Qwen3-30B-A3B", DATA / "qwen3-30b-a3b-serve.json", DATA / "probe-machine3.json", "held out"),
        ("Qwen3-8B-FP8", "Qwen3-8B-FP8", DATA / "qwen3-8b-fp8-serve.json", DATA / "probe-machine3.json", "held out"),
        ("Qwen3-30B-A3B (m5)", "Qwen3-30B-A3B", DATA / "qwen3-30b-a3b-serve-long.json", DATA / "probe-machine5.json",
         "held out"),
        ("Qwen3-8B-FP8 (m5)", "Qwen3-8B-FP8", DATA / "qwen3-8b-fp8-serve-long.json", DATA / "probe-machine5.json",
         "held out"),
        ("Qwen3-4B", "Qwen3-4B", DATA / "qwen3-4b-serve.json", DATA / "probe-machine5.json", "held out"),
        ("Llama-3.1-8B (m7)", "Llama-3.1-8B", DATA / "llama-3.1-8b-serve-steps.json", DATA / "probe-machine7.json",
         "fit"),
        ("Qwen2.5-14B (m7)", "Qwen2.5-14B", DATA / "qwen2.5-14b-serve-steps.json", DATA / "probe-machine7.json",
         "held out"),
        ("Qwen3-8B-FP8 (m7)", "Qwen3-8B-FP8", DATA / "qwen3-8b-fp8-serve-steps.json", DATA / "probe-machine7.json",
         "held out"),
        ("Qwen3-4B (m7)", "Qwen3-4B", DATA / "qwen3-4b-serve-steps.json", DATA / "probe-machine7.json", "held out"),
        ("Qwen3-4B (m8, 3 starts)", "Qwen3-4B", DATA / "qwen3-4b-serve-starts.json", DATA / "probe-machine8.json",
         "held out"),
        ("Llama-3.1-8B (m9)", "Llama-3.1-8B", DATA9 / "llama-3.1-8b-serve-rates.json", DATA9 / "probe-machine9.json",
         "fit"),
        ("Qwen3-4B (m9)", "Qwen3-4B", DATA9 / "qwen3-4b-serve-rates.json", DATA9 / "probe-machine9.json", "held out"),
        ("Qwen2.5-14B (m9)", "Qwen2.5-14B", DATA9 / "qwen2.5-14b-serve-rates.json", DATA9 / "probe-machine9.json",
         "held out"),
        ("Qwen3-8B-FP8 (m10, 2 starts)", "Qwen3-8B-FP8", DATA9 / "qwen3-8b-fp8-serve-align.json",
         DATA9 / "probe-machine10.json", "held out"),
        ("Qwen3-4B (m10)", "Qwen3-4B", DATA9 / "qwen3-4b-serve-rates-machine10.json", DATA9 / "probe-machine10.json",
         "held out"),
        ("Llama-3.1-8B (m11)", "Llama-3.1-8B", DATA9 / "llama-3.1-8b-serve-highc.json", DATA9 / "probe-machine11.json",
         "fit"),
        ("Qwen3-14B-FP8 (m12)", "Qwen3-14B-FP8", DATA9 / "qwen3-14b-fp8-serve.json", DATA9 / "probe-machine12.json",
         "held out"),
        ("Qwen3-14B-FP8 (m12, again)", "Qwen3-14B-FP8", DATA9 / "qwen3-14b-fp8-serve-highc.json",
         DATA9 / "probe-machine12.json", "held out"),
        ("Mistral-7B (m12)", "Mistral-7B", DATA9 / "mistral-7b-serve.json", DATA9 / "probe-machine12.json",
         "held out"),
        ("Qwen3-4B (m13, 2 starts)", "Qwen3-4B", DATA9 / "qwen3-4b-serve-machine13.json",
         DATA9 / "probe-machine13.json", "held out"),
        ("Llama-3.2-1B (m13)", "Llama-3.2-1B", DATA9 / "llama-3.2-1b-serve-machine13.json",
         DATA9 / "probe-machine13.json", "fit"),
        ("Qwen2.5-7B (m14)", "Qwen2.5-7B", DATA9 / "qwen2.5-7b-serve-machine14.json", DATA9 / "probe-machine14.json",
         "held out"),
        ("Qwen3-4B (m14)", "Qwen3-4B", DATA9 / "qwen3-4b-serve-machine14.json", DATA9 / "probe-machine14.json",
         "held out"),
        ("Qwen3-8B (m15)", "Qwen3-8B", DATA9 / "qwen3-8b-serve-machine15.json", DATA9 / "probe-machine15.json",
         "held out"),
        ("Llama-3.1-8B (m15)", "Llama-3.1-8B", DATA9 / "llama-3.1-8b-serve-machine15.json",
         DATA9 / "probe-machine15.json", "fit")]
"""(label, model AIC was asked about, run, the probe of its machine, role). The machine-5, -7 and -8 runs are the
same engines served again (with other request counts per load, and on machine 7 with every step logged); AIC's
answer does not depend on the request count (it estimates the steady state at the concurrency), so the same AIC
points are compared with them. Llama-3.1-8B and Llama-3.2-1B are models the calibration was fitted on, on any
machine (``fit`` rows). An engine
started several times is one point per load: the median of its starts."""
AIC = {"AIC (nominal lengths)": REPORT / "aic-0.12.0.json",
       "AIC (counted lengths)": REPORT / "aic-0.12.0-recorded-lengths.json"}
AIC_MACHINE3 = REPORT / "aic-0.12.0-machine3.json"
"""AIC for the MoE and FP8 runs (machine 3), sent with the tokenizer that counts one token a word: the nominal
and the counted lengths are the same, so both AIC columns take these."""
AIC_MACHINE6 = REPORT / "aic-0.12.0-machine6.json"
"""AIC for the Qwen3-4B run of machine 6 (one token a word, as machine 3's)."""
AIC_MACHINE10 = REPORT / "aic-0.12.0-machine10.json"
"""AIC for the two FP8 loads of machine 10 no other run has: 1 client with 1,023-token prompts, 8 with 1,025."""
AIC_MACHINE12 = REPORT / "aic-0.12.0-machine12.json"
"""AIC for machine 12's Qwen3-14B-FP8 and Mistral-7B loads. AIC 0.12.0 refuses Mistral-7B ("architecture
MistralForCausalLM is not supported"), so those rows have no AIC figure and leave its medians."""
AIC_MACHINE13 = REPORT / "aic-0.12.0-machine13.json"
"""AIC for machine 13's Llama-3.2-1B loads (its Qwen3-4B loads are the ones AIC answered for machine 6)."""
AIC_MACHINE14 = REPORT / "aic-0.12.0-machine14.json"
"""AIC for machine 14's Qwen2.5-7B loads (its Qwen3-4B loads, as machine 13's, are machine 6's answers)."""
AIC_MACHINE15 = REPORT / "aic-0.12.0-machine15.json"
"""AIC for machine 15's Qwen3-8B (BF16) loads (its Llama-3.1-8B loads are the ones AIC answered before)."""
FIGURES = (("output_tokens_per_s", "output_tokens_per_s_all_tokens", "tok/s"), ("ttft_ms", "ttft_ms", "TTFT ms"),
           ("tpot_ms", "tpot_ms", "TPOT ms"))


def _served_model(name: str) -> str:
    """The model label of the H200 serving points for the name AIC was asked with."""
    return "Llama-3.1-8B" if "llama-3.1" in name.lower() else "Qwen2.5-14B" if "2.5-14" in name else name


def _aic(path: Path, model_of: Callable[[str], str] = _served_model) -> dict[tuple[str, int, int], dict]:
    """(model, concurrency, nominal input length) -> AIC's point."""
    out = {}
    for p in json.loads(path.read_text())["points"]:
        inp = p["input"]
        nominal = inp.get("nominal_input_len", inp["input_len"])
        out[(model_of(inp["model"]), inp["concurrency"], nominal)] = p
    return out


def rows() -> list[dict]:
    extra = [_aic(p) for p in (AIC_MACHINE3, AIC_MACHINE6, AIC_MACHINE10, AIC_MACHINE12, AIC_MACHINE13,
                                 AIC_MACHINE14, AIC_MACHINE15)]
    aic = {name: {k: v for d in (_aic(path), *extra) for k, v in d.items()} for name, path in AIC.items()}
    out = []
    for label, model, path, system, role in RUNS:
        runs = load_runs(path)
        run = runs.layouts[0]
        starts = [r for r in runs.layouts if r.measured is not None]
        cmps = [{(f.figure, f.workload): f for f in compare_run(runs, r, system=system).figures} for r in starts]
        assert run.measured is not None
        for w in run.measured.workloads:
            wl = w.workload
            if wl.concurrency is None or wl.request_rate is not None:
                continue
            row = {"model": label, "role": role, "c": wl.concurrency, "in": wl.input_len, "out": wl.output_len,
                   "counted_in": round(statistics.mean(w.requests.input_tokens)) if w.requests else None}
            for fig, aic_key, _ in FIGURES:
                f = cmps[0][(fig, wl.label)]
                row[f"measured {fig}"] = statistics.median(
                    m for c in cmps if (m := c[(fig, wl.label)].measured) is not None)
                row[f"gpuprobe {fig}"] = f.predicted
                for name, pts in aic.items():
                    if row["counted_in"] == wl.input_len:  # one token a word: the nominal answer is the counted one
                        pts = aic[next(iter(AIC))]
                    p = pts.get((model, wl.concurrency, wl.input_len))
                    row[f"{name} {fig}"] = p.get(aic_key) if p and p.get("ok") else None
            out.append(row)
    return out


H100 = ROOT / "tests" / "data" / "vllm-h100-2026-11-25"
H100_RUNS = [("Llama-3.2-1B (m1)", H100 / "machine1-validation-1b.json", ROOT / "tests" / "data" /
              "h100-probe-2026-11-25.json", "fit"),
             ("Llama-3.1-8B (m1)", H100 / "machine1-validation-8b.json", ROOT / "tests" / "data" /
              "h100-probe-2026-11-25.json", "fit"),
             *[(label, H100 / f"machine2-validation-{f}.json", H100 / "machine2-probe.json", "held out")
               for label, f in (("Llama-3.2-1B (m2)", "1b"), ("Llama-3.2-3B (m2)", "3b"),
                                ("Llama-3.1-8B (m2)", "8b"), ("Qwen2.5-7B (m2)", "qwen7b"))]]
"""(label, run, probe, role) of the H100 engines with CUDA graphs. No H100 served runs exist: these are offline
batches (all n requests at t = 0, ``LLM.generate``), compared as one wave at concurrency n; AIC has no offline
mode, and its answer for a server at concurrency n with n requests is the nearest it gives."""
AIC_H100 = REPORT / "aic-0.12.0-h100-offline.json"


def h100_rows() -> list[dict]:
    aic = _aic(AIC_H100, model_of=lambda name: name)  # the H100 runs' shape names, as AIC was asked
    out = []
    for label, path, system, role in H100_RUNS:
        runs = load_runs(path)
        run = next(r for r in runs.layouts if not r.layout.enforce_eager and r.measured is not None)
        assert run.measured is not None
        figs = {(f.figure, f.workload): f for f in compare_run(runs, run, system=system).figures}
        for w in run.measured.workloads:
            wl = w.workload
            row = {"model": label, "role": role, "c": wl.num_requests, "in": wl.input_len, "out": wl.output_len}
            p = aic.get((runs.model_name, wl.num_requests, wl.input_len))
            for fig, aic_key, _ in FIGURES:
                f = figs[(fig, wl.label)]
                row[f"measured {fig}"] = f.measured
                row[f"gpuprobe {fig}"] = f.predicted
                row[f"AIC {fig}"] = p.get(aic_key) if p and p.get("ok") else None
            out.append(row)
    return out


def _err(pred: float | None, meas: float | None) -> float | None:
    return None if pred is None or not meas else (pred - meas) / meas


def _medians(sel: list[dict], pred: str, predictors: list[str]) -> str:
    """The median |error| cells of ``pred`` over the points of ``sel`` every one of ``predictors`` answered."""
    cells = []
    for fig, _, _ in FIGURES:
        errs = [abs(e) for r in sel if all(r[f"{q} {fig}"] is not None for q in predictors)
                and (e := _err(r[f"{pred} {fig}"], r[f"measured {fig}"])) is not None]
        cells.append(f"{100 * statistics.median(errs):.1f} % ({len(errs)})" if errs else "—")
    return " | ".join(cells)


def _point(r: dict, predictors: list[str]) -> str:
    """A point's cells: the measurement, then each prediction with its error."""
    line = ""
    for fig, _, _ in FIGURES:
        m = r[f"measured {fig}"]
        line += f" {m:,.1f} |"
        for pred in predictors:
            v = r[f"{pred} {fig}"]
            e = _err(v, m)
            line += " — |" if v is None or e is None else f" {v:,.1f} ({100 * e:+.0f} %) |"
    return line


def _median_table(data: list[dict], predictors: list[str], held_label: str) -> None:
    print("| predictor | points | " + " | ".join(label for _, _, label in FIGURES) + " |")
    print("|---|---|" + "---:|" * len(FIGURES))
    for role in ("all", "held out"):
        sel = [r for r in data if role == "all" or r["role"] == role]
        for pred in predictors:
            print(f"| {pred} | {held_label if role == 'held out' else 'all'} | {_medians(sel, pred, predictors)} |")


def main() -> int:
    data = rows()
    predictors = ["gpuprobe", *AIC]
    print("## Median |error| over the same points\n")
    _median_table(data, predictors, "held out (all but the Llama shapes)")
    unanswered = [r for r in data if any(r[f"{q} {fig}"] is None for q in predictors for fig, _, _ in FIGURES)]
    if unanswered:
        models = sorted({r["model"] for r in unanswered})
        print(f"| gpuprobe | points AIC has no answer for ({', '.join(models)}) | "
              f"{_medians(unanswered, 'gpuprobe', ['gpuprobe'])} |")
    h100 = h100_rows()
    print("\n## H100: offline batches, one wave of n requests (no H100 served runs exist)\n")
    _median_table(h100, ["gpuprobe", "AIC"], "held out (machine 2)")
    print("\n| model | n | prompt / output |" + "".join(f" {lab} measured | gpuprobe | AIC |" for _, _, lab in FIGURES))
    print("|---|---:|---|" + "---:|---:|---:|" * len(FIGURES))
    for r in h100:
        print(f"| {r['model']} | {r['c']} | {r['in']} / {r['out']} |" + _point(r, ["gpuprobe", "AIC"]))
    print("\n## Every H200 point (measured, then each prediction with its error)\n")
    head = "| model | c | prompt (sent → counted) |"
    for _, _, label in FIGURES:
        head += f" {label} measured | gpuprobe | AIC nominal | AIC counted |"
    print(head)
    print("|---|---:|---|" + "---:|---:|---:|---:|" * len(FIGURES))
    for r in data:
        print(f"| {r['model']} | {r['c']} | {r['in']} → {r['counted_in']} |" + _point(r, predictors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
