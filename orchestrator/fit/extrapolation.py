"""Held-out extrapolation: fit on the small trials, predict the large ones, report the error.

This is the test a scaling law exists to pass: trained on trials at or below a threshold of
compute (or model size), how well does it predict the trials above it?
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.fit.bootstrap import bootstrap_jobs
from orchestrator.fit.joint import JointFit, fit_joint_law
from orchestrator.fit.power_law import FitError, PowerLawFit, fit_power_law

DEFAULT_QUANTILE = 0.75


@dataclass(frozen=True)
class ExtrapolationResult:
    """A law fitted below `threshold` of `threshold_col` and scored on the trials above it.

    fit: the law fitted on the small trials (JointFit or PowerLawFit); params, ci and predict are its.
    held_out: one row per held-out trial: the size columns, `y` (observed), `predicted`, `rel_error`
      ((predicted - observed) / observed).
    errors: mean_abs_rel_error, max_abs_rel_error, rmse_log (of predicted vs observed), n_fit, n_held_out.
    """

    fit: JointFit | PowerLawFit = field(repr=False)
    threshold_col: str
    threshold: float
    held_out: pd.DataFrame = field(repr=False)
    errors: dict[str, float]
    label: str = ""

    @property
    def identification(self):
        """The small-side law's: an extrapolation from a law the data do not identify means nothing."""
        return self.fit.identification

    @property
    def identified(self) -> bool:
        return self.fit.identified

    @property
    def params(self) -> dict[str, float]:
        return self.fit.params

    @property
    def ci(self) -> dict[str, tuple[float, float]]:
        return self.fit.ci

    def predict(self, *sizes) -> np.ndarray:
        return self.fit.predict(*sizes)

    @property
    def title(self) -> str:
        e = self.errors
        return (
            f"held-out extrapolation [{self.label}]: fit on {e['n_fit']} trials with {self.threshold_col} <= {self.threshold:.4g}, "
            f"predict {e['n_held_out']} above"
        )

    def summary(self) -> str:
        if not self.identified:
            return f"{self.title}\n  not identified: the law fitted below the threshold is {self.identification.status}"
        e = self.errors
        lines = [self.title, f"  mean |rel error| {e['mean_abs_rel_error']:.4f}  max |rel error| {e['max_abs_rel_error']:.4f}  rmse(log) {e['rmse_log']:.4f}"]
        return "\n".join(lines) + "\n" + "\n".join("  " + line for line in self.fit.summary().splitlines())

    def to_dict(self) -> dict:
        ok = self.identified
        return {
            "kind": "extrapolation",
            "label": self.label,
            "threshold_col": self.threshold_col,
            "threshold": self.threshold,
            **self.identification.to_dict(),
            "errors": self.errors if ok else {k: self.errors[k] for k in ("n_fit", "n_held_out")},
            "params": self.params if ok else None,
            "ci": {k: list(v) for k, v in self.ci.items()} if ok else None,
            "fit": self.fit.to_dict(),
            "held_out": self.held_out.to_dict(orient="list") if ok else None,
        }


def held_out_extrapolation(
    trials: pd.DataFrame,
    y: str = "test_loss",
    threshold_col: str = "train_flops",
    threshold: float | None = None,
    law: str = "joint",
    size_col: str = "n_params",
    data_col: str = "n_samples",
    quantile: float = DEFAULT_QUANTILE,
    n_boot: int = 200,
    label: str = "",
) -> ExtrapolationResult:
    """Fit `law` ('joint': y(N, D); 'power_law': y against threshold_col) on trials with threshold_col <= threshold.

    The default threshold is the `quantile` of the distinct threshold_col values. Raises FitError when
    either side is empty or the fit on the small side fails.
    """
    label = label or f"{y} by {threshold_col}"
    if law not in ("joint", "power_law"):
        raise FitError(f"{label}: law must be 'joint' or 'power_law', got {law!r}")
    needed = [threshold_col, y] + ([size_col, data_col] if law == "joint" else [])
    missing = [c for c in needed if c not in trials]
    if missing:
        raise FitError(f"{label}: columns {missing} missing")
    rows = trials[np.isfinite(trials[y].astype(float))]
    levels = np.unique(rows[threshold_col].astype(float))
    if threshold is None:
        threshold = float(np.quantile(levels, quantile)) if len(levels) else float("nan")
    small, large = rows[rows[threshold_col] <= threshold], rows[rows[threshold_col] > threshold]
    if small.empty or large.empty:
        raise FitError(f"{label}: the threshold {threshold_col}={threshold:.4g} leaves no trials on one side")
    if law == "joint":
        fit = fit_joint_law(
            small[size_col], small[data_col], small[y], n_boot=n_boot, y_name=y, label=label, goodness=False,
            n_jobs=bootstrap_jobs(len(small), n_boot),
        )  # fmt: skip
        predicted = fit.predict(large[size_col].to_numpy(float), large[data_col].to_numpy(float))
    else:
        fit = fit_power_law(small[threshold_col], small[y], n_boot=n_boot, x_name=threshold_col, y_name=y, label=label)
        predicted = fit.predict(large[threshold_col].to_numpy(float))
    observed = large[y].to_numpy(float)
    columns = list(dict.fromkeys([threshold_col, size_col, data_col]))
    held_out = large[[c for c in columns if c in large]].reset_index(drop=True).copy()
    held_out["y"], held_out["predicted"] = observed, predicted
    held_out["rel_error"] = (predicted - observed) / observed
    with np.errstate(all="ignore"):
        rmse_log = float(np.sqrt(np.mean((np.log(predicted) - np.log(observed)) ** 2)))
    errors = {
        "mean_abs_rel_error": float(np.mean(np.abs(held_out["rel_error"]))),
        "max_abs_rel_error": float(np.max(np.abs(held_out["rel_error"]))),
        "rmse_log": rmse_log,
        "n_fit": int(len(small)),
        "n_held_out": int(len(large)),
    }
    return ExtrapolationResult(fit=fit, threshold_col=threshold_col, threshold=float(threshold), held_out=held_out, errors=errors, label=label)
