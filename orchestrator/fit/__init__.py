"""Scaling-law and double-descent fits over a sweep's results. Fits return frozen result objects
(`.params`, `.ci`, `.predict()`, `.summary()`, `.to_dict()`); they never plot.

| module | fits |
|---|---|
| power_law | L(x) = E + A x^-alpha against one axis (N, D or C) |
| joint | L(N, D) = E + A/N^alpha + B/D^beta, Hoffmann et al. 2022 approach 3, and its compute-optimal allocation |
| isoflop | IsoFLOP parabolas per compute budget (approach 2) and N_opt, D_opt power laws in C |
| extrapolation | fit below a compute (or N) threshold, error of the prediction above it |
| double_descent | interpolation threshold, peak, verdict and seed-level test of test error vs N, D or epochs |
| envelope | the best hyperparameter setting per size, before fitting |
| guards | identifiability checks: a fit the data cannot carry says "not identified: <reason>" |
| goodness | residual, leave-one-out and leave-largest-out errors of every law |
| sweep_fits | every applicable fit of a results frame, computed once: what `fit` prints and `report` draws |
| tables | the concise text of a sweep's fits |
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from orchestrator.fit.common import FitError

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.fit.power_law import PowerLawFit

# Each name's module, imported on first use: scipy loads only when something is fitted.
_WHERE = {
    "ComputeOptimalFit": "allocation",
    "DoubleDescentResult": "double_descent",
    "detect_double_descent": "double_descent",
    "double_descent_curves": "double_descent",
    "Envelope": "envelope",
    "best_per_cell": "envelope",
    "ExtrapolationResult": "extrapolation",
    "held_out_extrapolation": "extrapolation",
    "GoodnessOfFit": "goodness",
    "Identification": "guards",
    "IsoFLOPFit": "isoflop",
    "IsoFLOPProfile": "isoflop",
    "fit_isoflop": "isoflop",
    "JointFit": "joint",
    "fit_joint_law": "joint",
    "PowerLawFit": "power_law",
    "fit_power_law": "power_law",
    "SweepColumns": "sweep_fits",
    "SweepFits": "sweep_fits",
    "fit_trials": "sweep_fits",
    "per_axis_power_laws": "sweep_fits",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"orchestrator.fit.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'orchestrator.fit' has no attribute {name!r}")


__all__ = ["FitError", "fit_error_vs_size", *_WHERE]


def fit_error_vs_size(
    trials: pd.DataFrame,
    metric: str = "test_error",
    size_col: str = "n_params",
    group_col: str = "n_samples",
    n_boot: int = 200,
) -> tuple[list[PowerLawFit], list[str]]:
    """One power law of `metric` against model size per data size; seeds are separate points.

    Returns the fits and one message per group that could not be fitted (and why).
    """
    from orchestrator.fit.sweep_fits import per_axis_power_laws

    if trials.empty or metric not in trials:
        return [], [f"no finished trials with metric {metric!r}"]
    return per_axis_power_laws(trials, metric, size_col, group_col, n_boot)
