"""Joint scaling law L(N, D) = E + A / N^alpha + B / D^beta, fitted as Hoffmann et al. (2022) approach 3.

Chinchilla's recipe (their appendix D.2): parameterise a = log A, b = log B, e = log E so that
log L_hat = LSE(a - alpha log N, b - beta log D, e); minimise the Huber loss (delta = 1e-3) of
log L_hat - log L with L-BFGS from a grid of initialisations and keep the best. Confidence intervals
come from resampling the points (multinomial weights), each resample warm-started from the best fit.

One deliberate shortcut, for speed: the objective is evaluated at every one of the 4500 grid
initialisations (vectorised) and L-BFGS runs from the `n_starts` best of them; `n_starts=None`
runs it from all of them, exactly as in the paper.
"""

from __future__ import annotations

import itertools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from orchestrator.fit.allocation import ComputeOptimalFit, allocation_from_joint, ALLOCATION_PARAMS
from orchestrator.fit.bootstrap import DEFAULT_CI_LEVEL, DEFAULT_N_BOOT, ci_dict, format_table, percentile_ci, resample_counts, single_threaded_blas
from orchestrator.fit.power_law import FitError

JOINT_PARAMS = ("E", "A", "alpha", "B", "beta")
HUBER_DELTA = 1e-3
MIN_DISTINCT = 3  # per axis: with two sizes on an axis, E and that axis' (coefficient, exponent) are not identifiable
MIN_POINTS = 8
ALPHA_BETA_BOUNDS = (0.0, 5.0)


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
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def huber_objective(theta, log_n, log_d, log_l, weights, delta: float = HUBER_DELTA) -> tuple[float, np.ndarray]:
    """Weighted sum of Huber losses of log-L residuals, and its analytic gradient in theta."""
    pred, s1, s2, s3 = _log_prediction(np.asarray(theta), log_n, log_d)
    r = pred - log_l
    g = weights * np.clip(r, -delta, delta)
    gs1, gs2 = g * s1, g * s2
    grad = np.array([gs1.sum(), gs2.sum(), (g * s3).sum(), -(gs1 * log_n).sum(), -(gs2 * log_d).sum()])
    return float((weights * _huber(r, delta)).sum()), grad


def _minimise(start, log_n, log_d, log_l, weights, delta) -> tuple[np.ndarray, float]:
    """L-BFGS-B from `start` = (a, b, e, alpha, beta); returns the optimum in the same coordinates.

    Internally log N and log D are centred (a' = a - alpha mean(log N), likewise b'): the same law,
    but a' and alpha are nearly uncorrelated, so L-BFGS converges in about half the iterations.
    """
    n_mean, d_mean = log_n.mean(), log_d.mean()
    shift = np.array([start[3] * n_mean, start[4] * d_mean, 0.0, 0.0, 0.0])
    bounds = [(None, None)] * 3 + [ALPHA_BETA_BOUNDS] * 2
    sol = minimize(
        huber_objective,
        np.asarray(start, dtype=float) - shift,
        args=(log_n - n_mean, log_d - d_mean, log_l, weights, delta),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 1000, "ftol": 1e-10, "gtol": 1e-8},
    )
    theta = sol.x.copy()
    theta[0] += theta[3] * n_mean
    theta[1] += theta[4] * d_mean
    return theta, float(sol.fun)


def _pool_context():
    """fork where available: a spawned child re-imports the package (mlflow included), seconds each."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _bootstrap_chunk(best, N, D, log_l, counts, delta) -> np.ndarray:
    """Refit each resample (a row of multinomial counts) warm-started from `best`; NaN rows where unidentifiable."""
    log_n, log_d = np.log(N), np.log(D)
    out = np.full((len(counts), 5), np.nan)
    with threadpool_limits(limits=1, user_api="blas"):
        for i, weights in enumerate(counts):
            drawn = weights > 0
            if len(np.unique(N[drawn])) < MIN_DISTINCT or len(np.unique(D[drawn])) < MIN_DISTINCT:
                continue
            out[i] = _minimise(best, log_n, log_d, log_l, weights.astype(float), delta)[0]
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
    allocation: the compute-optimal N_opt(C), D_opt(C) this law implies, with CIs.
    objective: the best Huber objective; n_starts: L-BFGS starts run from the grid.
    """

    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    N: np.ndarray = field(repr=False)
    D: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    boot: np.ndarray = field(repr=False)
    allocation: ComputeOptimalFit = field(repr=False)
    y_name: str = "loss"
    label: str = ""
    n_boot: int = 0
    ci_level: float = DEFAULT_CI_LEVEL
    objective: float = float("nan")
    n_starts: int = 0
    huber_delta: float = HUBER_DELTA

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
        return float(np.sqrt(np.mean((np.log(self.predict(self.N, self.D)) - np.log(self.y)) ** 2)))

    def summary(self) -> str:
        title = f"{self.y_name} = E + A / N^alpha + B / D^beta (Chinchilla approach 3)"
        if self.label:
            title += f"  [{self.label}]"
        footer = (
            f"points={len(self.y)} bootstrap={self.n_boot} starts={self.n_starts} huber_delta={self.huber_delta:g} "
            f"rmse(log)={self.rmse_log:.4f}"
        )
        if self.at_bounds:
            footer += f"\n  warning: {', '.join(self.at_bounds)} at the bound of {ALPHA_BETA_BOUNDS}: the data do not follow this law"
        return format_table(title, self.params, self.ci, self.ci_level, footer) + "\n" + self.allocation.summary()

    @property
    def at_bounds(self) -> list[str]:
        """Exponents that ended on a bound of the optimiser: a sign the law does not describe the data."""
        return [k for k in ("alpha", "beta") if min(abs(self.params[k] - b) for b in ALPHA_BETA_BOUNDS) < 1e-6]

    def to_dict(self) -> dict:
        return {
            "law": "E + A / N^alpha + B / D^beta",
            "method": "Hoffmann et al. 2022 approach 3: log-sum-exp, Huber(log L), L-BFGS-B from a grid",
            "label": self.label,
            "y_name": self.y_name,
            "params": self.params,
            "ci": {k: list(v) for k, v in self.ci.items()},
            "ci_level": self.ci_level,
            "n_boot": self.n_boot,
            "n_points": int(len(self.y)),
            "n_starts": self.n_starts,
            "huber_delta": self.huber_delta,
            "objective": self.objective,
            "rmse_log": self.rmse_log,
            "at_bounds": self.at_bounds,
            "allocation": self.allocation.to_dict(),
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
) -> JointFit:
    """Fit L(N, D) to points of model size N (parameters), data size D (tokens or samples) and loss y > 0.

    Non-finite points are dropped. Raises FitError when the points cannot identify the law.
    n_jobs > 1 splits the bootstrap over that many processes (forked where the platform allows:
    the children only run numpy and scipy on copies of the arrays).
    """
    label = label or y_name
    N, D, y = _clean_points(N, D, y, label)
    log_n, log_d, log_l = np.log(N), np.log(D), np.log(y)
    ones = np.ones_like(log_l)

    grid = hoffmann_grid()
    pred = _log_prediction(grid, log_n, log_d)[0]
    screened = _huber(pred - log_l, delta).sum(axis=1)
    order = np.argsort(screened, kind="stable")
    starts = grid[order if n_starts is None else order[:n_starts]]
    best, best_f = None, np.inf
    for start in starts:
        theta, value = _minimise(start, log_n, log_d, log_l, ones, delta)
        if value < best_f:
            best, best_f = theta, value

    counts = resample_counts(len(y), n_boot, seed)
    if n_jobs > 1 and n_boot >= 2 * n_jobs:
        chunks = np.array_split(counts, n_jobs)
        with ProcessPoolExecutor(n_jobs, mp_context=_pool_context()) as pool:
            parts = pool.map(_bootstrap_chunk, *zip(*[(best, N, D, log_l, c, delta) for c in chunks]))
            boot = np.concatenate(list(parts))
    else:
        boot = _bootstrap_chunk(best, N, D, log_l, counts, delta)
    point, samples = natural_params(best), natural_params(boot)

    alloc_point = allocation_from_joint(*point)
    alloc_samples = allocation_from_joint(*samples.T)
    n_ok = int(np.isfinite(samples).all(axis=1).sum())
    allocation = ComputeOptimalFit(
        params={k: float(v) for k, v in zip(ALLOCATION_PARAMS, alloc_point)},
        ci=ci_dict(ALLOCATION_PARAMS, alloc_samples, ci_level) if n_boot else {k: (np.nan, np.nan) for k in ALLOCATION_PARAMS},
        method="joint",
        label=label,
        n_boot=n_ok,
        ci_level=ci_level,
    )
    return JointFit(
        params={k: float(v) for k, v in zip(JOINT_PARAMS, point)},
        ci=ci_dict(JOINT_PARAMS, samples, ci_level) if n_boot else {k: (np.nan, np.nan) for k in JOINT_PARAMS},
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
        n_starts=len(starts),
        huber_delta=delta,
    )
