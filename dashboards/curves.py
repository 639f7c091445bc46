"""What the plots draw besides the data: fitted lines with bands, and plain descriptions of the data.

A `Curve` is the one shape every fitted line takes on its way to a plot, so any fit (a per-axis power
law, a joint L(N, D), an IsoFLOP parabola, a compute-optimal law) is drawn by the same code: evaluate
it on a grid, hand over y and, where the fit has a bootstrap, the band. The descriptions here
(`interpolation_threshold`, `error_peak`, `budget_of`) only describe the data as recorded; they fit
nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Curve:
    """A line to draw: y(x) with an optional band [lo, hi] (e.g. a bootstrap CI) and a legend label."""

    x: np.ndarray
    y: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    label: str = ""

    @property
    def has_band(self) -> bool:
        return self.lo is not None and self.hi is not None


def log_grid(lo: float, hi: float, n: int = 120) -> np.ndarray:
    """n points evenly spaced in log between lo and hi (both > 0)."""
    return np.geomspace(float(lo), float(hi), n)


def curve_from_callable(fn: Callable, x: np.ndarray, band: Callable | None = None, label: str = "") -> Curve:
    """Evaluate a fitted law `fn(x)` (and `band(x) -> (lo, hi)` if given) on x."""
    x = np.asarray(x, dtype=float)
    lo, hi = band(x) if band is not None else (None, None)
    return Curve(x, np.asarray(fn(x), dtype=float), lo, hi, label)


def prediction_band(fit, x, level: float | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Pointwise percentile band of fit.predict(x) over the fit's bootstrap parameter draws.

    Works for any fit result with `params` (a dict), `predict(x)` and `param_samples` (one row per
    bootstrap resample, columns in `params` order); None when the fit kept no draws.
    """
    samples = getattr(fit, "param_samples", None)
    if samples is None or len(samples) < 2:
        return None
    level = getattr(fit, "ci_level", 0.95) if level is None else level
    names = list(fit.params)
    x = np.asarray(x, dtype=float)
    draws = np.array([dataclasses.replace(fit, params=dict(zip(names, map(float, row)))).predict(x) for row in samples])
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(draws, [tail, 100 - tail], axis=0)
    return lo, hi


def exponent_label(fit, name: str = "alpha", symbol: str = "α") -> str:
    """'fit: α = 0.34 [0.29, 0.41]' from a fit's params and CI."""
    value = fit.params[name]
    lo, hi = fit.ci.get(name, (np.nan, np.nan))
    return f"fit: {symbol} = {value:.2f} [{lo:.2f}, {hi:.2f}]"


def curve_from_fit(fit, x=None, n: int = 120, label: str | None = None) -> Curve:
    """A fitted law as a Curve over its data's x range (log spaced), with its bootstrap band if kept.

    The label defaults to the fitted exponent with its CI where the fit has an 'alpha'.
    """
    if x is None:
        x = log_grid(np.min(fit.x), np.max(fit.x), n)
    x = np.asarray(x, dtype=float)
    band = prediction_band(fit, x)
    lo, hi = band if band is not None else (None, None)
    if label is None:
        label = exponent_label(fit) if "alpha" in fit.params else getattr(fit, "label", "")
    return Curve(x, np.asarray(fit.predict(x), dtype=float), lo, hi, label)


def curves_by_group(fits, group_col: str) -> dict[float, Curve]:
    """Curves keyed by group value from fits labelled '<group_col>=<value>' (as fit_error_vs_size labels them)."""
    prefix = f"{group_col}="
    out = {}
    for fit in fits:
        if fit.label.startswith(prefix):
            out[float(fit.label[len(prefix) :])] = curve_from_fit(fit)
    return out


# -- plain descriptions of the data ------------------------------------------------------------


def interpolation_threshold(df: pd.DataFrame, size_col: str, train_col: str = "train_error", tol: float = 0.01) -> float | None:
    """The smallest model size whose seed-mean train error is <= tol: where the data is first fitted.

    This is the description the plots mark (the interpolation threshold of double descent, read
    off the recorded train error); None when no size gets there.
    """
    if df.empty or train_col not in df:
        return None
    mean = df.groupby(size_col)[train_col].mean().sort_index()
    fitted = mean[mean <= tol]
    return float(fitted.index[0]) if len(fitted) else None


def error_peak(df: pd.DataFrame, size_col: str, metric: str = "test_error") -> tuple[float, float] | None:
    """(model size, seed-mean metric) at the highest local maximum of the seed-mean metric over size.

    A local maximum is a size whose mean is above both neighbours'; this is the test-error peak the
    plots mark. None when the curve has no interior maximum (it only falls or only rises).
    """
    if df.empty or metric not in df:
        return None
    mean = df.groupby(size_col)[metric].mean().sort_index().dropna()
    values = mean.to_numpy()
    interior = [i for i in range(1, len(values) - 1) if values[i] > values[i - 1] and values[i] > values[i + 1]]
    if not interior:
        return None
    best = max(interior, key=lambda i: values[i])
    return float(mean.index[best]), float(values[best])


@dataclass(frozen=True)
class Markers:
    """What to mark on one test-error-vs-size curve: the interpolation threshold and the peak (x, y)."""

    threshold: float | None = None
    peak: tuple[float, float] | None = None


def markers_by_group(
    df: pd.DataFrame, size_col: str, group_col: str, metric: str = "test_error", train_col: str = "train_error", tol: float = 0.01
) -> dict[float, Markers]:
    """Threshold and peak per group (e.g. per data size), from the data alone."""
    return {
        value: Markers(interpolation_threshold(rows, size_col, train_col, tol), error_peak(rows, size_col, metric))
        for value, rows in df.groupby(group_col, sort=True)
    }


def budget_of(train_flops, budgets) -> np.ndarray:
    """The compute budget (FLOPs) each trial belongs to: the nearest budget in log space."""
    flops = np.log(np.asarray(train_flops, dtype=float))[:, None]
    levels = np.asarray(sorted(budgets), dtype=float)
    return levels[np.argmin(np.abs(flops - np.log(levels)[None, :]), axis=1)]


def empirical_optima(df: pd.DataFrame, budget_col: str, size_col: str, data_col: str, metric: str) -> pd.DataFrame:
    """Per budget, the recorded trial (seed mean) with the lowest metric: columns budget, size, data, metric.

    The observed minimum, not a fitted one; a fitted IsoFLOP minimum can be drawn instead.
    """
    means = df.groupby([budget_col, size_col], as_index=False).agg({metric: "mean", data_col: "mean"})
    best = means.loc[means.groupby(budget_col)[metric].idxmin()]
    return best[[budget_col, size_col, data_col, metric]].sort_values(budget_col).reset_index(drop=True)
