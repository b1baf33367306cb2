"""What a report says, independent of its format: a Document of sections holding paragraphs, tables and figures.

``build_document`` reads results files (gpuprobe's own or imported), validation files and, where given, the
qualification of each results file, and decides every number and sentence; ``html`` and ``markdown`` only lay
it out. Strings here are plain text (the renderers escape them). Units are uniform: GB/s (1e9 B/s) for
bandwidth, µs or ns as measured for latency, sizes in B/KiB/MiB/GiB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gpuprobe.report import plots, plots_health
from gpuprobe.report.fmt import NA, host_line, ranks_label, size_label
from gpuprobe.results.model import Measurement, Results
from gpuprobe.results.validation import ValidationRuns


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    align: list[str] = field(default_factory=list)
    """``l`` or ``r`` per column (default: left for the first, right for the rest)."""
    cell_class: dict[tuple[int, int], str] = field(default_factory=dict)
    """(row, column) -> ``pass``/``warn``/``fail``/``skip``/``muted``: how a renderer may colour a cell."""
    caption: str | None = None


@dataclass
class Figure:
    name: str
    """File-name stem for Markdown PNGs (``allreduce``, ``topology``, ...)."""
    title: str
    draw: Callable[[], Any]
    """Returns a matplotlib Figure (drawn only when rendered)."""
    caption: str | None = None


@dataclass
class Section:
    title: str
    blocks: list[Any] = field(default_factory=list)
    """str (a paragraph), list[str] (bullets), Table or Figure, in order."""


@dataclass
class Document:
    title: str
    subtitle: str
    summary: list[tuple[str, str]]
    """(level, sentence): level ``pass``/``warn``/``fail``/``info``; the verdict box at the top."""
    sections: list[Section]


def fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return NA
    if unit == "GB/s":
        return f"{v:,.1f}" if v >= 100 else f"{v:,.2f}"
    if unit == "ns":
        return f"{v:,.0f}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:,.2f}"



def route(m: Measurement) -> str:
    if m.src is None and m.dst is None:
        return NA
    return f"{m.src} → {m.dst}" + (f" (by {m.initiator})" if m.direction == "d2d" and m.initiator else "")


def _label(path: str, res: Results) -> str:
    stem = path.rsplit("/", 1)[-1]
    return f"{stem} ({res.run.source})" if res.run.source != "gpuprobe" else stem


def _host_summary(runs: Sequence[tuple[str, Results]]) -> Section:
    keys = [("source", lambda r: r.run.source + (f" {r.run.options['tool_version']}"
                                                 if r.run.options.get("tool_version") else "")),
            ("host", lambda r: r.run.hostname or NA),
            ("GPUs", lambda r: ", ".join(sorted({f"{sum(d.name == n for d in r.devices)} × {n}"
                                                  for n in {d.name for d in r.devices}})) or NA),
            ("GPU memory", lambda r: ", ".join(sorted({f"{d.memory_total_bytes / 2**30:.0f} GiB"
                                                       for d in r.devices if d.memory_total_bytes})) or NA),
            ("PCIe link (current / max)", _pcie_summary),
            ("NVLinks active", lambda r: ", ".join(f"GPU{d.index}: {sum(x.active for x in d.nvlinks)}"
                                                   for d in r.devices if d.nvlinks) or "none reported"),
            ("driver", lambda r: r.run.driver_version or NA),
            ("CUDA driver / runtime", lambda r: f"{r.run.cuda_driver_version or NA} / "
                                                f"{r.run.cuda_runtime_version or NA}"),
            ("torch / NCCL / CuPy", lambda r: f"{r.run.torch_version or NA} / {r.run.nccl_version or NA} / "
                                              f"{r.run.cupy_version or NA}"),
            ("OS / Python", lambda r: f"{r.run.os or NA} / {r.run.python or NA}"),
            ("CPU", lambda r: r.run.cpu_model or NA),
            ("Python loop (ns / iteration)", lambda r: NA if r.run.host_python_loop_ns is None else
             f"{r.run.host_python_loop_ns:.0f}"),
            ("virtual machine", lambda r: NA if r.run.virtual_machine is None else
             ("yes" if r.run.virtual_machine else "no")),
            ("measured (UTC)", lambda r: r.run.started_utc),
            ("status", lambda r: r.status + (f" ({len(r.problems)} problems)" if r.problems else ""))]
    rows = [[k, *[str(f(res)) for _, res in runs]] for k, f in keys]
    return Section("Host and software", [Table(["", *[label for label, _ in runs]], rows,
                                                align=["l"] * (len(runs) + 1))])


def _pcie_summary(r: Results) -> str:
    links = set()
    for d in r.devices:
        if d.pcie_gen_current is None:
            continue
        s = f"Gen{d.pcie_gen_current} x{d.pcie_width_current} / Gen{d.pcie_gen_max} x{d.pcie_width_max}"
        links.add(s)
    return ", ".join(sorted(links)) or NA


def _topology_section(runs: Sequence[tuple[str, Results]]) -> Section:
    sec = Section("Topology")
    for label, res in runs:
        prefix = f"{label}: " if len(runs) > 1 else ""
        if res.topology is None and not res.devices:
            sec.blocks.append(f"{prefix}no topology in this file.")
            continue
        sec.blocks.append(Figure(f"topology-{len(sec.blocks)}", f"{prefix}host, GPUs and links",
                                 partial(plots.topology_figure, res),
                                 "Edges to the host: PCIe link and the measured pinned copy-engine rate (→ host to "
                                 "GPU, ← GPU to host). GPU pairs: path class as in nvidia-smi topo -m."))
        if res.topology and res.topology.pairs:
            n = res.topology.gpu_count
            cls = {(p.a, p.b): p.path_class for p in res.topology.pairs}
            rows = [[f"GPU{a}", *["X" if a == b else cls.get((min(a, b), max(a, b)), "?") for b in range(n)]]
                    for a in range(n)]
            sec.blocks.append(Table(["", *[f"GPU{i}" for i in range(n)]], rows, caption=f"{prefix}path classes"))
            if n >= 3:
                sec.blocks.append(Figure(f"path-matrix-{len(sec.blocks)}", f"{prefix}path classes",
                                         partial(plots.path_matrix_figure, res)))
        if res.topology and res.topology.unavailable:
            sec.blocks.append([f"not reported by the driver: {u}" for u in res.topology.unavailable])
    return sec


def _bandwidth_section(runs: Sequence[tuple[str, Results]]) -> Section:
    sec = Section("Bandwidth")
    keys: list[tuple[str, str | None, str | None, str]] = []
    vals: dict[tuple[int, tuple[str, str | None, str | None, str]], Measurement] = {}
    for k, (_, res) in enumerate(runs):
        for m in res.measurements:
            if m.unit != "GB/s" or m.direction == "collective" or m.probe.startswith("all_reduce"):
                continue
            key: tuple[str, str | None, str | None, str] = (m.probe, m.src, m.dst, m.traffic)
            if m.status == "waived" and m.src is None:
                continue
            if key not in keys:
                keys.append(key)
            vals[k, key] = m
    if not keys:
        sec.blocks.append("No bandwidth figures in these files.")
        return sec
    multi = len(runs) > 1
    cols = ["test", "route", "size"] + ([label for label, _ in runs] if multi else ["median GB/s", "min … max",
                                                                                    "cv", "check"])
    table = Table(cols, [], align=["l", "l", "r"] + ["r"] * (len(cols) - 3 - (not multi)) + ["l"] * (not multi))
    for key in keys:
        first = next(vals[k, key] for k in range(len(runs)) if (k, key) in vals)
        row = [key[0], route(first), size_label(first.size_bytes)]
        if multi:
            for k in range(len(runs)):
                mk = vals.get((k, key))
                row.append(fmt(mk.value, "GB/s") if mk and mk.status == "ok" else (mk.status if mk else NA))
        else:
            m = first
            row += [fmt(m.value, "GB/s"),
                    f"{fmt(m.stat.min, 'GB/s')} … {fmt(m.stat.max, 'GB/s')}" if m.stat and m.stat.n > 1 else NA,
                    f"{m.stat.cv * 100:.1f} %" if m.stat and m.stat.n > 1 else NA, _check(m)]
            cls = {"ok": "pass" if m.verified else None, "mismatch": "fail", "error": "fail", "waived": "skip"}
            klass = cls.get(m.status)
            if klass:
                table.cell_class[len(table.rows), 6] = klass
        table.rows.append(row)
    for label, res in runs:
        prefix = f"{label}: " if multi else ""
        sec.blocks.append(Figure(f"host-heatmap-{len(sec.blocks)}", f"{prefix}host ↔ GPU",
                                 partial(plots.host_heatmap, res)))
        for probe in plots.pair_probes(res):
            sec.blocks.append(Figure(f"pair-{probe}-{len(sec.blocks)}", f"{prefix}{probe}",
                                     partial(plots.pair_heatmap, res, probe),
                                     "row: source GPU, column: destination GPU"))
    if multi:
        sec.blocks.append(Figure("host-bars", "host ↔ GPU0 side by side", lambda: plots.host_bars(runs)))
    sec.blocks.append(table)
    waived = sorted({f"{m.probe}: {m.reason}" for _, r in runs for m in r.measurements
                     if m.status == "waived" and m.unit == "GB/s" and not m.probe.startswith("all_reduce")})
    if waived:
        sec.blocks.append(f"Waived ({len(waived)}), not applicable on this system:")
        sec.blocks.append(waived)
    return sec


def _check(m: Measurement) -> str:
    if m.status == "ok":
        return "verified" if m.verified else ("not checked" if m.verified is None else "unchecked")
    if m.status == "mismatch":
        return f"DATA MISMATCH ({m.wrong_elements} wrong)"
    return f"{m.status}: {m.reason or NA}"


def _latency_section(runs: Sequence[tuple[str, Results]]) -> Section | None:
    rows, classes = [], {}
    for label, res in runs:
        for m in res.measurements:
            if m.unit in ("us", "ns") and m.direction != "collective" and not m.probe.startswith("all_reduce"):
                if m.status == "waived" and m.src is None:
                    continue
                spread = f"{fmt(m.stat.min, m.unit)} … {fmt(m.stat.max, m.unit)}" if m.stat and m.stat.n > 1 else NA
                rows.append(([label] if len(runs) > 1 else []) + [m.probe, route(m), size_label(m.size_bytes),
                                                                  fmt(m.value, m.unit), spread,
                                                                  "µs" if m.unit == "us" else m.unit, _check(m)])
                if m.status != "ok":
                    classes[len(rows) - 1, len(rows[-1]) - 1] = "skip" if m.status == "waived" else "fail"
    if not rows:
        return None
    cols = (["file"] if len(runs) > 1 else []) + ["test", "route", "size", "median", "min … max", "unit", "check"]
    t = Table(cols, rows, align=["l"] * (len(cols) - 5) + ["r", "r", "r", "l", "l"], cell_class=classes)
    return Section("Latency", ["Pointer chase (dependent loads) and small-copy latency; lower is better.", t])


def _allreduce_section(runs: Sequence[tuple[str, Results]]) -> Section | None:
    groups = [(label, res, key, ms) for label, res in runs for key, ms in plots.allreduce_groups(res).items()]
    if not groups:
        return None
    sec = Section("All-reduce")
    sec.blocks.append(Figure("allreduce", "time and busbw against message size",
                             lambda: plots.allreduce_figure(runs),
                             "busbw = algbw × 2(n−1)/n (nccl-tests' definition). Dashed/dotted grey: a real "
                             "nccl-tests run on the same GPU model with the same number of ranks, where one exists."))
    anchors = {a["source"] for _, res, (_, g), _ in groups for a in plots.matching_anchors(res, len(g))}
    if anchors:
        sec.blocks.append(["anchor: " + a for a in sorted(anchors)])
    for label, _res, (probe, group), ms in groups:
        landmarks = _landmarks(ms)
        pick = [m for m in ms if (m.size_bytes or 0) in landmarks]
        rows = [[size_label(m.size_bytes), fmt(m.value, "us"), fmt(m.algbw_gbps, "GB/s"), fmt(m.busbw_gbps, "GB/s"),
                 str(m.wrong_elements) if m.wrong_elements is not None else NA] for m in pick]
        cap = f"{label + ': ' if len(runs) > 1 else ''}{probe}, GPUs {ranks_label(group)}, " \
              f"{ms[0].engine or '?'} ({len(ms)} sizes; selected rows)"
        sec.blocks.append(Table(["size", "time µs", "algbw GB/s", "busbw GB/s", "#wrong"], rows, caption=cap))
    return sec


def _landmarks(ms: list[Measurement]) -> set[int]:
    sizes = sorted(m.size_bytes or 0 for m in ms)
    want = {8, 1 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20, 1 << 30}
    picked = {s for s in sizes if s in want} | {sizes[0], sizes[-1]}
    return picked if len(picked) >= 3 else set(sizes)


def _validation_section(vals: Sequence[tuple[str, ValidationRuns]]) -> Section | None:
    if not vals:
        return None
    sec = Section("Predicted vs measured (real vLLM runs)")
    sec.blocks.append("Each layout was started with real vLLM; the predictor's figures for the same layout and "
                      "workload beside what vLLM measured. Error = (predicted − measured) / measured.")
    for label, vr in vals:
        host = host_line(vr.run.cpu_model, vr.run.host_python_loop_ns)
        if host:
            sec.blocks.append(f"{label}: {host} (at the start).")
        for lr in vr.layouts:
            head = f"{label}: {vr.model_name}, {lr.layout.name}, {lr.status}"
            if lr.measured and lr.measured.vllm_version:
                head += f" (vLLM {lr.measured.vllm_version}"
                head += f", engine start {lr.measured.engine_start_s:.0f} s)" if lr.measured.engine_start_s else ")"
            if lr.comparison is None or not lr.comparison.figures:
                why = (lr.comparison and lr.comparison.reason) or lr.reason or "none stored in the file: 'gpuprobe " \
                    "validate --compare' predicts it"
                sec.blocks.append(f"{head}: no comparison ({why})")
                continue
            loop_ns = {w.workload.label: w.host_python_loop_ns
                       for w in (lr.measured.workloads if lr.measured else []) if w.host_python_loop_ns}
            t = Table(["figure", "workload", "predicted", "measured", "error",
                       *(["host loop (ns)"] if loop_ns else [])], [], caption=head)
            for f in lr.comparison.figures:
                err = f"{f.rel_error * 100:+.0f} %" if f.rel_error is not None else NA
                t.rows.append([plots.FIGURE_LABELS.get(f.figure, f.figure), f.workload or "engine",
                               fmt(f.predicted), fmt(f.measured), err,
                               *([f"{loop_ns[f.workload]:.0f}" if f.workload in loop_ns else NA] if loop_ns else [])])
                if f.rel_error is not None:
                    cls = "pass" if abs(f.rel_error) <= 0.25 else ("warn" if abs(f.rel_error) <= 0.5 else "fail")
                    t.cell_class[len(t.rows) - 1, 4] = cls
            sec.blocks.append(t)
    sec.blocks.append(Figure("validation", "predicted against measured", lambda: plots.validation_figure(vals),
                             "Points on the line are exact; the band is ±25 %."))
    return sec


VERDICT_CLASS = {"PASS": "pass", "WARN": "warn", "FAIL": "fail", "SKIP": "skip", "INFO": "muted"}


def _qualification_section(runs: Sequence[tuple[str, Results]], quals: Sequence[Any | None]) -> Section | None:
    if not any(q is not None for q in quals):
        return None
    sec = Section("Qualification")
    for (label, _), q in zip(runs, quals, strict=True):
        if q is None:
            continue
        counts = ", ".join(f"{v} {k}" for k, v in (getattr(q, "counts", {}) or {}).items() if v)
        sec.blocks.append(f"{label}: verdict {q.verdict} (exit code {getattr(q, 'exit_code', NA)}); {counts}.")
        sec.blocks.extend(level_blocks(q, label))
        t = Table(["verdict", "subject", "test", "measured", "expected", "reference", "line rate", "ratio",
                   "expectation from", "cause / next step"], [],
                  align=["l", "l", "l", "r", "r", "r", "r", "r", "l", "l"])
        order = {"FAIL": 0, "WARN": 1, "PASS": 2, "INFO": 3, "SKIP": 4}
        for c in sorted(q.checks, key=lambda c: order.get(c.verdict, 5)):
            unit = getattr(c, "unit", None) or ""
            why = " — ".join(x for x in (getattr(c, "cause", None), getattr(c, "next_step", None)) if x)
            basis = getattr(c, "expectation_basis", None)
            ref, line = getattr(c, "reference", None), getattr(c, "line_rate", None)
            confirmed = " (confirmed)" if getattr(c, "confirmed", None) else ""
            t.rows.append([c.verdict + confirmed, c.subject, c.test, f"{fmt(c.value, unit)} {unit}".strip(),
                           f"{fmt(c.expected, unit)} {unit}".strip(),
                           f"{fmt(ref, unit)} {unit}".strip() if ref is not None else NA,
                           f"{fmt(line, unit)} {unit}".strip() if line is not None else NA,
                           f"{c.ratio:.2f}" if c.ratio is not None else NA, basis or NA, why or NA])
            t.cell_class[len(t.rows) - 1, 0] = VERDICT_CLASS.get(c.verdict, "muted")
        sec.blocks.append(t)
    return sec


def level_blocks(q: Any, label: str) -> list[Any]:
    """The level, the reference matched, the burn-in figures and the health timeline of a qualification."""
    blocks: list[Any] = []
    facts = [f"level: {getattr(q, 'level', 'input')}"]
    ref = getattr(q, "reference", None)
    if ref is not None:
        facts.append(f"reference: {ref.title} ({ref.why}); source: {ref.source}")
    elif getattr(q, "reference_note", None):
        facts.append(q.reference_note)
    blocks.append(facts)
    b = getattr(q, "burn_in", None)
    if b is not None:
        rows = [[f"gpu{m.gpu}", fmt(m.alone_tflops, "TFLOP/s"), fmt(m.under_load_tflops, "TFLOP/s"),
                 f"{m.ratio:.3f}" if m.ratio is not None else NA] for m in b.matmul]
        cap = (f"burn-in: {b.ran_s or 0:.0f} of {b.duration_s:.0f} s under load ({b.backend or '?'}); bf16 matmul "
               f"under copy and all-reduce load / alone, target ≥ {b.target_ratio:.2f}")
        if b.allreduce_busbw_gbps is not None:
            cap += f"; all-reduce under load {b.allreduce_busbw_gbps:.1f} GB/s busbw"
        blocks.append(Table(["GPU", "matmul alone TFLOP/s", "under load TFLOP/s", "ratio"], rows, caption=cap))
        if b.problems or b.notes:
            blocks.append([*b.problems, *b.notes])
    tl = getattr(q, "timeline", None)
    if tl is not None and tl.samples:
        xid = "XID events watched" if tl.xid_supported else f"XID events not watched: {tl.xid_note}"
        stem = "".join(ch if ch.isalnum() else "-" for ch in label)[-40:].strip("-")
        blocks.append(Figure(f"health-timeline-{stem}", f"{label}: NVML health during the {q.level} level",
                             partial(plots_health.timeline_figure, tl),
                             f"{len(tl.samples)} samples, about one a second per GPU; shaded: GPUs under load; "
                             f"red dashes: XID events; triangles: throttling. {xid}."
                             + (" Constructed test sequence, not a measurement." if tl.constructed else "")))
        if tl.notes:
            blocks.append(list(tl.notes))
    return blocks


def _summary(runs: Sequence[tuple[str, Results]], quals: Sequence[Any | None]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for (label, res), q in zip(runs, quals, strict=True):
        prefix = f"{label}: " if len(runs) > 1 else ""
        if q is not None:
            level = {"PASS": "pass", "WARN": "warn", "FAIL": "fail"}.get(q.verdict, "info")
            bad = [c for c in q.checks if c.verdict in ("WARN", "FAIL")]
            out.append((level, f"{prefix}qualification {q.verdict}" + (
                f": {len(bad)} checks need attention, worst: {bad[0].subject} {bad[0].test}" if bad else
                f": every judged figure within its band ({len(q.checks)} checks)")))
        gpus = {d.name for d in res.devices}
        what = f"{len(res.devices)} × {', '.join(sorted(gpus))}" if gpus else "no GPU facts"
        ok = [m for m in res.measurements if m.status == "ok"]
        verified = sum(1 for m in ok if m.verified)
        bad = [m for m in res.measurements if m.status in ("error", "mismatch")]
        waived = sum(1 for m in res.measurements if m.status == "waived")
        h2d = [m.value for m in ok if m.probe == "host_to_device_memcpy_ce" and m.value]
        d2h = [m.value for m in ok if m.probe == "device_to_host_memcpy_ce" and m.value]
        hbm = [m.value for m in ok if m.probe == "device_local_copy" and m.value]
        facts = []
        if h2d:
            facts.append(f"host → GPU {min(h2d):.1f} GB/s")
        if d2h:
            facts.append(f"GPU → host {min(d2h):.1f} GB/s")
        if hbm:
            facts.append(f"HBM copy {min(hbm):,.0f} GB/s")
        line = f"{prefix}{what} ({res.run.source}, {res.run.hostname or 'host ?'})"
        out.append(("info", line + (": " + ", ".join(facts) if facts else "")))
        if bad:
            out.append(("fail", f"{prefix}{len(bad)} figures failed or did not verify: "
                                + "; ".join(f"{m.probe} {route(m)}: {m.reason or m.status}" for m in bad[:3])))
        else:
            checked = f", {verified} verified byte for byte" if verified else ""
            out.append(("pass", f"{prefix}{len(ok)} figures measured{checked}; {waived} waived "
                                "(not applicable here), none failed"))
        for p in res.problems:
            out.append(("warn", f"{prefix}{p}"))
    return out


def _cluster_section(runs: Sequence[tuple[str, Results]], quals: Sequence[Any | None]) -> Section | None:
    from gpuprobe.report.cluster import cluster_section  # it builds on this module's tables

    return cluster_section(runs, quals)


def build_document(runs: Sequence[tuple[str, Results]], validations: Sequence[tuple[str, ValidationRuns]] = (),
                   qualifications: Sequence[Any | None] | None = None) -> Document:
    """The report of ``runs`` ((label, results) pairs), ``validations`` and one qualification per run (or None)."""
    quals = list(qualifications) if qualifications is not None else [None] * len(runs)
    if len(quals) != len(runs):
        raise ValueError("one qualification (or None) per results file")
    labelled = [(_label(lbl, r), r) for lbl, r in runs]
    hosts = sorted({r.run.hostname or "?" for _, r in labelled})
    gpus = sorted({d.name for _, r in labelled for d in r.devices if not d.name.startswith("unknown")})
    title = f"gpuprobe report — {', '.join(gpus) or 'no GPU'}"
    subtitle = f"{len(runs)} results file{'s' * (len(runs) != 1)} from {', '.join(hosts)}; measured " + \
               ", ".join(sorted({r.run.started_utc[:10] for _, r in labelled}))
    sections = [_host_summary(labelled), _topology_section(labelled), _bandwidth_section(labelled)]
    for s in (_latency_section(labelled), _allreduce_section(labelled),
              _qualification_section(labelled, quals), _cluster_section(labelled, quals),
              _validation_section(validations)):
        if s is not None:
            sections.append(s)
    notes = [f"{lbl}: {n}" if len(labelled) > 1 else n for lbl, r in labelled for n in (*r.problems, *r.notes)]
    imported = [f"{lbl}: imported from {r.run.options.get('imported_from', '?')}; started_utc is the import time "
                "unless the tool recorded it" for lbl, r in labelled if r.run.source != "gpuprobe"]
    if notes or imported:
        sections.append(Section("Notes and problems", [notes + imported]))
    return Document(title, subtitle, _summary(labelled, quals), sections)
