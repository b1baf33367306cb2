"""The engine steps of a vLLM log, by kind: what `gpuprobe validate --log-steps` recorded.

    python benchmarks/step_log.py LOG [LOG ...]

vLLM logs one `Iteration(N)` line per engine step when `enable_logging_iteration_details` is on (validate's
`--log-steps`): the requests and tokens of the prompts and decodes in the step and vLLM's iteration elapsed time
(with asynchronous scheduling, how long the engine waited for the step's output after launching the next step).
This groups the steps by kind (decode only, or carrying prompt tokens) and size (decoding requests; prompt
tokens), with the count and the median and 90th percentile of that time per group: the step classes the engine
simulation (`gpuprobe.predict.stepcost`) prices, so a step class the model gets wrong shows as a group whose time
does not follow its size.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpuprobe.predict.perf import percentile  # noqa: E402
from gpuprobe.validate.logparse import Iteration, parse_iterations  # noqa: E402

DECODE_BINS = (1, 8, 64, 512, 1 << 30)
PROMPT_BINS = (512, 2048, 8192, 1 << 30)


def _bin(value: int, edges: tuple[int, ...]) -> str:
    low = 1
    for edge in edges:
        if value <= edge:
            return str(edge) if low == edge else f"{low}-{edge}" if edge < 1 << 30 else f">{low - 1}"
        low = edge + 1
    raise AssertionError("the last edge takes every value")


def group(step: Iteration) -> tuple[str, str]:
    """(kind, size) of a step: ``decode`` by its decoding requests, ``prompt`` by its prompt tokens."""
    if step.prompt_tokens:
        return "prompt", _bin(step.prompt_tokens, PROMPT_BINS) + " prompt tokens"
    return "decode", _bin(step.decode_requests, DECODE_BINS) + " requests"


def table(steps: list[Iteration]) -> list[str]:
    groups: dict[tuple[str, str], list[Iteration]] = {}
    for s in steps:
        groups.setdefault(group(s), []).append(s)
    rows = ["| kind | size | steps | decoding requests (median) | elapsed ms median | p90 |",
            "|---|---|---:|---:|---:|---:|"]
    for (kind, size), ss in sorted(groups.items(), key=lambda kv: (kv[0][0], min(s.prompt_tokens or
                                                                                s.decode_requests for s in kv[1]))):
        ms = sorted(s.elapsed_ms for s in ss)
        rows.append(f"| {kind} | {size} | {len(ss)} | {statistics.median(s.decode_requests for s in ss):g} | "
                    f"{statistics.median(ms):.2f} | {percentile(ms, 90, True):.2f} |")
    return rows


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    for path in argv:
        steps = parse_iterations(Path(path).read_text(errors="replace"))
        print(f"## {path}: {len(steps)} steps\n")
        print("\n".join(table(steps)) if steps else "no Iteration lines: run validate with --log-steps")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
