"""Figures drawn from results files only (matplotlib, Agg backend; no display needed).

Every function takes result-model objects and returns a ``matplotlib.figure.Figure`` (or None when there is
nothing to draw); ``png_bytes``/``svg_text`` turn a figure into what the HTML and Markdown reports embed.
Units: GB/s = 1e9 B/s, sizes in bytes (axis labels in KiB/MiB/GiB), time in µs, latency in the unit measured.
"""

from __future__ import annotations

import io
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from importlib import resources
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from gpuprobe.report.fmt import ranks_label, size_label
from gpuprobe.results.model import Measurement, Results, gpu_index
from gpuprobe.results.validation import ValidationRuns

PALETTE = ["#1f6feb", "#d1242f", "#1a7f37", "#8250df", "#bf8700", "#0a7ea4", "#cf222e", "#6e7781"]
PATH_COLOURS = {"NV": "#1a7f37", "PIX": "#4c9a2a", "PXB": "#9a6700", "PHB": "#bc4c00", "NODE": "#cf222e",
                "SYS": "#a40e26", "unknown": "#6e7781"}
plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
                     "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 110, "svg.fonttype": "none"})



def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def svg_text(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _ok(m: Measurement) -> bool:
    return m.status == "ok" and m.value is not None


def _ok_value(m: Measurement) -> float | None:
    """The figure of an ``ok`` measurement (None for any other)."""
    return m.value if m.status == "ok" else None


def _gpu_count(res: Results) -> int:
    n = len(res.devices) or (res.topology.gpu_count if res.topology else 0)
    for m in res.measurements:
        for node in (m.src, m.dst):
            i = gpu_index(node)
            if i is not None:
                n = max(n, i + 1)
    return n


# -- topology ------------------------------------------------------------------------------------------------
def _path_colour(cls: str) -> str:
    return PATH_COLOURS["NV"] if cls.startswith("NV") else PATH_COLOURS.get(cls, PATH_COLOURS["unknown"])


def topology_figure(res: Results) -> Figure | None:
    """The host, the GPUs and their links: PCIe generation/width and measured host copies on each GPU's edge,
    path class (NV#/PIX/.../SYS) on each GPU pair, HBM copy rate inside each GPU box."""
    n = _gpu_count(res)
    if n == 0:
        return None
    best: dict[tuple[str, str, str], float] = {}
    for m in res.measurements:
        if _ok(m) and m.unit == "GB/s" and m.traffic == "unidirectional" and m.engine in (None, "ce") \
                and m.host_memory in (None, "pinned"):
            key = (m.probe, m.src or "", m.dst or "")
            best[key] = max(best.get(key, 0.0), m.value or 0.0)
    width = max(4.5, 1.9 * n + 1.0)
    fig, ax = plt.subplots(figsize=(width, 3.6 if n <= 4 else 4.2))
    ax.set_axis_off()
    ax.set_xlim(min(-0.6, (n - 1) / 2 - 1.1), max(n - 0.4, (n - 1) / 2 + 1.1))
    ax.set_ylim(-0.9, 2.4)
    hx = (n - 1) / 2
    ax.add_patch(matplotlib.patches.FancyBboxPatch((hx - 0.6, 1.85), 1.2, 0.4, boxstyle="round,pad=0.03",
                                                   fc="#f6f8fa", ec="#57606a"))
    host_label = "host (CPU, system memory)"
    ax.text(hx, 2.05, host_label, ha="center", va="center", fontsize=9, weight="bold")
    dev = {d.index: d for d in res.devices}
    for i in range(n):
        d = dev.get(i)
        ax.plot([hx, i], [1.85, 0.42], color="#57606a", lw=1.4, zorder=1)
        label = []
        if d and d.pcie_gen_current:
            label.append(f"PCIe Gen{d.pcie_gen_current} x{d.pcie_width_current}")
            if (d.pcie_gen_max and d.pcie_gen_current < d.pcie_gen_max) or (
                    d.pcie_width_max and d.pcie_width_current and d.pcie_width_current < d.pcie_width_max):
                label[-1] += f" (max Gen{d.pcie_gen_max} x{d.pcie_width_max})"
        h2d = best.get(("host_to_device_memcpy_ce", "host", f"gpu{i}"))
        d2h = best.get(("device_to_host_memcpy_ce", f"gpu{i}", "host"))
        if h2d is not None:
            label.append(f"→ {h2d:.1f} GB/s")
        if d2h is not None:
            label.append(f"← {d2h:.1f} GB/s")
        if label:
            mx, my = hx + (i - hx) * 0.55, 1.85 - (1.85 - 0.42) * 0.55
            ax.text(mx, my, "\n".join(label), ha="center", va="center", fontsize=7.5,
                    bbox={"fc": "white", "ec": "none", "alpha": 0.9, "pad": 1})
        ax.add_patch(matplotlib.patches.FancyBboxPatch((i - 0.42, -0.42), 0.84, 0.84, boxstyle="round,pad=0.03",
                                                       fc="#ddf4ff", ec="#0969da", lw=1.4, zorder=2))
        name = (d.name if d else "").replace("NVIDIA ", "")
        lines = [f"GPU{i}", name]
        hbm = best.get(("device_local_copy", f"gpu{i}", f"gpu{i}"))
        if hbm is not None:
            lines.append(f"HBM copy {hbm:,.0f} GB/s")
        ax.text(i, 0, "\n".join(x for x in lines if x), ha="center", va="center", fontsize=7.5, zorder=3)
    pairs = res.topology.pairs if res.topology else []
    for p in pairs:
        if p.a >= n or p.b >= n:
            continue
        depth = 0.55 + 0.22 * (abs(p.b - p.a) - 1)
        xs = [p.a, p.a, p.b, p.b]
        ys = [-0.42, -0.42 - depth, -0.42 - depth, -0.42]
        ax.plot(xs, ys, color=_path_colour(p.path_class), lw=2.2 if p.nvlink_count else 1.2, alpha=0.8, zorder=1)
        if n <= 4 or abs(p.b - p.a) == 1:
            ax.text((p.a + p.b) / 2, -0.42 - depth, p.path_class, ha="center", va="center", fontsize=7,
                    bbox={"fc": "white", "ec": "none", "pad": 0.5})
    if pairs:
        ax.set_ylim(-0.9 - 0.22 * (n - 1), 2.4)
    elif n == 1:
        ax.text(0, -0.7, "one GPU: no GPU-to-GPU links", ha="center", fontsize=8, color="#57606a")
    fig.tight_layout()
    return fig


def path_matrix_figure(res: Results) -> Figure | None:
    """N×N path-class matrix (like ``nvidia-smi topo -m``) coloured from best (NV#) to worst (SYS)."""
    if not res.topology or not res.topology.pairs:
        return None
    n = res.topology.gpu_count
    rank = {"PIX": 1, "PXB": 2, "PHB": 3, "NODE": 4, "SYS": 5}
    grid = [[math.nan] * n for _ in range(n)]
    labels = [["X" if a == b else "" for b in range(n)] for a in range(n)]
    for p in res.topology.pairs:
        r = 0 if p.path_class.startswith("NV") else rank.get(p.path_class, 6)
        for a, b in ((p.a, p.b), (p.b, p.a)):
            grid[a][b], labels[a][b] = r, p.path_class
    fig, ax = plt.subplots(figsize=(0.55 * n + 1.6, 0.5 * n + 1.2))
    cmap = matplotlib.colors.ListedColormap(["#1a7f37", "#4c9a2a", "#9a6700", "#bc4c00", "#cf222e", "#a40e26",
                                             "#6e7781"])
    ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=6.5)
    for a in range(n):
        for b in range(n):
            ax.text(b, a, labels[a][b], ha="center", va="center", fontsize=8,
                    color="black" if a == b else "white")
    ax.set_xticks(range(n), [f"GPU{i}" for i in range(n)])
    ax.set_yticks(range(n), [f"GPU{i}" for i in range(n)])
    ax.grid(False)
    ax.set_title("path class per GPU pair (NV# best … SYS worst)")
    fig.tight_layout()
    return fig


# -- bandwidth heatmaps --------------------------------------------------------------------------------------
def host_heatmap(res: Results, title: str | None = None) -> Figure | None:
    """Host↔GPU tests as a (tests × GPUs) heatmap: one 1×N row per test, median GB/s in every cell."""
    n = _gpu_count(res)
    rows: dict[str, dict[int, float]] = defaultdict(dict)
    for m in res.measurements:
        if (v := _ok_value(m)) is not None and m.unit == "GB/s" and m.direction in ("h2d", "d2h"):
            i = gpu_index(m.dst if m.direction == "h2d" else m.src)
            if i is not None:
                rows[m.probe][i] = v
    if not rows or n == 0:
        return None
    names = list(rows)
    data = [[rows[k].get(i, math.nan) for i in range(n)] for k in names]
    fig, ax = plt.subplots(figsize=(max(5.5, 1.1 * n + 4.2), 0.34 * len(names) + 1.2))
    vmax = max(v for row in data for v in row if not math.isnan(v))
    im = ax.imshow(data, aspect="auto", cmap="Blues", vmin=0, vmax=vmax * 1.05)
    for r, row in enumerate(data):
        for c, v in enumerate(row):
            if not math.isnan(v):
                ax.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=8,
                        color="white" if v > 0.6 * vmax else "black")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xticks(range(n), [f"GPU{i}" for i in range(n)])
    ax.grid(False)
    ax.set_title(title or "host ↔ GPU bandwidth, median GB/s (row: test, column: GPU)")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="GB/s")
    fig.tight_layout()
    return fig


def _pair_cells(res: Results) -> dict[str, dict[tuple[int, int], float]]:
    by_probe: dict[str, dict[tuple[int, int], float]] = defaultdict(dict)
    for m in res.measurements:
        if (v := _ok_value(m)) is not None and m.unit == "GB/s" and m.direction == "d2d":
            a, b = gpu_index(m.src), gpu_index(m.dst)
            if a is not None and b is not None:
                by_probe[m.probe][a, b] = v
    return dict(by_probe)


def pair_probes(res: Results) -> list[str]:
    """GPU-to-GPU tests with at least one measured pair, in file order."""
    return list(_pair_cells(res))


def pair_heatmap(res: Results, probe: str) -> Figure | None:
    """N×N heatmap of one GPU-to-GPU test: row = source GPU, column = destination GPU, median GB/s."""
    cells = _pair_cells(res).get(probe)
    if not cells:
        return None
    n = _gpu_count(res)
    data = [[cells.get((a, b), math.nan) for b in range(n)] for a in range(n)]
    vmax = max(cells.values())
    fig, ax = plt.subplots(figsize=(0.62 * n + 2.4, 0.55 * n + 1.4))
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=vmax * 1.05)
    for (a, b), v in cells.items():
        ax.text(b, a, f"{v:.0f}" if v >= 100 else f"{v:.1f}", ha="center", va="center", fontsize=7.5,
                color="black" if v > 0.6 * vmax else "white")
    ax.set_xticks(range(n), [f"GPU{i}" for i in range(n)])
    ax.set_yticks(range(n), [f"GPU{i}" for i in range(n)])
    ax.set_xlabel("destination")
    ax.set_ylabel("source")
    ax.grid(False)
    ax.set_title(f"{probe} (GB/s)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    fig.tight_layout()
    return fig


def host_bars(runs: Sequence[tuple[str, Results]]) -> Figure | None:
    """Host↔GPU0 figures of several results files side by side (grouped bars, one colour per file)."""
    tests: list[str] = []
    values: dict[str, dict[str, float]] = {}
    for label, res in runs:
        values[label] = {}
        for m in res.measurements:
            v = _ok_value(m)
            if v is not None and m.unit == "GB/s" and m.direction in ("h2d", "d2h") and "gpu0" in (m.src, m.dst):
                values[label][m.probe] = v
                if m.probe not in tests:
                    tests.append(m.probe)
    if not tests:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 0.32 * len(tests) * len(runs) + 1.4))
    h = 0.8 / len(runs)
    for k, (label, _) in enumerate(runs):
        ys = [t + k * h for t in range(len(tests))]
        xs = [values[label].get(t, 0.0) for t in tests]
        ax.barh(ys, xs, height=h, color=PALETTE[k % len(PALETTE)], label=label)
        for y, x in zip(ys, xs, strict=True):
            if x:
                ax.text(x, y, f" {x:.1f}", va="center", fontsize=7)
    ax.set_yticks([t + 0.4 - h / 2 for t in range(len(tests))], tests, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("GB/s (median)")
    ax.set_title("host ↔ GPU0 bandwidth by results file")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


# -- all-reduce ----------------------------------------------------------------------------------------------
def load_anchors() -> list[dict[str, Any]]:
    """Reference sweeps shipped with gpuprobe (``gpuprobe/data/anchors/*.json``), each from a real run."""
    out = []
    folder = resources.files("gpuprobe") / "data" / "anchors"
    if folder.is_dir():
        for f in sorted(folder.iterdir(), key=lambda p: p.name):
            if f.name.endswith(".json"):
                out.append(json.loads(f.read_text(encoding="utf-8")))
    return out


def allreduce_groups(res: Results) -> dict[tuple[str, tuple[int, ...]], list[Measurement]]:
    """(probe, GPU group) -> measurements sorted by size (ok ones only)."""
    groups: dict[tuple[str, tuple[int, ...]], list[Measurement]] = defaultdict(list)
    for m in res.measurements:
        if m.probe.startswith("all_reduce") and m.ranks is not None and _ok(m) and m.size_bytes:
            groups[m.probe, tuple(m.ranks)].append(m)
    for ms in groups.values():
        ms.sort(key=lambda m: m.size_bytes or 0)
    return dict(groups)


def matching_anchors(res: Results, group_size: int) -> list[dict[str, Any]]:
    """Anchors of the same GPU model and rank count as a group of ``res`` (none if the model differs)."""
    names = {d.name for d in res.devices}
    return [a for a in load_anchors() if a.get("gpu") in names and a.get("ranks") == group_size]


def allreduce_figure(runs: Sequence[tuple[str, Results]], anchors: bool = True) -> Figure | None:
    """Time and busbw against message size (log x), one line per results file and group; anchors dashed."""
    lines = []
    for label, res in runs:
        for (probe, group), ms in allreduce_groups(res).items():
            tag = f"{label} · {probe} · GPUs {ranks_label(group)}" if len(runs) > 1 else \
                f"{probe} · GPUs {ranks_label(group)} ({ms[0].engine or '?'})"
            lines.append((tag, ms))
    if not lines:
        return None
    fig, (ax_t, ax_b) = plt.subplots(1, 2, figsize=(11, 4.0))
    for k, (tag, ms) in enumerate(lines):
        sizes = [m.size_bytes for m in ms]
        colour = PALETTE[k % len(PALETTE)]
        ax_t.plot(sizes, [m.value for m in ms], marker="o", ms=3, lw=1.6, color=colour, label=tag)
        lo = [m.stat.min for m in ms if m.stat]
        hi = [m.stat.max for m in ms if m.stat]
        if len(lo) == len(ms) and any(m.stat and m.stat.n > 1 for m in ms):
            ax_t.fill_between(sizes, lo, hi, color=colour, alpha=0.15, lw=0)
        ax_b.plot(sizes, [m.busbw_gbps or 0.0 for m in ms], marker="o", ms=3, lw=1.6, color=colour, label=tag)
    shown = set()
    if anchors:
        for _, res in runs:
            for (_, group), _ms in allreduce_groups(res).items():
                for a in matching_anchors(res, len(group)):
                    for name, s in a["series"].items():
                        key = (a["source"], name)
                        if key in shown:
                            continue
                        shown.add(key)
                        tag = f"anchor: nccl-tests {name} ({a['ranks']}× {a['gpu'].replace('NVIDIA ', '')})"
                        style = "--" if name == "in-place" else ":"
                        ax_t.plot(s["size_bytes"], s["time_us"], style, color="#57606a", lw=1.3, label=tag)
                        ax_b.plot(s["size_bytes"], s["busbw_gbps"], style, color="#57606a", lw=1.3, label=tag)
    fmt = FuncFormatter(lambda v, _: size_label(v))
    for ax in (ax_t, ax_b):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(fmt)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.set_xlabel("message size")
    ax_t.set_yscale("log")
    ax_t.set_ylabel("time per operation (µs)")
    ax_t.set_title("all-reduce time (lower is better)")
    ax_b.set_ylabel("busbw (GB/s)")
    ax_b.set_title("all-reduce bus bandwidth (higher is better)")
    if all(not (m.busbw_gbps or 0) for _, ms in lines for m in ms):
        ax_b.text(0.5, 0.5, "busbw = algbw × 2(n−1)/n is 0 for one rank", transform=ax_b.transAxes,
                  ha="center", va="center", color="#57606a")
        ax_b.set_ylim(-0.05, 1)
    ax_t.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


# -- validation ----------------------------------------------------------------------------------------------
FIGURE_LABELS = {"kv_cache_tokens": "KV cache tokens", "output_tokens_per_s": "output tok/s",
                 "ttft_ms": "TTFT ms", "tpot_ms": "TPOT ms"}


def validation_figure(runs: Sequence[tuple[str, ValidationRuns]]) -> Figure | None:
    """Predicted against measured for every compared figure of every validation run (log-log, y = x line)."""
    pts: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for _, vr in runs:
        for lr in vr.layouts:
            if lr.comparison is None:
                continue
            for f in lr.comparison.figures:
                if f.predicted and f.measured and f.predicted > 0 and f.measured > 0 and f.figure != "kv_cache_tokens":
                    pts[f.figure].append((f.measured, f.predicted))
    if not pts:
        return None
    fig, axes = plt.subplots(1, len(pts), figsize=(3.6 * len(pts), 3.4))
    axes = list(axes) if len(pts) > 1 else [axes]
    for ax, (name, xy) in zip(axes, pts.items(), strict=True):
        xs, ys = [p[0] for p in xy], [p[1] for p in xy]
        lo, hi = min(xs + ys) * 0.7, max(xs + ys) * 1.4
        ax.plot([lo, hi], [lo, hi], color="#57606a", lw=1, label="predicted = measured")
        ax.fill_between([lo, hi], [lo * 0.8, hi * 0.8], [lo * 1.25, hi * 1.25], color="#1a7f37", alpha=0.08,
                        label="within ±25 %")
        ax.scatter(xs, ys, s=18, color=PALETTE[0], zorder=3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"measured {FIGURE_LABELS.get(name, name)}")
        ax.set_ylabel("predicted")
        ax.set_title(FIGURE_LABELS.get(name, name))
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
