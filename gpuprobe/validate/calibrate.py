"""Fit the performance model's per-box factors to validation runs, and report the error honestly.

Method: robust least squares in log space. For factors θ (the float fields of the predictor's ``Calibration``
that change at least one prediction of these runs), minimise

    Σ_points ρ(ln predicted(θ) − ln measured)  +  λ Σ_factors (ln θ − ln θ₀)²

with ρ the soft-L1 loss 2δ²(√(1 + (r/δ)²) − 1), δ = 0.1: quadratic for small residuals, linear beyond ~10 %,
so one noisy point (eager-mode steps on a busy host vary by tens of percent) cannot drag every factor;
minimised over ln θ with Nelder–Mead. Why log space: errors of speed figures are multiplicative (an efficiency factor
scales a time), figures span orders of magnitude (TTFT in ms, tokens/s in thousands), and 20 % too high
costs the same as 20 % too low. The small ridge term (λ = 0.02) keeps factors the data does not pin down
at their published defaults instead of letting them drift. Efficiency factors whose default is below 1
are capped at 1.

Honesty: the error after calibration is reported on held-out data. ``holdout`` picks what is left out in
turn (the factors are fitted on the rest and the left-out points are predicted):
``run`` each engine run; ``workload`` each workload shape (n x in -> out) in every run at once;
``model`` each model (all its runs). ``auto``: ``run`` with two or more engine runs, else ``workload``.
The in-sample error is shown too, labelled as such.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from gpuprobe.errors import UsageError
from gpuprobe.results.serde import to_data
from gpuprobe.results.validation import ValidationRuns
from gpuprobe.validate import adapter
from gpuprobe.validate.adapter import Predictor, PredictRequest
from gpuprobe.validate.compare import PERF_FIGURES, measured_figures, predict_request

RIDGE = 0.02
METHOD = ("robust (soft-L1, scale 0.1) least squares of ln(predicted/measured) over TTFT, TPOT and output tokens/s, "
          "ridge 0.02 to defaults")


@dataclass
class FactorFit:
    name: str
    before: float
    after: float


@dataclass
class PointError:
    run: str
    workload: str
    figure: str
    measured: float
    before: float | None
    """Prediction with the starting calibration."""
    after: float | None
    """In-sample prediction with the calibration fitted on every point."""
    heldout: float | None
    """Prediction with the calibration fitted without this point's group."""

    def err(self, which: str) -> float | None:
        p = getattr(self, which)
        return None if p is None else (p - self.measured) / self.measured


@dataclass
class FigureErrors:
    figure: str
    n: int
    median_abs_before: float | None
    median_abs_after: float | None
    median_abs_heldout: float | None
    max_abs_heldout: float | None


@dataclass
class CalibrationFit:
    method: str
    holdout: str
    runs: list[str]
    factors: list[FactorFit] = field(default_factory=list)
    figures: list[FigureErrors] = field(default_factory=list)
    points: list[PointError] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    """The fitted calibration, as the predictor's calibration file stores it."""
    notes: list[str] = field(default_factory=list)


@dataclass
class _Case:
    key: str
    req: PredictRequest
    measured: dict[tuple[str, str], float]


def _cases(all_runs: list[ValidationRuns], system: str | None) -> list[_Case]:
    cases = []
    for i, runs in enumerate(all_runs):
        for run in runs.layouts:
            if run.status != "ok" or run.measured is None:
                continue
            meas = {(f, lab): v for (f, lab), v in measured_figures(run).items() if f in PERF_FIGURES and lab and v}
            if not meas:
                continue
            cases.append(_Case(f"{i}:{runs.model_name}:{run.layout.name}", predict_request(runs, run, system), meas))
    return cases


def _predict(cases: list[_Case], cal: Any, predictor: Predictor) -> dict[tuple[str, str, str], float]:
    out = {}
    for c in cases:
        pred = predictor(dataclasses.replace(c.req, calibration=cal))
        for (fig, lab) in c.measured:
            v = pred.workloads.get(lab, {}).get(fig)
            if v is not None and v > 0 and math.isfinite(v):
                out[(c.key, lab, fig)] = v
    return out


def _factor_names(cal: Any) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cal)
        if isinstance(getattr(cal, f.name), float) and not f.name.endswith("_range") and getattr(cal, f.name) > 0
    ]


def _with(cal: Any, names: list[str], x: list[float], caps: dict[str, float]) -> Any:
    values = {n: min(math.exp(v), caps.get(n, math.inf)) for n, v in zip(names, x, strict=True)}
    return dataclasses.replace(cal, **values)


def nelder_mead(f: Any, x0: list[float], step: float = 0.3, iters: int = 400, tol: float = 1e-9) -> list[float]:
    """Minimise ``f`` from ``x0`` (plain Nelder–Mead, standard coefficients)."""
    n = len(x0)
    simplex = [list(x0)] + [[x0[j] + (step if j == i else 0.0) for j in range(n)] for i in range(n)]
    values = [f(x) for x in simplex]
    for _ in range(iters * max(n, 1)):
        order = sorted(range(n + 1), key=lambda i: values[i])
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        if abs(values[-1] - values[0]) < tol:
            break
        centroid = [sum(p[j] for p in simplex[:-1]) / n for j in range(n)]
        worst = simplex[-1]
        refl = [c + (c - w) for c, w in zip(centroid, worst, strict=True)]
        fr = f(refl)
        if fr < values[0]:
            exp = [c + 2 * (c - w) for c, w in zip(centroid, worst, strict=True)]
            fe = f(exp)
            simplex[-1], values[-1] = (exp, fe) if fe < fr else (refl, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = refl, fr
        else:
            con = [c + 0.5 * (w - c) for c, w in zip(centroid, worst, strict=True)]
            fc = f(con)
            if fc < values[-1]:
                simplex[-1], values[-1] = con, fc
            else:
                best = simplex[0]
                simplex = [best] + [[b + 0.5 * (p - b) for b, p in zip(best, q, strict=True)] for q in simplex[1:]]
                values = [values[0]] + [f(p) for p in simplex[1:]]
    return simplex[min(range(n + 1), key=lambda i: values[i])]


SOFT_L1_SCALE = 0.1
"""Residuals (in ln) beyond about 10 % count linearly, not squared: a noisy point cannot drag every factor."""


def _soft_l1(r: float) -> float:
    d = SOFT_L1_SCALE
    return 2 * d * d * (math.sqrt(1 + (r / d) ** 2) - 1)


def _fit(cases: list[_Case], base: Any, names: list[str], predictor: Predictor) -> Any:
    caps = {n: 1.0 for n in names if n.endswith("_efficiency") and getattr(base, n) < 1.0}
    x0 = [math.log(getattr(base, n)) for n in names]
    targets = {(c.key, lab, fig): v for c in cases for (fig, lab), v in c.measured.items()}

    def loss(x: list[float]) -> float:
        pred = _predict(cases, _with(base, names, x, caps), predictor)
        miss = len(targets) - len(pred)
        s = sum(_soft_l1(math.log(pred[k]) - math.log(v)) for k, v in targets.items() if k in pred)
        return s + 10.0 * miss + RIDGE * sum((a - b) ** 2 for a, b in zip(x, x0, strict=True))

    return _with(base, names, nelder_mead(loss, x0), caps)


def _sensitive(cases: list[_Case], base: Any, names: list[str], predictor: Predictor) -> list[str]:
    ref = _predict(cases, base, predictor)
    out = []
    for n in names:
        moved = _predict(cases, dataclasses.replace(base, **{n: getattr(base, n) * 1.2}), predictor)
        if any(abs(moved.get(k, v) - v) > 1e-9 * abs(v) for k, v in ref.items()):
            out.append(n)
    return out


def _scale_ranges(fitted: Any, base: Any, names: list[str]) -> Any:
    """Move each factor's uncertainty range with it (same relative width around the fitted value)."""
    changes = {}
    for n in names:
        rng = getattr(fitted, f"{n}_range", None)
        if isinstance(rng, list) and len(rng) == 2 and getattr(base, n):
            r = getattr(fitted, n) / getattr(base, n)
            changes[f"{n}_range"] = [min(v * r, 1.0) if n.endswith("_efficiency") else v * r for v in rng]
    return dataclasses.replace(fitted, **changes) if changes else fitted


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def fit_calibration(
    all_runs: list[ValidationRuns],
    system: str | os.PathLike[str] | None = None,
    calibration: str | os.PathLike[str] | None = None,
    predictor: Predictor | None = None,
    base: Any = None,
    holdout: str = "auto",
) -> CalibrationFit:
    """Fit the factors to every ok run of ``all_runs``; report before / in-sample / held-out errors."""
    predictor = predictor or adapter.predict_run
    if base is None:
        if calibration is not None:
            base = adapter.load_calibration_file(calibration)
        else:
            from gpuprobe.predict.calibration import Calibration

            base = Calibration()
    system_s = str(system) if system else None
    cases = _cases(all_runs, system_s)
    before = _predict(cases, base, predictor) if cases else {}
    cases = [c for c in cases if any(k[0] == c.key for k in before)]
    if not cases:
        raise UsageError(
            "no validated run has predicted speed figures to fit (CPU runs, failed runs or no predictor)",
            hint="fit on GPU runs: 'gpuprobe validate --compare RUNS.json --fit-calibration FILE'",
        )
    names = _sensitive(cases, base, _factor_names(base), predictor)
    fitted = _scale_ranges(_fit(cases, base, names, predictor), base, names) if names else base
    after = _predict(cases, fitted, predictor)
    groups = _holdout_groups(cases, holdout)
    heldout: dict[tuple[str, str, str], float] = {}
    for held in groups:
        train = [_restrict(c, held, exclude=True) for c in cases]
        train = [c for c in train if c.measured]
        test = [_restrict(c, held, exclude=False) for c in cases]
        test = [c for c in test if c.measured]
        cal = _fit(train, base, names, predictor) if names and train else base
        heldout.update(_predict(test, cal, predictor))
    fit = CalibrationFit(
        method=METHOD,
        holdout=_holdout_name(groups, holdout, cases),
        runs=[c.key for c in cases],
        factors=[FactorFit(n, getattr(base, n), getattr(fitted, n)) for n in names],
    )
    for c in cases:
        for (fig, lab), v in c.measured.items():
            k = (c.key, lab, fig)
            fit.points.append(PointError(c.key, lab, fig, v, before.get(k), after.get(k), heldout.get(k)))
    for fig in PERF_FIGURES:
        pts = [p for p in fit.points if p.figure == fig]
        if not pts:
            continue

        def errs(which: str, pts: list[PointError] = pts) -> list[float]:
            return [abs(e) for p in pts if (e := p.err(which)) is not None]

        held = errs("heldout")
        fit.figures.append(
            FigureErrors(fig, len(pts), _median(errs("before")), _median(errs("after")), _median(held),
                         max(held) if held else None)
        )  # fmt: skip
    if not names:
        fit.notes.append("no factor of the calibration changes these predictions: nothing was fitted")
    fitted = dataclasses.replace(fitted, source=f"fitted to {len(cases)} validation run(s): " + ", ".join(fit.runs))
    fit.calibration = to_data(fitted)
    fit.notes.append("memory factors are not fitted here (KV tokens are compared, not used for fitting)")
    return fit


HOLDOUTS = ("auto", "run", "workload", "model")


def _model_of(key: str) -> str:
    return key.split(":")[1]


def _holdout_groups(cases: list[_Case], holdout: str = "auto") -> list[tuple[str | None, str | None]]:
    """(run key or ``model:NAME`` or None, workload label or None) groups to leave out in turn."""
    if holdout not in HOLDOUTS:
        raise UsageError(f"holdout must be one of {', '.join(HOLDOUTS)}, not {holdout!r}")
    labels = sorted({lab for c in cases for (_, lab) in c.measured})
    if holdout == "auto":
        holdout = "run" if len(cases) >= 2 else "workload"
    if holdout == "run":
        return [(c.key, None) for c in cases] if len(cases) >= 2 else []
    if holdout == "model":
        models = sorted({_model_of(c.key) for c in cases})
        return [(f"model:{m}", None) for m in models] if len(models) >= 2 else []
    return [(None, lab) for lab in labels] if len(labels) >= 2 else []


def _holdout_name(groups: list[tuple[str | None, str | None]], holdout: str = "auto",
                  cases: list[_Case] | None = None) -> str:
    if not groups:
        return "none (nothing to leave out: the after-figure is in-sample only)"
    key, lab = groups[0]
    if key is None:
        return "leave-one-workload-out" + (" (a single run)" if cases is not None and len(cases) == 1 else "")
    return "leave-one-model-out" if key.startswith("model:") else "leave-one-run-out"


def _restrict(c: _Case, held: tuple[str | None, str | None], exclude: bool) -> _Case:
    key, lab = held

    def is_held(label: str) -> bool:
        if key is None:
            in_group = True
        elif key.startswith("model:"):
            in_group = _model_of(c.key) == key[len("model:"):]
        else:
            in_group = c.key == key
        return in_group and (lab is None or label == lab)

    meas = {k: v for k, v in c.measured.items() if is_held(k[1]) != exclude}
    return _Case(c.key, c.req, meas)


def save_fit(fit: CalibrationFit, path: str | os.PathLike[str]) -> None:
    """Write the calibration file ``recommend --calibration`` reads, and the fit report next to it."""
    from gpuprobe.predict.calibration import Calibration, save_calibration
    from gpuprobe.results.io import write_json_atomic
    from gpuprobe.results.serde import from_data

    save_calibration(from_data(Calibration, fit.calibration), path)
    report = {k: v for k, v in to_data(fit).items() if k != "calibration"}
    write_json_atomic(f"{os.fspath(path)}.fit.json", {"kind": "gpuprobe.calibration-fit", **report})
