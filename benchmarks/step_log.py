"""The engine steps of a vLLM log, by kind: what `gpuprobe validate --log-steps` recorded, beside the step times
the engine simulation predicts for them.

    python benchmarks/step_log.py LOG [LOG ...]
    python benchmarks/step_log.py LOG --config config.json --system probe.json [--serve] [--context TOKENS]

vLLM logs one `Iteration(N)` line per engine step when `enable_logging_iteration_details` is on (validate's
`--log-steps`): the requests and tokens of the prompts and decodes in the step and vLLM's iteration elapsed time
(with asynchronous scheduling, how long the engine waited for the step's output after launching the next step).
`--log-steps` also has vLLM stamp its lines to the millisecond, so the interval between two logged steps is what
the engine took between their outputs (gaps over a second are idle time between loads and are left out). This
groups the steps by kind (decode only, or carrying prompt tokens) and size (decoding requests; prompt tokens), with
the count, the median elapsed time and the median and 90th percentile of the interval per group.

With `--config` and `--system` each step is also priced by `gpuprobe.predict.stepcost.StepCost` for that model on
that measured system (vLLM's defaults; `--serve` for `vllm serve`'s), each decoding request reading `--context`
tokens of KV cache (default 1,024) and each prompt chunk a whole prompt: a step class the model gets wrong shows
as a group whose interval and prediction part. Intervals shift by one line where a step is slow to launch: vLLM
hands out a step's output only once it has launched the next step, so a long launch lengthens the interval of the
line before it. The last line sums the intervals and the predictions of every step that has both.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpuprobe.predict.perf import percentile  # noqa: E402
from gpuprobe.validate.logparse import Iteration, parse_iterations  # noqa: E402

DECODE_BINS = (1, 8, 64, 512, 1 << 30)
PROMPT_BINS = (512, 2048, 8192, 1 << 30)
IDLE_S = 1.0
"""A longer gap between two logged steps is idle time (between loads), not a step."""

Predict = Callable[[Iteration], float]
"""Predicted step time in ms."""


def _bin(value: int, edges: tuple[int, ...]) -> tuple[int, str]:
    """(lower edge, label) of the bin that holds ``value``."""
    low = 1
    for edge in edges:
        if value <= edge:
            return low, str(edge) if low == edge else f"{low}-{edge}" if edge < 1 << 30 else f">{low - 1}"
        low = edge + 1
    raise AssertionError("the last edge takes every value")


def group(step: Iteration) -> tuple[str, int, str]:
    """(kind, lower edge, size) of a step: ``decode`` by its decoding requests, ``prompt`` by its prompt tokens."""
    if step.prompt_tokens:
        low, label = _bin(step.prompt_tokens, PROMPT_BINS)
        return "prompt", low, label + " prompt tokens"
    low, label = _bin(step.decode_requests, DECODE_BINS)
    return "decode", low, label + " requests"


def intervals(steps: list[Iteration]) -> list[float | None]:
    """Per step, ms since the step logged before it (None for the first, across an idle gap, or without times)."""
    out: list[float | None] = [None]
    for prev, cur in itertools.pairwise(steps):
        if prev.time_s is None or cur.time_s is None or not 0 <= cur.time_s - prev.time_s <= IDLE_S:
            out.append(None)
        else:
            out.append(1e3 * (cur.time_s - prev.time_s))
    return out


def _ms(values: list[float], q: float | None = None) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values) if q is None else percentile(sorted(values), q, True):.2f}"


def table(steps: list[Iteration], predict: Predict | None = None) -> list[str]:
    gaps = intervals(steps)
    groups: dict[tuple[str, int, str], list[int]] = {}
    for i, s in enumerate(steps):
        groups.setdefault(group(s), []).append(i)
    head = "| kind | size | steps | decoding requests (median) | elapsed ms median | interval ms median | p90 |"
    rule = "|---|---|---:|---:|---:|---:|---:|"
    if predict is not None:
        head, rule = head + " predicted ms median |", rule + "---:|"
    rows = [head, rule]
    measured_s = predicted_s = 0.0
    for (kind, _, size), idx in sorted(groups.items()):
        ss = [steps[i] for i in idx]
        iv = [g for i in idx if (g := gaps[i]) is not None]
        row = (f"| {kind} | {size} | {len(ss)} | {statistics.median(s.decode_requests for s in ss):g} | "
               f"{_ms([s.elapsed_ms for s in ss])} | {_ms(iv)} | {_ms(iv, 90)} |")
        if predict is not None:
            pred = [predict(s) for s in ss]
            row += f" {_ms(pred)} |"
            for i, p in zip(idx, pred, strict=True):
                if (g := gaps[i]) is not None:
                    measured_s, predicted_s = measured_s + g / 1e3, predicted_s + p / 1e3
        rows.append(row)
    if predict is not None and measured_s:
        rows.append(f"\nsteps with an interval: {measured_s:.2f} s measured, {predicted_s:.2f} s predicted "
                    f"({predicted_s / measured_s - 1:+.1%})")
    return rows


def step_predictor(config: Path, system: Path, serve: bool, context: int) -> Predict:
    """Each logged step priced by StepCost for ``config`` on the probed ``system`` at vLLM's defaults."""
    from gpuprobe.predict.calibration import Calibration
    from gpuprobe.predict.layouts import assign_gpus
    from gpuprobe.predict.model_spec import model_spec_from_dict
    from gpuprobe.predict.options import ServeOptions
    from gpuprobe.predict.recommend import predict_layout_memory
    from gpuprobe.predict.stepcost import Batch, StepCost
    from gpuprobe.predict.system import system_from_results
    from gpuprobe.results.io import load_results

    cal = Calibration()
    spec = model_spec_from_dict(json.loads(config.read_text()), name=config.parent.name or "model")
    sysp = system_from_results(load_results(str(system)), name=str(system))
    layout = assign_gpus(sysp, 1, 1, 1)
    mem = predict_layout_memory(spec, sysp, layout, ServeOptions(usage_context="serve" if serve else "llm"), cal)
    cost = StepCost(spec, sysp, layout, 0, mem, cal)

    def predict(s: Iteration) -> float:
        chunk = s.prompt_tokens / s.prompt_requests if s.prompt_requests else 0.0
        batch = Batch(tokens=s.prompt_tokens + s.decode_tokens, seqs=s.prompt_requests + s.decode_requests,
                      context_tokens=float(s.decode_requests * context), prompt_tokens=s.prompt_tokens,
                      attn_work=s.prompt_requests * chunk * chunk / 2, sampled=s.prompt_requests + s.decode_requests)
        return 1e3 * cost.step_time(batch).total_s

    return predict


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", type=Path)
    ap.add_argument("--config", type=Path, help="the model's config.json (with --system: predicted step times)")
    ap.add_argument("--system", type=Path, help="gpuprobe probe results of the machine the log comes from")
    ap.add_argument("--serve", action="store_true", help="the log is a `vllm serve` engine's (its defaults)")
    ap.add_argument("--context", type=int, default=1024, help="KV tokens each decoding request reads (1024)")
    args = ap.parse_args(argv)
    if (args.config is None) != (args.system is None):
        ap.error("--config and --system go together")
    predict = step_predictor(args.config, args.system, args.serve, args.context) if args.config else None
    for path in args.logs:
        steps = parse_iterations(path.read_text(errors="replace"))
        print(f"## {path}: {len(steps)} steps\n")
        print("\n".join(table(steps, predict)) if steps else "no Iteration lines: run validate with --log-steps")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
