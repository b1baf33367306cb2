"""Fit the performance model's per-box factors to validation runs, and report the error honestly.

Method: robust least squares in log space. For factors θ (the float fields of the predictor's ``Calibration``
that change at least one prediction of these runs), minimise

    Σ_points ρ(ln predicted(θ) − ln measured)  +  λ Σ_factors (ln θ − ln θ₀)²

with ρ the soft-L1 loss 2δ²(√(1 + (r/δ)²) − 1), δ = 0.1: quadratic for small residuals, linear beyond ~10 %, so
one noisy point (eager-mode steps on a busy host vary by tens of percent) cannot drag every factor; minimised
over ln θ by Levenberg–Marquardt (re-weighted for the soft-L1 loss). Why log space: errors of speed figures are
multiplicative (an efficiency factor scales a time), figures span orders of magnitude (TTFT in ms, tokens/s in
thousands), and 20 % too high costs the same as 20 % too low. The small ridge term (λ = 0.02) keeps factors the
data does not pin down at their published defaults instead of letting them drift. Efficiency factors are
capped at 3 (a CPU's bf16 kernels may beat the float32 rate its ceiling is measured with).

Honesty: the error after calibration is reported on held-out data. ``holdout`` picks what is left out in
turn (the factors are fitted on the rest and the left-out points are predicted):
``run`` each engine run; ``workload`` each workload shape (n x in -> out) in every run at once;
``model`` each model (all its runs); ``machine`` each machine (all the runs predicted from one probe results
file, or on one device kind without a probe). ``auto``: ``run`` with two or more engine runs, else ``workload``.
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


Systems = str | None | list[str | None]
"""One probe results file for every validation file, or one per validation file (runs of several machines)."""


def _system_of(system: Systems, i: int) -> str | None:
    return system[i] if isinstance(system, list) else system


def _cases(all_runs: list[ValidationRuns], system: Systems) -> list[_Case]:
    cases = []
    for i, runs in enumerate(all_runs):
        for run in runs.layouts:
            if run.status != "ok" or run.measured is None:
                continue
            meas = {(f, lab): v for (f, lab), v in measured_figures(run).items() if f in PERF_FIGURES and lab and v}
            if not meas:
                continue
            req = predict_request(runs, run, _system_of(system, i))
            cases.append(_Case(f"{i}:{runs.model_name}:{run.layout.name}", req, meas))
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
        if isinstance(getattr(cal, f.name), float) and getattr(cal, f.name) > 0
    ]


def _with(cal: Any, names: list[str], x: list[float], caps: dict[str, float]) -> Any:
    values = {n: min(math.exp(v), caps.get(n, math.inf)) for n, v in zip(names, x, strict=True)}
    return dataclasses.replace(cal, **values)


SOFT_L1_SCALE = 0.1
"""Residuals (in ln) beyond about 10 % count linearly, not squared: a noisy point cannot drag every factor."""
MAX_ITERATIONS = 30
JACOBIAN_STEP = 0.1
"""Step in ln(factor) for the numerical derivatives (10 %: the simulation is piecewise, so smaller steps see
its steps rather than its slope)."""
EFFICIENCY_CAP = 3.0
"""Efficiencies are relative to a measured or datasheet ceiling; a CPU's bf16 kernels can beat the float32 GEMM
rate it is measured by, so a fit may go above 1, but not without bound."""
MISSING_PENALTY = 3.0
"""Residual (in ln) of a point the predictor gives no figure for with these factors."""


def _soft_l1(r: float) -> float:
    d = SOFT_L1_SCALE
    return 2 * d * d * (math.sqrt(1 + (r / d) ** 2) - 1)


def levenberg_marquardt(residuals: Any, x0: list[float], prior: list[float], ridge: float = RIDGE,
                        iters: int = MAX_ITERATIONS) -> list[float]:
    """Minimise Σ soft-L1(r_i(x)) + ridge Σ (x − prior)² by Levenberg–Marquardt with iteratively re-weighted
    residuals (the soft-L1 weights) and forward-difference derivatives."""
    import numpy as np

    x = np.array(x0, dtype=float)
    p = np.array(prior, dtype=float)

    def cost(r: Any, x: Any) -> float:
        return float(sum(_soft_l1(v) for v in r) + ridge * np.sum((x - p) ** 2))

    r = np.asarray(residuals(list(x)))
    c = cost(r, x)
    mu = 1e-2
    for _ in range(iters):
        jac = np.empty((len(r), len(x)))
        for j in range(len(x)):
            xj = x.copy()
            xj[j] += JACOBIAN_STEP
            jac[:, j] = (np.asarray(residuals(list(xj))) - r) / JACOBIAN_STEP
        w = 1.0 / np.sqrt(1.0 + (r / SOFT_L1_SCALE) ** 2)  # IRLS weights of the soft-L1 loss
        a = jac.T @ (w[:, None] * jac) + ridge * np.eye(len(x))
        g = jac.T @ (w * r) + ridge * (x - p)
        improved = False
        for _ in range(10):
            step = np.linalg.solve(a + mu * np.diag(np.diag(a) + 1e-9), -g)
            xn = x + step
            rn = np.asarray(residuals(list(xn)))
            cn = cost(rn, xn)
            if cn < c:
                improved = c - cn > 1e-4 * max(c, 1e-12)
                x, r, c = xn, rn, cn
                mu = max(mu / 3, 1e-7)
                break
            mu *= 4
        if not improved:
            break
    return list(x)


def _fit(cases: list[_Case], base: Any, names: list[str], predictor: Predictor) -> Any:
    caps = {n: EFFICIENCY_CAP for n in names if n.endswith("_efficiency")}
    x0 = [math.log(getattr(base, n)) for n in names]
    keys = [(c.key, lab, fig) for c in cases for (fig, lab) in c.measured]
    targets = {(c.key, lab, fig): v for c in cases for (fig, lab), v in c.measured.items()}

    def residuals(x: list[float]) -> list[float]:
        pred = _predict(cases, _with(base, names, x, caps), predictor)
        return [math.log(pred[k]) - math.log(targets[k]) if k in pred else MISSING_PENALTY for k in keys]

    return _with(base, names, levenberg_marquardt(residuals, x0, x0), caps)


def fit_factors(all_runs: list[ValidationRuns], system: Systems, base: Any, names: list[str] | None = None,
                predictor: Predictor | None = None, heldout_band: bool = False, band_holdout: str = "run",
                band_names: list[str] | None = None) -> Any:
    """The calibration fitted to every ok run of ``all_runs`` (see ``fit_calibration`` for the honest report).
    ``names``: the factors to fit (default: those that change at least one prediction; ``[]``: none, keep
    ``base``'s). The uncertainty band comes from the fitted predictions (in-sample), or with ``heldout_band`` from
    each group of ``band_holdout`` (``_holdout_groups``: ``run`` by default, ``machine`` for leave-one-machine-out)
    predicted by the factors (``band_names``, default ``names``) fitted to the others: what a run or a machine the
    factors never saw can expect."""
    predictor = predictor or adapter.predict_run
    cases = _cases(all_runs, system)
    if not cases:
        raise UsageError("no validated run has measured speed figures to fit")
    names = names if names is not None else _sensitive(cases, base, _factor_names(base), predictor)
    fitted = _fit(cases, base, names, predictor) if names else base
    if heldout_band and len(cases) >= 2:
        held = heldout_predictions(cases, base, band_names if band_names is not None else names, predictor,
                                   band_holdout)
        return dataclasses.replace(fitted, **_band(cases, held))
    return fit_band(cases, fitted, predictor)


def heldout_predictions(cases: list[_Case], base: Any, names: list[str], predictor: Predictor,
                        holdout: str = "auto") -> dict[tuple[str, str, str], float]:
    """Every point predicted by the factors fitted without its group (``_holdout_groups``), from ``base``."""
    out: dict[tuple[str, str, str], float] = {}
    for held in _holdout_groups(cases, holdout):
        train = [c for c in (_restrict(c, held, exclude=True) for c in cases) if c.measured]
        test = [c for c in (_restrict(c, held, exclude=False) for c in cases) if c.measured]
        cal = _fit(train, base, names, predictor) if names and train else base
        out.update(_predict(test, cal, predictor))
    return out


def _sensitive(cases: list[_Case], base: Any, names: list[str], predictor: Predictor) -> list[str]:
    ref = _predict(cases, base, predictor)
    out = []
    for n in names:
        moved = _predict(cases, dataclasses.replace(base, **{n: getattr(base, n) * 1.2}), predictor)
        if any(abs(moved.get(k, v) - v) > 1e-9 * abs(v) for k, v in ref.items()):
            out.append(n)
    return out


BAND_FIGURES = ("output_tokens_per_s", "ttft_ms", "tpot_ms")
BAND_QUANTILES = (2.5, 97.5)


def fit_band(cases: list[_Case], cal: Any, predictor: Predictor) -> Any:
    """``cal`` with its uncertainty band set from these runs: per figure, the 2.5th and 97.5th percentiles of
    measured / predicted (so about 95 % of such runs fall inside it)."""
    return dataclasses.replace(cal, **_band(cases, _predict(cases, cal, predictor)))


def _band(cases: list[_Case], pred: dict[tuple[str, str, str], float]) -> dict[str, list[float]]:
    """``band_FIGURE`` values from predictions ``pred`` of ``cases`` (figures with at least five points)."""
    from gpuprobe.predict.perf import percentile

    changes = {}
    for fig in BAND_FIGURES:
        ratios = sorted(v / pred[(c.key, lab, f)] for c in cases for (f, lab), v in c.measured.items()
                        if f == fig and (c.key, lab, f) in pred)
        if len(ratios) >= 5:
            changes[f"band_{fig}"] = [round(percentile(ratios, q, True), 4) for q in BAND_QUANTILES]
    return changes


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
    fitted = fit_band(cases, _fit(cases, base, names, predictor) if names else base, predictor)
    after = _predict(cases, fitted, predictor)
    groups = _holdout_groups(cases, holdout)
    heldout = heldout_predictions(cases, base, names, predictor, holdout)
    if heldout:  # the band a run (or workload) the factors never saw can expect, not the in-sample one
        fitted = dataclasses.replace(fitted, **_band(cases, heldout))
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

        held_out = errs("heldout")
        fit.figures.append(
            FigureErrors(fig, len(pts), _median(errs("before")), _median(errs("after")), _median(held_out),
                         max(held_out) if held_out else None)
        )  # fmt: skip
    if not names:
        fit.notes.append("no factor of the calibration changes these predictions: nothing was fitted")
    fitted = dataclasses.replace(fitted, source=f"fitted to {len(cases)} validation run(s): " + ", ".join(fit.runs))
    fit.calibration = to_data(fitted)
    fit.notes.append("memory factors are not fitted here (KV tokens are compared, not used for fitting)")
    return fit


HOLDOUTS = ("auto", "run", "workload", "model", "machine")


def _model_of(key: str) -> str:
    return key.split(":")[1]


def _machine_of(c: _Case) -> str:
    """The machine a case was predicted on: its probe results file, or its device kind without one."""
    return c.req.system_path or f"device {c.req.device}"


def _holdout_groups(cases: list[_Case], holdout: str = "auto") -> list[tuple[str | None, str | None]]:
    """(run key, ``model:NAME``, ``machine:SYSTEM`` or None; workload label or None) groups to leave out in turn."""
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
    if holdout == "machine":
        machines = sorted({_machine_of(c) for c in cases})
        return [(f"machine:{m}", None) for m in machines] if len(machines) >= 2 else []
    return [(None, lab) for lab in labels] if len(labels) >= 2 else []


def _holdout_name(groups: list[tuple[str | None, str | None]], holdout: str = "auto",
                  cases: list[_Case] | None = None) -> str:
    if not groups:
        return "none (nothing to leave out: the after-figure is in-sample only)"
    key, _lab = groups[0]
    if key is None:
        return "leave-one-workload-out" + (" (a single run)" if cases is not None and len(cases) == 1 else "")
    if key.startswith("machine:"):
        return "leave-one-machine-out"
    return "leave-one-model-out" if key.startswith("model:") else "leave-one-run-out"


def _restrict(c: _Case, held: tuple[str | None, str | None], exclude: bool) -> _Case:
    key, lab = held

    def is_held(label: str) -> bool:
        if key is None:
            in_group = True
        elif key.startswith("model:"):
            in_group = _model_of(c.key) == key[len("model:"):]
        elif key.startswith("machine:"):
            in_group = _machine_of(c) == key[len("machine:"):]
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
    write_json_atomic(f"{os.fspath(path)}.fit.json", {"kind": "gpuprobe.calibration-fit", **report},
                      "the calibration fit report")
