"""Samples -> summary statistics (median is the reported figure, as in nvbandwidth)."""

from __future__ import annotations

import math
import statistics

from gpuprobe.results.model import Stat


def summarize(samples: list[float]) -> Stat | None:
    """Median, min, max, mean, population stdev, coefficient of variation and p95 of ``samples``.

    Returns None for an empty list. Non-finite samples are dropped (and so not counted in ``n``).
    """
    xs = sorted(float(x) for x in samples if math.isfinite(x))
    if not xs:
        return None
    mean = statistics.fmean(xs)
    stdev = statistics.pstdev(xs) if len(xs) > 1 else 0.0
    p95_index = min(len(xs) - 1, math.ceil(0.95 * len(xs)) - 1)
    return Stat(
        n=len(xs),
        median=statistics.median(xs),
        min=xs[0],
        max=xs[-1],
        mean=mean,
        stdev=stdev,
        cv=stdev / mean if mean else 0.0,
        p95=xs[p95_index],
    )
