"""Confirmation: a figure below its fail band is measured again before it is called FAIL.

``failing_probes`` names the probes to run again; ``confirm`` compares the first judgement with the judgement
of the second measurement, check by check (same test, subject and message size):

- still FAIL: the check stays FAIL, marked ``confirmed`` (the second figure in its detail);
- no longer FAIL: the check takes the second figure and verdict, ``confirmed`` False, and says that the first
  measurement failed (a transient: another job, a clock ramp).

A results file judged as it is (``qualify --input``) cannot be measured again: its FAILs stay unconfirmed.
"""

from __future__ import annotations

from gpuprobe.results.qualification import Check, Qualification

MEASURED = ("bandwidth", "latency", "collective")


def _key(c: Check) -> tuple[str, str, int | None]:
    return c.test, c.subject, c.size_bytes


def failing_probes(q: Qualification) -> list[str]:
    """Probe keys of the measured figures that FAILed (in first-seen order)."""
    out: list[str] = []
    for c in q.checks:
        if c.verdict == "FAIL" and c.category in MEASURED and c.measurement_index is not None and c.test not in out:
            out.append(c.test)
    return out


def confirm(first: Qualification, second: Qualification) -> int:
    """Mark each failing measured check of ``first`` from ``second``; returns how many FAILs were confirmed."""
    again = {_key(c): c for c in second.checks}
    confirmed = 0
    for c in first.checks:
        if c.verdict != "FAIL" or c.category not in MEASURED or c.measurement_index is None:
            continue
        c2 = again.get(_key(c))
        if c2 is None:
            c.detail = f"{c.detail + '; ' if c.detail else ''}not measured again (the second run lacks it)"
            continue
        figure = f"{c2.value:.4g} {c2.unit or ''}".strip() if c2.value is not None else c2.verdict
        if c2.verdict == "FAIL":
            c.confirmed = True
            confirmed += 1
            c.detail = f"{c.detail + '; ' if c.detail else ''}confirmed: measured again, {figure}, still FAIL"
        else:
            first_figure = f"{c.value:.4g} {c.unit or ''}".strip() if c.value is not None else "FAIL"
            c.confirmed = False
            c.verdict, c.value, c.ratio = c2.verdict, c2.value, c2.ratio
            c.cause, c.next_step = c2.cause, c2.next_step
            c.detail = (f"first measurement {first_figure} failed; measured again: {figure} ({c2.verdict}): "
                        "a transient (another job, clocks ramping)")
    first.recount()
    return confirmed
