"""Outliers against the best peer: a GPU or pair at least 10 % below the best of its peers on the same link class.

Peers are the checks of the same test on the same link class (path class; host copies per GPU). The best is
the highest bandwidth (or the lowest latency) among them; a figure below ``PEER_BELOW_BEST`` of it is named as
an outlier (``basis: best``) and a check that passed its band becomes WARN: the machine has a weaker GPU, slot,
riser or path than its own peers show is possible.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from gpuprobe.results.qualification import Check, Outlier, Qualification


def mark_weaker(c: Check, text: str, next_step: str) -> None:
    """A check found weaker than its peers: a passing one becomes WARN with ``text`` as its cause, one already
    worse keeps its verdict and cause and gains ``text`` in its detail."""
    if c.verdict in ("PASS", "INFO"):
        c.verdict = "WARN"
        c.cause = text
        c.next_step = next_step
    else:
        c.detail = f"{c.detail + '; ' if c.detail else ''}{text}"

PEER_BELOW_BEST = 0.90


def _peers(q: Qualification) -> dict[tuple[str, str], list[Check]]:
    groups: dict[tuple[str, str], list[Check]] = defaultdict(list)
    for c in q.checks:
        if (c.category in ("bandwidth", "latency", "collective") and c.value is not None and c.value > 0
                and c.measurement_index is not None and c.verdict in ("PASS", "WARN", "FAIL", "INFO")):
            link = c.path_class or ("host" if "host" in (c.src, c.dst) else "local" if c.src == c.dst else "?")
            groups[(c.test, link)].append(c)
    return groups


def peer_outliers(q: Qualification, below: float = PEER_BELOW_BEST) -> list[Outlier]:
    """Name every figure ``below`` × the best of its peers (at least 2 subjects); adds them to ``q.outliers``."""
    found: list[tuple[float, Check, float, float, int]] = []
    for checks in _peers(q).values():
        subjects = {c.subject for c in checks}
        if len(subjects) < 2:
            continue
        higher = checks[0].higher_is_better
        values = [c.value for c in checks if c.value is not None]
        best = max(values) if higher else min(values)
        med = statistics.median(values)
        for c in checks:
            v = c.value or 0.0
            rel = v / best if higher else best / v
            if rel < below:
                found.append((rel, c, best, med, len(subjects)))
    found.sort(key=lambda x: x[0])
    new: list[Outlier] = []
    for rel, c, best, med, n in found:
        existing = next((o for o in q.outliers if o.test == c.test and o.subject == c.subject), None)
        if existing is not None:
            existing.best, existing.ratio_to_best = round(best, 4), round(rel, 4)
            continue
        new.append(Outlier(rank=0, test=c.test, subject=c.subject, value=c.value or 0.0, unit=c.unit or "",
                           median=round(med, 4), ratio_to_median=round((c.value or 0) / med if c.higher_is_better
                                                                       else med / (c.value or 1), 4),
                           compared_with=n, path_class=c.path_class, best=round(best, 4), ratio_to_best=round(rel, 4),
                           basis="best"))
        text = (f"{1 - rel:.0%} below the best of {n} peers on the same link class ({best:.4g} {c.unit}): a weaker "
                "GPU, slot, riser or path than its peers")
        if text not in (c.detail or ""):
            mark_weaker(c, text, "compare its link state, NUMA placement and clocks with the best peer ('nvidia-smi "
                                 "topo -m', 'nvidia-smi -q -d PCIE,CLOCK'); swap slots to see if it follows the GPU")
    q.outliers.extend(new)
    for rank, o in enumerate(q.outliers, 1):
        o.rank = rank
    return new
