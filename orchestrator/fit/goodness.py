"""Goodness of fit, stated the same way for every law: how far its predictions are from the points.

Each error is the root-mean-square of ln(predicted / observed), about the relative error:
- rmse: on the points the law was fitted to (residuals);
- loo_rmse: leave-one-out, each point predicted by the law refitted without it (on a large sweep,
  an even spread of MAX_LOO_POINTS of them);
- largest_out_rmse: the law refitted below the largest size (N, or C), predicting the points at it.
  This is the question a scaling law is asked; it needs one size more than the law needs to fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GoodnessOfFit:
    """Prediction errors of one law (RMSE of ln(predicted / observed)); None where not computable.

    largest_out: what was held out for largest_out_rmse (e.g. 'n_params = 5.5e+04, 3 points'), or why
    it was not computed.
    """

    rmse: float
    loo_rmse: float | None = None
    largest_out_rmse: float | None = None
    largest_out: str = ""
    n_points: int = 0
    loo_points: int = 0  # how many points were left out in turn (all, or an even spread of a large sweep)

    def line(self) -> str:
        def fmt(v):
            return "-" if v is None else f"{v:.3g}"

        spread = f" ({self.loo_points} of {self.n_points} points)" if 0 < self.loo_points < self.n_points else ""
        text = f"rmse(ln) {fmt(self.rmse)}  leave-one-out {fmt(self.loo_rmse)}{spread}  leave-largest-out {fmt(self.largest_out_rmse)}"
        return text + (f" ({self.largest_out})" if self.largest_out else "")

    def to_dict(self) -> dict:
        return {
            "error": "rmse of ln(predicted / observed)",
            "rmse": self.rmse,
            "loo_rmse": self.loo_rmse,
            "largest_out_rmse": self.largest_out_rmse,
            "largest_out": self.largest_out,
            "n_points": self.n_points,
            "loo_points": self.loo_points,
        }


# Leave-one-out refits a law once per point; on a large sweep an even spread of this many points
# estimates the same error at a bounded cost.
MAX_LOO_POINTS = 120


def loo_indices(n: int) -> np.ndarray:
    """The points to leave out in turn: all of them, or MAX_LOO_POINTS spread evenly."""
    return np.arange(n) if n <= MAX_LOO_POINTS else np.unique(np.linspace(0, n - 1, MAX_LOO_POINTS).round().astype(int))


def log_rmse(predicted, observed) -> float:
    """RMSE of ln(predicted / observed); inf when a prediction is not positive."""
    predicted, observed = np.asarray(predicted, dtype=float), np.asarray(observed, dtype=float)
    if predicted.size == 0:
        return float("nan")
    with np.errstate(all="ignore"):
        ratio = np.log(predicted / observed)
    if not np.all(np.isfinite(ratio)):
        return float("inf")
    return float(np.sqrt(np.mean(ratio**2)))
