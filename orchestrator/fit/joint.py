"""Joint scaling law L(N, D) = E + A / N^alpha + B / D^beta, fitted as Hoffmann et al. (2022) approach 3.

Chinchilla's recipe (their appendix D.2): parameterise a = log A, b = log B, e = log E so that
log L_hat = LSE(a - alpha log N, b - beta log D, e); minimise the Huber loss (delta = 1e-3) of
log L_hat - log L with L-BFGS from a grid of initialisations and keep the best. Confidence intervals
come from resampling the points (multinomial weights), each resample warm-started from the best fit.

One deliberate shortcut, for speed: the objective is evaluated at every one of the 4500 grid
initialisations (vectorised) and L-BFGS runs from the `n_starts` best of them; `n_starts=None`
runs it from all of them, exactly as in the paper. The law is evaluated once per distinct (N, D)
(`Cells`: a sweep's seeds share one) and the loss summed over the points, which is the same
objective at a tenth of the cost on a seeded grid.
"""

from __future__ import annotations

import itertools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from orchestrator.fit import guards
from orchestrator.fit.allocation import ComputeOptimalFit, allocation_from_joint
from orchestrator.fit.bootstrap import DEFAULT_CI_LEVEL, DEFAULT_N_BOOT, ci_dict, format_table, percentile_ci, resample_counts, single_threaded_blas
from orchestrator.fit.goodness import GoodnessOfFit, log_rmse, loo_indices
from orchestrator.fit.guards import Identification
from orchestrator.fit.isoflop import compute_budgets
from orchestrator.fit.power_law import FitError

JOINT_PARAMS = ("E", "A", "alpha", "B", "beta")
HUBER_DELTA = 1e-3
MIN_DISTINCT = 3  # per axis: with two sizes on an axis, E and that axis' (coefficient, exponent) are not identifiable
MIN_POINTS = 8
ALPHA_BETA_BOUNDS = (0.0, 5.0)
# Converged: the projected gradient is below this share of its largest possible size, n_points x delta
# (each point's Huber gradient is clipped at delta).
GRADIENT_TOL = 1e-3


def hoffmann_grid() -> np.ndarray:
    """The 4500 initialisations (a, b, e, alpha, beta) of Hoffmann et al. (2022), appendix D.2."""
    exps = np.arange(0.0, 2.01, 0.5)
    es = np.arange(-1.0, 1.01, 0.5)
    abs_ = np.arange(0.0, 25.1, 5.0)
    return np.array(list(itertools.product(abs_, abs_, es, exps, exps)), dtype=float)


def _log_prediction(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray):
    """log L_hat and the softmax weights of its three terms; theta = (a, b, e, alpha, beta) along the last axis."""
    a, b, e, alpha, beta = (theta[..., i, None] for i in range(5))
    t1, t2 = a - alpha * log_n, b - beta * log_d
    t3 = np.broadcast_to(e, t1.shape)
    top = np.maximum(np.maximum(t1, t2), t3)
    x1, x2, x3 = np.exp(t1 - top), np.exp(t2 - top), np.exp(t3 - top)
    total = x1 + x2 + x3
    return top + np.log(total), x1 / total, x2 / total, x3 / total


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    """0.5 r^2 within delta, delta (|r| - delta / 2) beyond: both are m (|r| - m / 2) with m = min(|r|, delta)."""
    ar = np.abs(r)
    m = np.minimum(ar, delta)
    return m * (ar - 0.5 * m)


@dataclass(frozen=True)
class Cells:
    """The points' distinct (log N, log D) pairs and each point's pair: the law is evaluated once per
    pair (a sweep's seeds share one), the loss summed over the points."""

    log_n: np.ndarray
    log_d: np.ndarray
    of_point: np.ndarray

    @classmethod
    def of(cls, log_n: np.ndarray, log_d: np.ndarray) -> Cells:
        pairs, of_point = np.unique(np.stack([log_n, log_d], axis=1), axis=0, return_inverse=True)
        return cls(pairs[:, 0].copy(), pairs[:, 1].copy(), of_point.ravel())

    def shifted(self, n_by: float, d_by: float) -> Cells:
        return Cells(self.log_n - n_by, self.log_d - d_by, self.of_point)


def huber_objective(theta, cells: Cells, log_l, weights, delta: float = HUBER_DELTA) -> tuple[float, np.ndarray]:
    """Weighted sum of Huber losses of log-L residuals, and its analytic gradient in theta."""
    pred, s1, s2, s3 = _log_prediction(np.asarray(theta), cells.log_n, cells.log_d)
    r = pred[cells.of_point] - log_l
    g = np.bincount(cells.of_point, weights * np.clip(r, -delta, delta), minlength=len(pred))
    gs1, gs2 = g * s1, g * s2
    grad = np.array([gs1.sum(), gs2.sum(), g @ s3, -(gs1 @ cells.log_n), -(gs2 @ cells.log_d)])
    return float(weights @ _huber(r, delta)), grad


def _minimise(start, cells: Cells, log_l, weights, delta) -> tuple[np.ndarray, float, bool, str, float]:
    """L-BFGS-B from `start` = (a, b, e, alpha, beta): the optimum in the same coordinates, the
    objective there, whether L-BFGS-B reported success (and its message), and the projected gradient.

    Internally log N and log D are centred on the points' means (a' = a - alpha mean(log N), likewise
    b'): the same law, but a' and alpha are nearly uncorrelated, so L-BFGS converges in about half the
    iterations.
    """
    n_mean, d_mean = cells.log_n[cells.of_point].mean(), cells.log_d[cells.of_point].mean()
    shift = np.array([start[3] * n_mean, start[4] * d_mean, 0.0, 0.0, 0.0])
    bounds = [(None, None)] * 3 + [ALPHA_BETA_BOUNDS] * 2
    sol = minimize(
        huber_objective,
        np.asarray(start, dtype=float) - shift,
        args=(cells.shifted(n_mean, d_mean), log_l, weights, delta),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 1000, "ftol": 1e-10, "gtol": 1e-8},
    )
    theta = sol.x.copy()
    theta[0] += theta[3] * n_mean
    theta[1] += theta[4] * d_mean
    # On a bound, a gradient pointing out of the box is no sign of an unfinished search.
    grad = np.asarray(sol.jac, dtype=float).copy()
    lo, hi = ALPHA_BETA_BOUNDS
    for i in (3, 4):
        if (sol.x[i] <= lo and grad[i] > 0) or (sol.x[i] >= hi and grad[i] < 0):
            grad[i] = 0.0
    return theta, float(sol.fun), bool(sol.success), str(sol.message), float(np.abs(grad).max())


def _pool_context():
    """fork where available: a spawned child re-imports the package (mlflow included), seconds each."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _bootstrap_chunk(best, N, D, log_l, counts, delta) -> np.ndarray:
    """Refit each resample (a row of multinomial counts) warm-started from `best`; NaN rows where unidentifiable."""
    cells = Cells.of(np.log(N), np.log(D))
    out = np.full((len(counts), 5), np.nan)
    with threadpool_limits(limits=1, user_api="blas"):
        for i, weights in enumerate(counts):
            drawn = weights > 0
            if len(np.unique(N[drawn])) < MIN_DISTINCT or len(np.unique(D[drawn])) < MIN_DISTINCT:
                continue
            out[i] = _minimise(best, cells, log_l, weights.astype(float), delta)[0]
    return out


def natural_params(theta: np.ndarray) -> np.ndarray:
    """(E, A, alpha, B, beta) from (a, b, e, alpha, beta) along the last axis."""
    theta = np.asarray(theta, dtype=float)
    return np.stack([np.exp(theta[..., 2]), np.exp(theta[..., 0]), theta[..., 3], np.exp(theta[..., 1]), theta[..., 4]], -1)


@dataclass(frozen=True)
class JointFit:
    """A fitted L(N, D) = E + A / N^alpha + B / D^beta.

    params / ci: E, A, alpha, B, beta and their percentile bootstrap intervals at ci_level.
    N (parameters), D (data units), y: the points it saw. boot: (n_boot, 5) bootstrap samples of
    (E, A, alpha, B, beta), NaN rows for resamples that could not be fitted.
    identification: whether the data identify the law (orchestrator.fit.guards); when they do not,
    summary() and to_dict() give the reason instead of numbers and there is no allocation.
    allocation: the compute-optimal N_opt(C), D_opt(C) this law implies, with CIs (None when the law
    is not identified). goodness: residual, leave-one-out and leave-largest-N-out errors.
    objective: the best Huber objective; n_starts: L-BFGS starts run from the grid.
    """

    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    N: np.ndarray = field(repr=False)
    D: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    boot: np.ndarray = field(repr=False)
    allocation: ComputeOptimalFit | None = field(repr=False)
    y_name: str = "loss"
    label: str = ""
    n_boot: int = 0
    ci_level: float = DEFAULT_CI_LEVEL
    objective: float = float("nan")
    n_starts: int = 0
    huber_delta: float = HUBER_DELTA
    identification: Identification = Identification()
    goodness: GoodnessOfFit | None = None

    @property
    def identified(self) -> bool:
        return self.identification.identified

    def predict(self, N, D) -> np.ndarray:
        """L_hat at model size N (parameters) and data size D (same unit as the fitted D)."""
        p = self.params
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]

    def predict_ci(self, N, D) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise percentile band of L_hat(N, D) over the bootstrap samples."""
        N, D = np.broadcast_arrays(np.asarray(N, dtype=float), np.asarray(D, dtype=float))
        E, A, alpha, B, beta = (self.boot[:, i, None] for i in range(5))
        curves = E + A * N.ravel() ** -alpha + B * D.ravel() ** -beta
        lo, hi = percentile_ci(curves, self.ci_level)
        return lo.reshape(N.shape), hi.reshape(N.shape)

    @property
    def rmse_log(self) -> float:
        return log_rmse(self.predict(self.N, self.D), self.y)

    @property
    def title(self) -> str:
        return f"{self.y_name} = E + A / N^alpha + B / D^beta (Chinchilla approach 3)" + (f"  [{self.label}]" if self.label else "")

    def summary(self) -> str:
        counts = f"points={len(self.y)} distinct N={len(np.unique(self.N))} D={len(np.unique(self.D))}"
        if not self.identified:
            return "\n".join([self.title, f"  {self.identification.status}", f"  {counts}", "  no compute-optimal allocation: it would rest on this fit"])
        footer = f"{counts} bootstrap={self.n_boot} starts={self.n_starts} huber_delta={self.huber_delta:g}"
        if self.goodness is not None:
            footer += f"\n  {self.goodness.line()}"
        footer += "".join(f"\n  caveat: {c}" for c in self.identification.caveats)
        text = format_table(self.title, self.params, self.ci, self.ci_level, footer)
        return text + ("\n" + self.allocation.summary() if self.allocation is not None else "")

    @property
    def at_bounds(self) -> list[str]:
        """Exponents that ended on a bound of the optimiser: a sign the law does not describe the data."""
        return [k for k in ("alpha", "beta") if min(abs(self.params[k] - b) for b in ALPHA_BETA_BOUNDS) < guards.BOUND_TOL]

    def to_dict(self) -> dict:
        ok = self.identified
        return {
            "kind": "joint",
            "law": "E + A / N^alpha + B / D^beta",
            "method": "Hoffmann et al. 2022 approach 3: log-sum-exp, Huber(log L), L-BFGS-B from a grid",
            "label": self.label,
            "y_name": self.y_name,
            **self.identification.to_dict(),
            "params": self.params if ok else None,
            "ci": {k: list(v) for k, v in self.ci.items()} if ok else None,
            "ci_level": self.ci_level,
            "n_boot": self.n_boot,
            "n_points": int(len(self.y)),
            "n_starts": self.n_starts,
            "huber_delta": self.huber_delta,
            "objective": self.objective if ok else None,
            "goodness": self.goodness.to_dict() if ok and self.goodness else None,
            "allocation": self.allocation.to_dict() if self.allocation is not None else None,
        }


def _clean_points(N, D, y, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    N, D, y = (np.asarray(v, dtype=float).ravel() for v in (N, D, y))
    if not (len(N) == len(D) == len(y)):
        raise FitError(f"{label}: N, D and loss have different lengths ({len(N)}, {len(D)}, {len(y)})")
    keep = np.isfinite(N) & np.isfinite(D) & np.isfinite(y)
    N, D, y = N[keep], D[keep], y[keep]
    if np.any(N <= 0) or np.any(D <= 0) or np.any(y <= 0):
        raise FitError(f"{label}: a joint law needs positive N, D and loss (log L is fitted)")
    for name, values in (("N", N), ("D", D)):
        distinct = len(np.unique(values))
        if distinct < MIN_DISTINCT:
            raise FitError(
                f"{label}: need at least {MIN_DISTINCT} distinct {name} values for a joint fit, got {distinct} "
                f"(with fewer, E and that axis' coefficient and exponent are not identifiable)"
            )
    if len(y) < MIN_POINTS:
        raise FitError(f"{label}: need at least {MIN_POINTS} finite points for a joint fit, got {len(y)}")
    return N, D, y


SCREEN_CHUNK = 250_000  # grid starts x points screened at a time: bounds the screen's memory


def _best_from_grid(cells: Cells, log_l, weights, n_starts, delta, also: np.ndarray | None = None):
    """Hoffmann's grid screened by the objective, L-BFGS-B from the n_starts best (and from `also`):
    (best run, its start, starts run)."""
    grid = hoffmann_grid()
    pred = _log_prediction(grid, cells.log_n, cells.log_d)[0]
    rows = max(1, SCREEN_CHUNK // len(log_l))
    screened = np.concatenate(
        [_huber(pred[i : i + rows][:, cells.of_point] - log_l, delta) @ weights for i in range(0, len(grid), rows)]
    )
    order = np.argsort(screened, kind="stable")
    starts = grid[order if n_starts is None else order[:n_starts]]
    if also is not None:
        starts = np.vstack([also, starts])
    best, best_start = None, None
    for start in starts:
        run = _minimise(start, cells, log_l, weights, delta)
        if best is None or run[1] < best[1]:
            best, best_start = run, start
    return best, best_start, len(starts)


def _identify(N, D, y, run, start, point, ci, n_boot, n_ok) -> Identification:
    theta, _, success, message, gradient = run
    E, A, alpha, B, beta = point
    lo, hi = ALPHA_BETA_BOUNDS
    predicted = E + A * N**-alpha + B * D**-beta
    rmse = log_rmse(predicted, y)
    middle = float(np.median(y))
    n_drop = A * (N.min() ** -alpha - N.max() ** -alpha) / middle
    d_drop = B * (D.min() ** -beta - D.max() ** -beta) / middle
    names = ("ln A", "ln B", "ln E", "alpha", "beta")
    estimate, begun = dict(zip(names, theta)), dict(zip(names, start))
    problems = [
        guards.unmoved({k: estimate[k] for k in ("ln A", "alpha")}, {k: begun[k] for k in ("ln A", "alpha")}, "the N term A / N^alpha"),
        guards.unmoved({k: estimate[k] for k in ("ln B", "beta")}, {k: begun[k] for k in ("ln B", "beta")}, "the D term B / D^beta"),
        guards.flat_term("A / N^alpha", float(n_drop)),
        guards.flat_term("B / D^beta", float(d_drop)),
        guards.on_bound("alpha", alpha, lo, hi),
        guards.on_bound("beta", beta, lo, hi),
        guards.e_at_zero(E, float(y.min())),
        guards.implausible("alpha", alpha),
        guards.implausible("beta", beta),
    ]
    ci_problems, caveats = guards.bootstrap_checks(ci, rmse, ("alpha", "beta"), float(y.min()), n_boot, n_ok, f"{MIN_DISTINCT}+ distinct N and D")
    problems += ci_problems
    problems.append(guards.not_converged(success, gradient, GRADIENT_TOL * len(y) * HUBER_DELTA, message))
    return guards.identification(problems, caveats)


# The leave-largest-out refit starts from the fit and from this many of the grid's best starts for
# the points below the largest size: a basin of their own is found without the full 64-start search.
LARGEST_OUT_STARTS = 8


def _goodness(N, D, y, best, delta) -> GoodnessOfFit:
    """Residual error, leave-one-out (warm-started from the fit) and leave-largest-N-out (the fit and
    a small grid search)."""
    log_n, log_d, log_l = np.log(N), np.log(D), np.log(y)
    cells = Cells.of(log_n, log_d)

    def law(theta, n, d):
        return np.exp(_log_prediction(np.asarray(theta), np.log(n), np.log(d))[0])

    rmse = log_rmse(law(best, N, D), y)
    loo_pred = np.full(len(y), np.nan)
    for i in loo_indices(len(y)):
        weights = np.ones_like(log_l)
        weights[i] = 0.0
        rest = weights > 0
        if len(np.unique(N[rest])) < MIN_DISTINCT or len(np.unique(D[rest])) < MIN_DISTINCT:
            continue
        theta = _minimise(best, cells, log_l, weights, delta)[0]
        loo_pred[i] = law(theta, N[i : i + 1], D[i : i + 1])[0]
    done = np.isfinite(loo_pred)
    # Hold out the largest model size, or the largest compute (6 N D within 5%) where that holds more
    # points: on an IsoFLOP design every N is distinct, but the largest budget is a whole profile.
    flops = 6 * N * D
    candidates = [(N == N.max(), f"N = {N.max():.3g}"), (compute_budgets(flops) == compute_budgets(flops).max(), f"C = {flops.max():.3g}")]
    largest_out, note = None, f"needs {MIN_DISTINCT} distinct N and D and {MIN_POINTS} points below the largest N or C"
    for held, what in sorted(candidates, key=lambda c: -c[0].sum()):
        below = ~held
        if len(np.unique(N[below])) >= MIN_DISTINCT and len(np.unique(D[below])) >= MIN_DISTINCT and below.sum() >= MIN_POINTS:
            below_cells = Cells.of(log_n[below], log_d[below])
            run, _, _ = _best_from_grid(below_cells, log_l[below], np.ones(int(below.sum())), LARGEST_OUT_STARTS, delta, also=best)
            largest_out = log_rmse(law(run[0], N[held], D[held]), y[held])
            note = f"{what}, {int(held.sum())} points"
            break
    return GoodnessOfFit(rmse, log_rmse(loo_pred[done], y[done]) if done.any() else None, largest_out, note, len(y), int(done.sum()))


@single_threaded_blas
def fit_joint_law(
    N,
    D,
    y,
    n_boot: int = DEFAULT_N_BOOT,
    ci_level: float = DEFAULT_CI_LEVEL,
    seed: int = 0,
    n_starts: int | None = 64,
    delta: float = HUBER_DELTA,
    y_name: str = "loss",
    label: str = "",
    n_jobs: int = 1,
    goodness: bool = True,
) -> JointFit:
    """Fit L(N, D) to points of model size N (parameters), data size D (tokens or samples) and loss y > 0.

    Non-finite points are dropped. Raises FitError when the points cannot be fitted at all; a law the
    data do not identify comes back with the reason in `.identification` and no allocation.
    n_jobs > 1 splits the bootstrap over that many processes (forked where the platform allows:
    the children only run numpy and scipy on copies of the arrays). goodness=False skips the
    leave-one-out and leave-largest-out refits (for a fit that is itself a held-out test).
    """
    label = label or y_name
    N, D, y = _clean_points(N, D, y, label)
    log_l = np.log(y)
    run, start, n_run = _best_from_grid(Cells.of(np.log(N), np.log(D)), log_l, np.ones_like(log_l), n_starts, delta)
    best, best_f = run[0], run[1]

    counts = resample_counts(len(y), n_boot, seed)
    if n_jobs > 1 and n_boot >= 2 * n_jobs:
        chunks = np.array_split(counts, n_jobs)
        with ProcessPoolExecutor(n_jobs, mp_context=_pool_context()) as pool:
            parts = pool.map(_bootstrap_chunk, *zip(*[(best, N, D, log_l, c, delta) for c in chunks]))
            boot = np.concatenate(list(parts))
    else:
        boot = _bootstrap_chunk(best, N, D, log_l, counts, delta)
    point, samples = natural_params(best), natural_params(boot)
    n_ok = int(np.isfinite(samples).all(axis=1).sum())
    ci = ci_dict(JOINT_PARAMS, samples, ci_level) if n_boot else {k: (np.nan, np.nan) for k in JOINT_PARAMS}
    ident = _identify(N, D, y, run, start, point, ci, n_boot, n_ok)
    allocation = None
    if ident.identified:
        allocation = ComputeOptimalFit.from_samples(
            allocation_from_joint(*point), allocation_from_joint(*samples.T), "joint", label, ci_level, n_boot
        )
    return JointFit(
        params={k: float(v) for k, v in zip(JOINT_PARAMS, point)},
        ci=ci,
        N=N,
        D=D,
        y=y,
        boot=samples,
        allocation=allocation,
        y_name=y_name,
        label=label,
        n_boot=n_ok,
        ci_level=ci_level,
        objective=best_f,
        n_starts=n_run,
        huber_delta=delta,
        identification=ident,
        goodness=_goodness(N, D, y, best, delta) if goodness and ident.identified else None,
    )
