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

import pandas as pd

from orchestrator.fit.allocation import ComputeOptimalFit
from orchestrator.fit.double_descent import DoubleDescentResult, detect_double_descent, double_descent_curves
from orchestrator.fit.envelope import Envelope, best_per_cell
from orchestrator.fit.extrapolation import ExtrapolationResult, held_out_extrapolation
from orchestrator.fit.goodness import GoodnessOfFit
from orchestrator.fit.guards import Identification
from orchestrator.fit.isoflop import IsoFLOPFit, IsoFLOPProfile, fit_isoflop
from orchestrator.fit.joint import JointFit, fit_joint_law
from orchestrator.fit.power_law import FitError, PowerLawFit, fit_power_law
from orchestrator.fit.sweep_fits import SweepColumns, SweepFits, fit_trials, per_axis_power_laws

__all__ = [
    "ComputeOptimalFit",
    "DoubleDescentResult",
    "Envelope",
    "ExtrapolationResult",
    "FitError",
    "GoodnessOfFit",
    "Identification",
    "IsoFLOPFit",
    "IsoFLOPProfile",
    "JointFit",
    "PowerLawFit",
    "SweepColumns",
    "SweepFits",
    "best_per_cell",
    "detect_double_descent",
    "double_descent_curves",
    "fit_error_vs_size",
    "fit_isoflop",
    "fit_joint_law",
    "fit_power_law",
    "fit_trials",
    "held_out_extrapolation",
]


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
    if trials.empty or metric not in trials:
        return [], [f"no finished trials with metric {metric!r}"]
    return per_axis_power_laws(trials, metric, size_col, group_col, n_boot)
