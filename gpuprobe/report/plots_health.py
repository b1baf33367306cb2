"""The health timeline of a qualification level: SM clock, power and temperature per GPU over the run, with
the run's phases shaded and XID events and throttle samples marked (matplotlib, Agg; the style of ``plots``)."""

from __future__ import annotations

from collections import defaultdict

from matplotlib.figure import Figure

from gpuprobe.report.plots import PALETTE, plt
from gpuprobe.results.qualification import HealthSample, Timeline

HW_REASONS = 0x8 | 0x40 | 0x80
"""HW slowdown, HW thermal slowdown, HW power brake (NVML clock-event reasons)."""
SW_THERMAL = 0x20


def timeline_figure(tl: Timeline | None) -> Figure | None:
    """Three stacked panels (SM clock MHz, power W, temperature °C) against seconds since the level started."""
    if tl is None or not tl.samples:
        return None
    by_gpu: dict[int, list[HealthSample]] = defaultdict(list)
    for s in tl.samples:
        by_gpu[s.gpu].append(s)
    fig, axes = plt.subplots(3, 1, figsize=(11, 6.4), sharex=True)
    panels = (("sm_clock_mhz", "SM clock (MHz)"), ("power_w", "power (W)"), ("temperature_c", "temperature (°C)"))
    for ax, (attr, label) in zip(axes, panels, strict=True):
        for k, (g, samples) in enumerate(sorted(by_gpu.items())):
            pts = [(s.t_s, getattr(s, attr)) for s in samples if getattr(s, attr) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2, color=PALETTE[k % len(PALETTE)],
                        label=f"gpu{g}")
            if attr == "sm_clock_mhz":
                hw = [(s.t_s, s.sm_clock_mhz) for s in samples if (s.clocks_event_reasons or 0) & HW_REASONS
                      and s.sm_clock_mhz is not None]
                sw = [(s.t_s, s.sm_clock_mhz) for s in samples if (s.clocks_event_reasons or 0) & SW_THERMAL
                      and s.sm_clock_mhz is not None]
                if hw:
                    ax.scatter([p[0] for p in hw], [p[1] for p in hw], marker="v", color="#a40e26", s=18, zorder=3,
                               label="HW slowdown / thermal / power brake" if k == 0 else None)
                if sw:
                    ax.scatter([p[0] for p in sw], [p[1] for p in sw], marker="v", color="#bf8700", s=14, zorder=3,
                               label="SW thermal slowdown" if k == 0 else None)
        ax.set_ylabel(label)
        for i, ph in enumerate(tl.phases):
            end = ph.end_s if ph.end_s is not None else max(s.t_s for s in tl.samples)
            if ph.loaded:
                ax.axvspan(ph.start_s, end, color="#1a7f37", alpha=0.07, lw=0)
            if ax is axes[0]:
                ax.annotate(ph.name, (ph.start_s, 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                            va="bottom", rotation=0, color="#57606a", xytext=(2, 2 + 9 * (i % 2)),
                            textcoords="offset points")
        for ev in tl.xid_events:
            ax.axvline(ev.t_s, color="#cf222e", lw=1.2, ls="--")
            if ax is axes[-1]:
                ax.annotate(f"XID {ev.xid} gpu{ev.gpu}", (ev.t_s, 0.02), xycoords=("data", "axes fraction"),
                            fontsize=7, color="#cf222e", rotation=90, va="bottom")
    axes[0].legend(loc="lower right", fontsize=7, ncol=4)
    axes[-1].set_xlabel("seconds since the level started" + (" (constructed test sequence)" if tl.constructed
                                                               else ""))
    fig.tight_layout()
    return fig
