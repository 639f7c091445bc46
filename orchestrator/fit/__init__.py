"""Scaling-law fits over a sweep's results. Fits return result objects; they never plot."""

from __future__ import annotations

import pandas as pd

from orchestrator.fit.power_law import FitError, PowerLawFit, fit_power_law

__all__ = ["FitError", "PowerLawFit", "fit_power_law", "fit_error_vs_size"]


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
    fits, skipped = [], []
    if trials.empty or metric not in trials:
        return fits, [f"no finished trials with metric {metric!r}"]
    for group, rows in trials.groupby(group_col, sort=True):
        label = f"{group_col}={group}"
        try:
            fits.append(
                fit_power_law(rows[size_col], rows[metric], n_boot=n_boot, x_name=size_col, y_name=metric, label=label)
            )
        except FitError as err:
            skipped.append(str(err))
    return fits, skipped
