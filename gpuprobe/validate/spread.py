"""How far one engine configuration's measured speed moves between engine starts (``validate --starts N``).

A prediction cannot be held closer to a measurement than the measurement repeats: on a VM, eager-mode and
other host-bound engines change speed between starts by tens of percent (reports/h100-2026-11-25/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuprobe.results.validation import ValidationRuns
from gpuprobe.validate.compare import PERF_FIGURES, measured_figures


@dataclass
class StartSpread:
    config: str
    """The layout name without its start number."""
    figure: str
    workload: str
    values: list[float]
    """One value per engine start that measured it."""

    @property
    def spread(self) -> float:
        """max / min − 1 over the starts."""
        return max(self.values) / min(self.values) - 1


def start_spreads(runs: ValidationRuns) -> list[StartSpread]:
    """Every (configuration, figure, workload) measured by two or more engine starts."""
    seen: dict[tuple[str, str, str], list[float]] = {}
    for run in runs.layouts:
        if run.status != "ok":
            continue
        for (fig, lab), v in measured_figures(run).items():
            if fig in PERF_FIGURES and lab and v:
                seen.setdefault((run.layout.config_name, fig, lab), []).append(v)
    return [StartSpread(c, f, w, vs) for (c, f, w), vs in seen.items() if len(vs) >= 2]


def spread_notes(runs: ValidationRuns) -> list[str]:
    """One line per configuration: the largest start-to-start spread of output tokens/s."""
    out = []
    by_config: dict[str, list[StartSpread]] = {}
    for s in start_spreads(runs):
        if s.figure == "output_tokens_per_s":
            by_config.setdefault(s.config, []).append(s)
    for config, spreads in by_config.items():
        worst = max(spreads, key=lambda s: s.spread)
        out.append(f"{config}: {len(worst.values)} engine starts; output tokens/s moved up to "
                   f"{worst.spread:.0%} between them ({worst.workload}) — no prediction can be held closer than that")
    return out
