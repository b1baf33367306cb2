"""Terminal tables of ``gpuprobe qualify``: the checks (grouped where every one passes), the outliers, the
verdict line."""

from __future__ import annotations

from collections import defaultdict

from rich.table import Table
from rich.text import Text

from gpuprobe.report.fmt import plain, safe
from gpuprobe.results.qualification import Check, Qualification

COLOURS = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red", "SKIP": "dim", "INFO": "cyan"}


def _fmt(value: float | None, unit: str | None) -> str:
    if value is None:
        return "—"
    if unit in ("count", "links"):
        return f"{value:.0f} {unit}"
    text = f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}" if unit else text


def _verdict(v: str) -> Text:
    return Text(v, style=COLOURS.get(v, ""))


def checks_table(q: Qualification) -> Table:
    names = [g.split(" ", 1)[-1] for g in q.gpus]
    gpus = f"{len(names)} × {names[0]}" if len(names) > 1 and len(set(names)) == 1 else ", ".join(q.gpus)
    table = Table(title=safe(f"gpuprobe qualify — {q.host or '?'} — {gpus or 'no device facts'}"),
                  title_justify="left", show_lines=True)
    number = {"justify": "right", "no_wrap": True}
    for name, kw in (("verdict", {}), ("subject", {}), ("test", {"overflow": "fold"}), ("figure", number),
                     ("ratio", number), ("expected (how derived)", {"ratio": 3}), ("cause → next step", {"ratio": 4})):
        table.add_column(name, **kw)
    grouped: dict[tuple[str, str], list[Check]] = defaultdict(list)
    for c in q.checks:
        if c.verdict in ("PASS", "INFO"):
            grouped[(c.test, c.verdict)].append(c)
    shown: set[tuple[str, str]] = set()
    for c in q.checks:
        if c.verdict == "SKIP":
            continue
        key = (c.test, c.verdict)
        if key in grouped and len(grouped[key]) > 1:
            if key not in shown:  # one row for every PASS (or INFO) of a test over many GPUs or pairs
                shown.add(key)
                table.add_row(*_group_row(grouped[key]))
            continue
        expected = Text(_fmt(c.expected, c.unit) if c.expected is not None else "—")
        if c.expectation_basis:
            expected.append("\n" + c.expectation_basis, style="dim")
        side = reference_text(c)
        if side:
            expected.append("\n" + side, style="cyan")
        why = Text(plain(c.cause))
        if c.next_step:
            why.append(f"\n→ {plain(c.next_step)}", style="italic")
        if c.detail and c.verdict != "PASS":
            why.append(f"\n{plain(c.detail)}", style="dim")
        ratio = f"{c.ratio:.0%}" if c.ratio is not None else "—"
        table.add_row(_verdict(c.verdict), safe(c.subject), safe(c.test), _fmt(c.value, c.unit), ratio, expected,
                      why)
    return table


def reference_text(c: Check) -> str:
    """``reference 55.4 GB/s · line rate 63 GB/s`` (what is known of the two), or ''."""
    parts = []
    if c.reference is not None:
        parts.append(f"reference {_fmt(c.reference, c.unit)}")
    if c.line_rate is not None:
        parts.append(f"line rate {_fmt(c.line_rate, c.unit)}")
    if c.confirmed:
        parts.append("confirmed")
    return " · ".join(parts)


def level_lines(q: Qualification) -> list[str]:
    """The level, the reference matched, the burn-in figures and the timeline in a few lines."""
    lines = [f"level: {q.level}"]
    if q.reference is not None:
        lines.append(f"reference: {q.reference.title} ({q.reference.why}); source: {q.reference.source}")
    elif q.reference_note:
        lines.append(q.reference_note)
    b = q.burn_in
    if b is not None:
        ratios = ", ".join(f"gpu{m.gpu} {m.ratio:.2f}" for m in b.matmul if m.ratio is not None) or "none"
        lines.append(f"burn-in: {b.ran_s or 0:.0f} of {b.duration_s:.0f} s under load ({b.backend}); matmul under "
                     f"load / alone: {ratios} (target ≥ {b.target_ratio:.2f})")
    tl = q.timeline
    if tl is not None:
        gpus = len({s.gpu for s in tl.samples})
        xid = "XID events watched" if tl.xid_supported else f"XID events not watched ({tl.xid_note})"
        lines.append(f"health timeline: {len(tl.samples)} NVML samples of {gpus} GPU(s), {len(tl.xid_events)} XID "
                     f"events; {xid}")
    return [plain(x) for x in lines]


def _group_row(checks: list[Check]) -> tuple:
    c0 = checks[0]
    values = [c.value for c in checks if c.value is not None]
    figure = "—" if not values else _fmt(values[0], c0.unit) if min(values) == max(values) else \
        f"{_fmt(min(values), None)} … {_fmt(max(values), c0.unit)}"
    exps = sorted({round(c.expected, 6) for c in checks if c.expected is not None})
    expected = Text("—" if not exps else _fmt(exps[0], c0.unit) if len(exps) == 1 else
                    f"{_fmt(exps[0], None)} … {_fmt(exps[-1], c0.unit)}")
    if c0.expectation_basis:
        expected.append("\n" + c0.expectation_basis, style="dim")
    refs = sorted({c.reference for c in checks if c.reference is not None})
    if refs:
        expected.append(f"\nreference {_fmt(refs[0], c0.unit)}" if len(refs) == 1 else
                        f"\nreference {_fmt(refs[0], None)} … {_fmt(refs[-1], c0.unit)}", style="cyan")
    ratios = [c.ratio for c in checks if c.ratio is not None]
    gpu_pair = any(c.subject.count("gpu") > 1 for c in checks)
    note = Text("every one passes" if c0.verdict == "PASS" else plain(c0.cause), style="dim")
    return (_verdict(c0.verdict), f"{len(checks)} {'pairs' if gpu_pair else 'GPUs'}", safe(c0.test), figure,
            f"≥ {min(ratios):.0%}" if ratios else "—", expected, note)


def skipped_lines(q: Qualification) -> list[str]:
    by_reason: dict[str, list[str]] = defaultdict(list)
    for c in q.checks:
        if c.verdict == "SKIP":
            by_reason[c.cause or "not measured"].append(c.test if c.subject in ("all", "run") else
                                                        f"{c.test} {c.subject}")
    return [plain(f"SKIP ({len(v)}): {reason} — {', '.join(v)}") for reason, v in by_reason.items()]


def outliers_table(q: Qualification) -> Table | None:
    if not q.outliers:
        return None
    table = Table(title="outliers (far below the median of the same test, or ≥ 10 % below the best peer on the "
                        "same link class)", title_justify="left")
    for name in ("rank", "test", "subject", "figure", "median", "of median", "best peer", "of best", "path"):
        table.add_column(name)
    for o in q.outliers:
        table.add_row(str(o.rank), safe(o.test), safe(o.subject), _fmt(o.value, o.unit), _fmt(o.median, o.unit),
                      f"{o.ratio_to_median:.0%}", _fmt(o.best, o.unit),
                      f"{o.ratio_to_best:.0%}" if o.ratio_to_best is not None else "—", safe(o.path_class or "—"))
    return table


def verdict_line(q: Qualification) -> str:
    c = q.counts
    return (f"verdict: {q.verdict} ({c.get('PASS', 0)} pass, {c.get('WARN', 0)} warn, {c.get('FAIL', 0)} fail, "
            f"{c.get('SKIP', 0)} skipped, {c.get('INFO', 0)} recorded) — exit code {q.exit_code}; thresholds: "
            f"{plain(q.thresholds_source)}")
