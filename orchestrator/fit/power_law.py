"""Power law with offset, L(x) = E + A * x^-alpha, fitted in log space with bootstrap CIs and guards."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sparse
from scipy.optimize import least_squares

from orchestrator.fit import guards
from orchestrator.fit.bootstrap import percentile_ci, single_threaded_blas
from orchestrator.fit.common import FitError
from orchestrator.fit.goodness import GoodnessOfFit, log_rmse, loo_indices
from orchestrator.fit.guards import Identification

PARAM_NAMES = ("E", "A", "alpha")
# The optimizer's coordinates theta = (ln E, ln A', alpha), A' the prefactor at x rescaled by its geometric mean.
LOWER, UPPER = np.array([-30.0, -30.0, 0.0]), np.array([30.0, 30.0, 10.0])
MIN_FIT_DISTINCT = 3  # fewer distinct x and the three parameters cannot be solved for at all
# Three parameters: through 3 distinct sizes the curve passes exactly, leaving no error to test the law.
MIN_DISTINCT = 4
GRADIENT_TOL = 1e-6  # per point, on least_squares' first-order optimality
BOOT_MAX_NFEV = 100


@dataclass(frozen=True)
class PowerLawFit:
    """A fitted L(x) = E + A x^-alpha: point estimates, percentile CIs, checks and the data it saw.

    identification: whether the data identify the law (see orchestrator.fit.guards); when they do
    not, summary() and to_dict() give the reason instead of numbers. goodness: prediction errors.
    group: the columns and values that select this law's points, e.g. (('n_samples', 1000.0),).
    """

    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    x_name: str = "x"
    y_name: str = "loss"
    label: str = ""
    n_boot: int = 0
    ci_level: float = 0.95
    # Bootstrap draws of (E, A, alpha), one row per resample: prediction bands come from these.
    param_samples: np.ndarray | None = field(default=None, repr=False)
    identification: Identification = Identification()
    goodness: GoodnessOfFit | None = None
    group: tuple[tuple[str, float], ...] = ()

    @property
    def identified(self) -> bool:
        return self.identification.identified

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return self.params["E"] + self.params["A"] * x ** -self.params["alpha"]

    def predict_ci(self, x) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise percentile band of the law at x over the bootstrap draws; None without draws."""
        if self.param_samples is None or len(self.param_samples) < 2:
            return None
        x = np.asarray(x, dtype=float)
        E, A, alpha = (self.param_samples[:, i, None] for i in range(3))
        return percentile_ci(E + A * x[None, :] ** -alpha, self.ci_level)

    @property
    def rmse_log(self) -> float:
        """Root-mean-square error of log predictions on the fitted points."""
        return log_rmse(self.predict(self.x), self.y)

    @property
    def title(self) -> str:
        return f"{self.y_name} = E + A * {self.x_name}^-alpha" + (f"  [{self.label}]" if self.label else "")

    def summary(self) -> str:
        lines = [self.title]
        if not self.identified:
            return "\n".join([*lines, f"  {self.identification.status}", f"  points={len(self.x)} distinct {self.x_name}={len(np.unique(self.x))}"])
        pct = int(round(self.ci_level * 100))
        lines.append(f"  {'param':<6} {'value':>12} {f'{pct}% CI':>27}")
        for name in PARAM_NAMES:
            lo, hi = self.ci[name]
            lines.append(f"  {name:<6} {self.params[name]:>12.5g} [{lo:>12.5g}, {hi:>12.5g}]")
        lines.append(f"  points={len(self.x)} bootstrap={self.n_boot}")
        if self.goodness is not None:
            lines.append(f"  {self.goodness.line()}")
        lines += [f"  caveat: {c}" for c in self.identification.caveats]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        ok = self.identified
        return {
            "kind": "power_law",
            "law": "E + A * x^-alpha",
            "label": self.label,
            "group": dict(self.group),
            "x_name": self.x_name,
            "y_name": self.y_name,
            **self.identification.to_dict(),
            "params": self.params if ok else None,
            "ci": {k: list(v) for k, v in self.ci.items()} if ok else None,
            "ci_level": self.ci_level,
            "n_boot": self.n_boot,
            "n_points": int(len(self.x)),
            "goodness": self.goodness.to_dict() if ok and self.goodness else None,
        }


def _fit_once(logx: np.ndarray, logy: np.ndarray, starts: list[np.ndarray], max_nfev: int | None = None):
    """Best of several least-squares fits of theta = (ln E, ln A', alpha) on ln L residuals: (solution, its start).

    Points at one x share the law's value there: the residuals are one per distinct x, sqrt(count) x
    (law - mean ln y), whose sum of squares differs from the points' by a constant (the spread of ln y
    within each x), so the optimum, gradient and optimality are the same at a fraction of the cost.
    """
    cells, of_point, counts = np.unique(logx, return_inverse=True, return_counts=True)
    means = np.bincount(of_point.ravel(), logy) / counts
    root = np.sqrt(counts)

    def residuals(theta):
        e, a, alpha = theta
        return root * (np.logaddexp(e, a - alpha * cells) - means)

    def jacobian(theta):
        # d ln(E + A' x^-alpha) / d(ln E, ln A', alpha): the two terms' shares of L, the second times -ln x.
        e, a, alpha = theta
        power = a - alpha * cells
        share = np.exp(power - np.logaddexp(e, power))
        return np.stack([1.0 - share, share, -cells * share], axis=1) * root[:, None]

    best, best_start = None, None
    for start in starts:
        sol = least_squares(residuals, start, jac=jacobian, method="trf", bounds=(LOWER, UPPER), max_nfev=max_nfev)
        if best is None or sol.cost < best.cost:
            best, best_start = sol, start
    return best, best_start


def _refit_weighted(logx: np.ndarray, logy: np.ndarray, weights: np.ndarray, start: np.ndarray, max_nfev: int | None = None) -> np.ndarray:
    """Refits of theta, one per row of `weights` (how often each point counts: a resample's draws, or
    a leave-one-out's zero), all warm-started from `start`: (len(weights), 3), NaN where a row holds
    fewer than MIN_FIT_DISTINCT distinct x.

    The fits are independent, so their summed cost is minimised by each one's optimum: one sparse
    least-squares problem solves them all, which costs a few Python calls where one per refit costs
    hundreds. Points at one x share the law's value there, so each refit sees one residual per
    distinct x, sqrt(count) x (law - mean ln y): the same optimum and gradient as one per point.
    """
    cells, of_point = np.unique(logx, return_inverse=True)
    onehot = np.zeros((len(logx), len(cells)))
    onehot[np.arange(len(logx)), of_point] = 1.0
    counts = weights @ onehot
    fits = (counts > 0).sum(axis=1) >= MIN_FIT_DISTINCT
    out = np.full((len(weights), 3), np.nan)
    if not fits.any():
        return out
    counts = counts[fits]
    means = np.divide((weights[fits] * logy) @ onehot, counts, out=np.zeros_like(counts), where=counts > 0)
    root = np.sqrt(counts)
    n_fits, n_cells = counts.shape
    rows = np.repeat(np.arange(n_fits * n_cells), 3)
    columns = (np.arange(n_fits)[:, None, None] * 3 + np.arange(3)).repeat(n_cells, axis=1).ravel()

    def residuals(flat):
        e, a, alpha = (flat.reshape(n_fits, 3)[:, k, None] for k in range(3))
        return (root * (np.logaddexp(e, a - alpha * cells) - means)).ravel()

    def jacobian(flat):
        e, a, alpha = (flat.reshape(n_fits, 3)[:, k, None] for k in range(3))
        power = a - alpha * cells
        share = np.exp(power - np.logaddexp(e, power))
        blocks = np.stack([1.0 - share, share, -cells * share], axis=2) * root[:, :, None]
        return sparse.csr_matrix((blocks.ravel(), (rows, columns)), shape=(n_fits * n_cells, n_fits * 3))

    sol = least_squares(
        residuals, np.tile(start, n_fits), jac=jacobian, method="trf", tr_solver="lsmr",
        bounds=(np.tile(LOWER, n_fits), np.tile(UPPER, n_fits)), x_scale="jac", max_nfev=max_nfev,
    )  # fmt: skip
    out[fits] = sol.x.reshape(n_fits, 3)
    return out


def _natural(theta: np.ndarray, x0: float) -> np.ndarray:
    """(E, A, alpha) from theta; A = exp(a) * x0^alpha undoes the rescaling of x."""
    return np.stack([np.exp(theta[..., 0]), np.exp(theta[..., 1] + theta[..., 2] * np.log(x0)), theta[..., 2]], axis=-1)


def _goodness(x, y, theta, x0, x_name) -> GoodnessOfFit:
    """Residual, leave-one-out and leave-largest-out errors; refits warm-start from theta."""
    logx, logy = np.log(x / x0), np.log(y)

    def law(t, xs):
        E, A, alpha = _natural(t, x0)
        return E + A * xs**-alpha

    rmse = log_rmse(law(theta, x), y)
    left_out = loo_indices(len(x))
    weights = np.ones((len(left_out), len(x)))
    weights[np.arange(len(left_out)), left_out] = 0.0
    refits = _refit_weighted(logx, logy, weights, theta)
    done = np.isfinite(refits).all(axis=1)
    loo_pred = [law(t, x[i]) for t, i in zip(refits[done], left_out[done])]
    loo_obs = list(y[left_out[done]])
    largest, held, note = np.max(x), x == np.max(x), ""
    largest_out = None
    if len(np.unique(x[~held])) >= MIN_FIT_DISTINCT:
        sol, _ = _fit_once(logx[~held], logy[~held], [theta])
        largest_out = log_rmse(law(sol.x, x[held]), y[held])
        note = f"{x_name} = {largest:.3g}, {int(held.sum())} points"
    else:
        note = f"needs {MIN_FIT_DISTINCT} distinct {x_name} below the largest"
    return GoodnessOfFit(rmse, log_rmse(loo_pred, loo_obs) if loo_pred else None, largest_out, note, len(x), len(loo_pred))


def _identify(x, y, sol, start, point, ci, n_boot, n_ok, x_name) -> Identification:
    E, A, alpha = point
    predicted = E + A * x**-alpha
    rmse = log_rmse(predicted, y)
    drop = float(np.log(predicted.max() / predicted.min())) if np.all(predicted > 0) else 0.0
    problems = [
        guards.too_few_sizes(x_name, len(np.unique(x)), MIN_DISTINCT, "3 parameters pass exactly through 3 sizes"),
        guards.unmoved(dict(zip(("ln E", "ln A", "alpha"), sol.x)), dict(zip(("ln E", "ln A", "alpha"), start)), "the law"),
        guards.flat_term(f"A {x_name}^-alpha", drop),
        guards.on_bound("alpha", alpha, LOWER[2], UPPER[2]),
        guards.e_at_zero(E, float(y.min())),
        guards.on_bound("ln A", float(sol.x[1]), LOWER[1], UPPER[1]),
        guards.implausible("alpha", alpha),
    ]
    ci_problems, caveats = guards.bootstrap_checks(ci, rmse, ("alpha",), float(y.min()), n_boot, n_ok, f"{MIN_FIT_DISTINCT}+ distinct {x_name}")
    problems += ci_problems
    # Last: drifting along a flat direction (E toward 0, say) is usually already named above.
    problems.append(guards.not_converged(sol.status > 0, float(sol.optimality), GRADIENT_TOL * len(x), sol.message))
    return guards.identification(problems, caveats)


@single_threaded_blas
def fit_power_law(
    x,
    y,
    n_boot: int = 200,
    ci_level: float = 0.95,
    seed: int = 0,
    x_name: str = "x",
    y_name: str = "loss",
    label: str = "",
    group: tuple[tuple[str, float], ...] = (),
) -> PowerLawFit:
    """Fit L(x) = E + A x^-alpha to positive (x, y) points; CIs from resampling points with replacement.

    x is rescaled by its geometric mean for conditioning; A is reported on the original scale. Raises
    FitError when the law cannot be fitted at all; a fit the data do not identify is returned with
    the reason in `.identification`.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if np.any(x <= 0) or np.any(y <= 0):
        raise FitError(f"{label or y_name}: a power law needs positive x and y")
    if len(np.unique(x)) < MIN_FIT_DISTINCT:
        raise FitError(f"{label or y_name}: need at least {MIN_FIT_DISTINCT} distinct {x_name} values, got {len(np.unique(x))}")
    x0 = float(np.exp(np.mean(np.log(x))))
    logx, logy = np.log(x / x0), np.log(y)
    e0 = np.log(max(y.min() * 0.5, 1e-12))
    starts = [np.array([e0, np.log(max(np.median(y) - y.min() * 0.5, 1e-12)), alpha]) for alpha in (0.1, 0.5, 1.0, 2.0)]
    sol, start = _fit_once(logx, logy, starts)
    theta = sol.x

    rng = np.random.default_rng(seed)
    draws = np.array([np.bincount(rng.integers(0, len(x), len(x)), minlength=len(x)) for _ in range(n_boot)], dtype=float)
    # Warm-started from the fit, a resample converges in a few steps; one that drifts along a flat
    # direction (E toward 0) is stopped where it is, which is as far as its CI needs to know.
    refits = _refit_weighted(logx, logy, draws.reshape(n_boot, len(x)), theta, max_nfev=BOOT_MAX_NFEV)
    boots = refits[np.isfinite(refits).all(axis=1)]
    point = _natural(theta, x0)
    samples = _natural(boots, x0) if len(boots) else None
    if samples is not None:
        lo, hi = percentile_ci(samples, ci_level)
        ci = {name: (float(a), float(b)) for name, a, b in zip(PARAM_NAMES, lo, hi)}
    else:
        ci = {name: (float("nan"), float("nan")) for name in PARAM_NAMES}
    ident = _identify(x, y, sol, start, point, ci, n_boot, len(boots), x_name)
    return PowerLawFit(
        params={name: float(v) for name, v in zip(PARAM_NAMES, point)},
        ci=ci,
        x=x,
        y=y,
        x_name=x_name,
        y_name=y_name,
        label=label,
        n_boot=len(boots),
        ci_level=ci_level,
        param_samples=samples,
        identification=ident,
        goodness=_goodness(x, y, theta, x0, x_name) if ident.identified else None,
        group=tuple(group),
    )
