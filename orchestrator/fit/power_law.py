"""Power law with offset, L(x) = E + A * x^-alpha, fitted in log space with bootstrap CIs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from orchestrator.fit.bootstrap import single_threaded_blas

PARAM_NAMES = ("E", "A", "alpha")


class FitError(ValueError):
    """The data cannot support the fit asked for (too few points, non-positive values...)."""


@dataclass(frozen=True)
class PowerLawFit:
    """A fitted L(x) = E + A x^-alpha: point estimates, percentile CIs and the data it saw."""

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

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return self.params["E"] + self.params["A"] * x ** -self.params["alpha"]

    @property
    def rmse_log(self) -> float:
        """Root-mean-square error of log predictions on the fitted points."""
        return float(np.sqrt(np.mean((np.log(self.predict(self.x)) - np.log(self.y)) ** 2)))

    def summary(self) -> str:
        pct = int(round(self.ci_level * 100))
        head = f"{self.y_name} = E + A * {self.x_name}^-alpha" + (f"  [{self.label}]" if self.label else "")
        lines = [head, f"  {'param':<6} {'value':>12} {f'{pct}% CI':>27}"]
        for name in PARAM_NAMES:
            lo, hi = self.ci[name]
            lines.append(f"  {name:<6} {self.params[name]:>12.5g} [{lo:>12.5g}, {hi:>12.5g}]")
        lines.append(f"  points={len(self.x)} bootstrap={self.n_boot} rmse(log)={self.rmse_log:.4f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "law": "E + A * x^-alpha",
            "label": self.label,
            "x_name": self.x_name,
            "y_name": self.y_name,
            "params": self.params,
            "ci": {k: list(v) for k, v in self.ci.items()},
            "ci_level": self.ci_level,
            "n_boot": self.n_boot,
            "n_points": int(len(self.x)),
            "rmse_log": self.rmse_log,
        }


def _fit_once(logx: np.ndarray, logy: np.ndarray, starts: list[np.ndarray]) -> np.ndarray:
    """Best of several least-squares fits of theta = (log E, log A', alpha) on log L residuals."""

    def residuals(theta):
        e, a, alpha = theta
        return np.logaddexp(e, a - alpha * logx) - logy

    best, best_cost = None, np.inf
    for start in starts:
        sol = least_squares(residuals, start, method="trf", bounds=([-30, -30, 0.0], [30, 30, 10.0]))
        if sol.cost < best_cost:
            best, best_cost = sol.x, sol.cost
    return best


@single_threaded_blas
def fit_power_law(
    x, y, n_boot: int = 200, ci_level: float = 0.95, seed: int = 0, x_name: str = "x", y_name: str = "loss", label: str = ""
) -> PowerLawFit:
    """Fit L(x) = E + A x^-alpha to positive (x, y) points; CIs from resampling points with replacement.

    x is rescaled by its geometric mean for conditioning; A is reported on the original scale.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if np.any(x <= 0) or np.any(y <= 0):
        raise FitError(f"{label or y_name}: a power law needs positive x and y")
    if len(np.unique(x)) < 3:
        raise FitError(f"{label or y_name}: need at least 3 distinct {x_name} values, got {len(np.unique(x))}")
    x0 = float(np.exp(np.mean(np.log(x))))
    logx, logy = np.log(x / x0), np.log(y)
    e0 = np.log(max(y.min() * 0.5, 1e-12))
    starts = [np.array([e0, np.log(max(np.median(y) - y.min() * 0.5, 1e-12)), alpha]) for alpha in (0.1, 0.5, 1.0, 2.0)]
    theta = _fit_once(logx, logy, starts)

    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), len(x))
        if len(np.unique(x[idx])) < 3:
            continue
        boots.append(_fit_once(logx[idx], logy[idx], [theta]))
    boots = np.array(boots) if boots else theta[None, :]

    def natural(t: np.ndarray) -> np.ndarray:
        # E = exp(e); A = exp(a) * x0^alpha undoes the rescaling of x.
        return np.stack([np.exp(t[..., 0]), np.exp(t[..., 1] + t[..., 2] * np.log(x0)), t[..., 2]], axis=-1)

    point, samples = natural(theta), natural(boots)
    tail = (1 - ci_level) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail], axis=0)
    return PowerLawFit(
        params={name: float(v) for name, v in zip(PARAM_NAMES, point)},
        ci={name: (float(a), float(b)) for name, a, b in zip(PARAM_NAMES, lo, hi)},
        x=x,
        y=y,
        x_name=x_name,
        y_name=y_name,
        label=label,
        n_boot=len(boots) if n_boot else 0,
        ci_level=ci_level,
        param_samples=samples if n_boot else None,
    )
