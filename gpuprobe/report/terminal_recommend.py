"""Terminal tables of ``gpuprobe recommend``: the ranked layouts and the layouts vLLM would not start."""

from __future__ import annotations

from rich import box
from rich.table import Table

from gpuprobe.report.fmt import safe
from gpuprobe.results.recommendation import LayoutResult, Recommendation


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _gpu_list(gpus: list[int]) -> str:
    """``[0, 1, 2, 3]`` -> ``0-3`` (runs of consecutive GPUs)."""
    runs: list[list[int]] = []
    for g in gpus:
        if runs and g == runs[-1][-1] + 1:
            runs[-1].append(g)
        else:
            runs.append([g])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ",".join(map(str, r)) for r in runs)


def _label(r: LayoutResult) -> str:
    return f"TP{r.tp} PP{r.pp}" + (f" x{r.replicas}" if r.replicas > 1 else "")


def title(rec: Recommendation) -> str:
    """Model, system, objective and the vLLM release the prediction follows (with the installed one when it
    differs)."""
    vllm = f"vLLM {rec.vllm_version} rules"
    if rec.vllm_installed and rec.vllm_installed != rec.vllm_version:
        vllm += f" (installed here: vLLM {rec.vllm_installed})"
    return f"{rec.model['name']} on {rec.system['name']} ({rec.system['source']}), objective {rec.objective}, {vllm}"


def layouts_table(rec: Recommendation, layouts: list[LayoutResult], slo: bool = False) -> Table:
    """The layouts that fit, ranked: memory (KV tokens, concurrency) and predicted speed."""
    table = Table(title=safe(title(rec)), title_justify="left", box=box.SIMPLE_HEAD)
    number = True
    columns = [("#", number), ("layout", False), ("GPUs", False), ("KV tokens", number), ("max conc.", number),
               ("all-reduce", False), ("TTFT ms", number), ("TTFT p99", number), ("TPOT ms", number),
               ("out tok/s", number), ("bottleneck", False)] + ([("SLO met", number)] if slo else [])
    for name, is_number in columns:
        if is_number:
            table.add_column(name, justify="right", no_wrap=True)
        else:
            table.add_column(name)
    for r in layouts:
        p = r.predicted
        gpus = " | ".join(_gpu_list(rg) for rg in r.replica_gpus)
        kv = f"{r.kv_cache_tokens:,}" if r.kv_cache_tokens is not None else "-"
        bottleneck = f"{p.bottleneck} {p.shares.get(p.bottleneck or '', 0):.0%}" if p and p.bottleneck else "-"
        row = [str(r.rank or "-"), _label(r), gpus, kv, _fmt(r.max_concurrency, 2), safe(r.allreduce_backend),
               _fmt(p.ttft_ms if p else None), _fmt(p.ttft_p99_ms if p else None), _fmt(p.tpot_ms if p else None, 2),
               _fmt(p.output_tokens_per_s if p else None, 0), safe(bottleneck)]
        if slo:  # the share of requests that met the SLO in the simulated run (goodput / throughput)
            row.append("-" if p is None or p.goodput_fraction is None else f"{p.goodput_fraction:.0%}")
        table.add_row(*row)
    return table


def cannot_start(rec: Recommendation) -> list[str]:
    """The layouts vLLM would not start, one line per reason: ``TP1 PP1 x1-8`` are TP1 PP1 with 1 to 8 replicas."""
    by_reason: dict[str, dict[tuple[int, int], list[int]]] = {}
    for r in rec.layouts:
        if not r.fits:
            by_reason.setdefault(r.reason or "no reason recorded", {}).setdefault((r.tp, r.pp), []).append(r.replicas)
    lines = []
    for reason, shapes in by_reason.items():
        labels = []
        for (tp, pp), reps in shapes.items():
            reps = sorted(reps)
            many = "" if reps == [1] else f" x{reps[0]}" if len(reps) == 1 else (
                f" x{reps[0]}-{reps[-1]}" if reps == list(range(reps[0], reps[-1] + 1)) else
                " x" + ",".join(map(str, reps)))
            labels.append(f"TP{tp} PP{pp}{many}")
        lines.append(f"{', '.join(labels)}: {reason}")
    return lines
