"""Rich tables for results files: the probe summary, the all-reduce sweep and the probe list."""

from __future__ import annotations

from collections import defaultdict

from rich import box
from rich.table import Table

from gpuprobe.report.fmt import NA, host_line, plain, ranks_label, safe, size_label
from gpuprobe.results.model import Measurement, Results


def fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return NA
    if unit == "GB/s":
        return f"{v:,.2f}"
    if unit == "ns":
        return f"{v:,.0f}"
    return f"{v:,.2f}"



def _route(m: Measurement) -> str:
    if m.src is None and m.dst is None:
        return NA
    route = f"{m.src} → {m.dst}"
    if m.initiator and m.direction == "d2d":
        route += f" (by {m.initiator})"
    return route


def _status(m: Measurement) -> str:
    if m.status == "ok":
        if m.verified:
            return "[green]✓ data[/green]"
        return "ok" if m.verified is None else "[yellow]unchecked[/yellow]"
    if m.status == "mismatch":
        return f"[red]DATA MISMATCH[/red] {safe(m.reason or '')}"
    return f"[red]error[/red]: {safe(m.reason or '')}"


def summary_table(results: Results) -> Table:
    """One row per measured (or failed) figure: the median, the spread and the data check (✓: every copied
    byte matched). The time of each probe is in :func:`timing_table`.

    Waived probes are not rows: :func:`waived_lines` groups them by reason under the table.
    """
    dev = ", ".join(f"GPU{d.index} {d.name}" for d in results.devices) or "no GPU"
    t = Table(title=safe(f"gpuprobe results — {results.run.hostname or '?'} — {dev}"), title_justify="left",
              box=box.SIMPLE_HEAD)
    t.add_column("probe", no_wrap=True)
    t.add_column("route", no_wrap=True)
    t.add_column("size", justify="right", no_wrap=True)
    t.add_column("median", justify="right", no_wrap=True)
    t.add_column("min–max", justify="right", no_wrap=True)
    t.add_column("cv", justify="right", no_wrap=True)
    t.add_column("check")
    for m in results.measurements:
        if m.direction == "collective" or m.status == "waived":
            continue
        spread = f"{fmt_value(m.stat.min, m.unit)}–{fmt_value(m.stat.max, m.unit)}" if m.stat else ""
        cv = f"{m.stat.cv * 100:.1f}%" if m.stat else ""
        median = f"{fmt_value(m.value, m.unit)} {m.unit}" if m.value is not None else NA
        t.add_row(safe(m.probe), safe(_route(m)), size_label(m.size_bytes), median, spread, cv, _status(m))
    host = host_line(results.run.cpu_model, results.run.host_python_loop_ns)
    if host:
        t.caption, t.caption_justify = safe(host), "left"
    return t


def waived_lines(results: Results) -> list[str]:
    """``waived (reason): key, key, ...`` — one line per reason (plain text, not markup)."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for m in results.measurements:
        if m.status == "waived" and m.probe not in by_reason[m.reason or ""]:
            by_reason[m.reason or ""].append(m.probe)
    return [plain(f"waived ({reason}): {', '.join(keys)}") for reason, keys in by_reason.items()]


def allreduce_table(results: Results, every_size: bool = True) -> Table | None:
    """nccl-tests-like rows per group: size, time, algbw, busbw, #wrong.

    ``every_size`` False: the largest group keeps its whole sweep, the other groups (the pairs) show their
    largest message and any size that failed or did not verify; the caption says so."""
    groups: dict[tuple[int, ...], list[Measurement]] = defaultdict(list)
    failures = []
    for m in results.measurements:
        if m.direction == "collective" or m.probe.startswith("all_reduce"):
            if m.ranks is None:
                failures.append(m)
            else:
                groups[tuple(m.ranks)].append(m)
    if not groups and not failures:
        return None
    t = Table(title="all-reduce (float32 sum; time per operation; busbw = algbw × 2(n-1)/n as nccl-tests)",
              title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("group", "engine", "size", "time µs", "algbw GB/s", "busbw GB/s", "#wrong"):
        t.add_column(col, justify="right" if col not in ("group", "engine") else "left")
    whole = max(groups, key=len, default=())
    hidden = 0
    for ranks, ms in groups.items():
        largest = max((m.size_bytes or 0 for m in ms), default=0)
        for m in ms:
            if not (every_size or ranks == whole or m.size_bytes == largest or m.status != "ok" or m.wrong_elements):
                hidden += 1
                continue
            t.add_row(ranks_label(ranks), safe(m.engine or NA), size_label(m.size_bytes),
                      fmt_value(m.value, "us"), fmt_value(m.algbw_gbps, "GB/s"), fmt_value(m.busbw_gbps, "GB/s"),
                      str(m.wrong_elements) if m.wrong_elements is not None else safe(m.reason or NA))
    for m in failures:
        t.add_row(NA, safe(m.engine or NA), NA, NA, NA, NA, safe(f"{m.status}: {m.reason}"))
    if hidden:
        t.caption = (f"{len(groups) - 1} smaller groups: their largest message only ({hidden} more rows with --all "
                     "or --json)")
        t.caption_justify = "left"
    return t


def timing_table(results: Results) -> Table:
    t = Table(title="time per probe", title_justify="left", box=box.SIMPLE_HEAD)
    t.add_column("probe")
    t.add_column("seconds", justify="right")
    for k, v in results.probe_seconds.items():
        t.add_row(safe(k), f"{v:.2f}")
    total = sum(results.probe_seconds.values())
    t.add_row("[bold]all probes[/bold]", f"[bold]{total:.2f}[/bold]")
    if results.setup_seconds is not None:
        t.add_row("[dim]setup (NVML, CUDA context, kernels)[/dim]", f"[dim]{results.setup_seconds:.2f}[/dim]")
    return t


def probe_list_table(specs: list) -> Table:
    t = Table(title="probes (select with --tests KEY, PREFIX, GROUP or INDEX)", title_justify="left")
    for col in ("#", "key", "group", "unit", "description"):
        t.add_column(col)
    for i, s in enumerate(specs):
        t.add_row(str(i), s.key, s.group, s.unit, s.description + (f" (≥{s.min_gpus} GPUs)" if s.min_gpus > 1 else ""))
    return t
