"""What the plots draw besides the data: fitted lines with bands, evaluated from fit results.

A `Curve` is the one shape every fitted line takes on its way to a plot, so any fit (a per-axis power
law, an IsoFLOP parabola, a compute-optimal law) is drawn by the same code: evaluate it on a grid,
hand over y and, where the fit kept its bootstrap, the band it computes (`predict_ci`). Nothing here
fits, detects or decides: thresholds, peaks and verdicts come from orchestrator.fit's results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


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


def exponent_label(fit, name: str = "alpha", symbol: str = "α") -> str:
    """'fit: α = 0.34 [0.29, 0.41]' from a fit's params and CI."""
    value = fit.params[name]
    lo, hi = fit.ci.get(name, (np.nan, np.nan))
    return f"fit: {symbol} = {value:.2f} [{lo:.2f}, {hi:.2f}]"


def curve_from_fit(fit, x=None, n: int = 120, label: str | None = None) -> Curve:
    """A fitted law of one variable as a Curve over its data's x range (log spaced), with the band
    of its bootstrap (`fit.predict_ci`) where it kept one.

    The label defaults to the fitted exponent with its CI where the fit has an 'alpha'.
    """
    if x is None:
        x = log_grid(np.min(fit.x), np.max(fit.x), n)
    x = np.asarray(x, dtype=float)
    band = fit.predict_ci(x) if hasattr(fit, "predict_ci") else None
    lo, hi = band if band is not None else (None, None)
    if label is None:
        label = exponent_label(fit) if "alpha" in fit.params else getattr(fit, "label", "")
    return Curve(x, np.asarray(fit.predict(x), dtype=float), lo, hi, label)


def allocation_curves(allocation, flops: np.ndarray, prefix: str = "") -> tuple[Curve, Curve]:
    """N_opt(C) and D_opt(C) of a ComputeOptimalFit as Curves over `flops` (FLOPs), with bootstrap
    bands; labelled 'N_opt ∝ C^a' (after `prefix`, e.g. the approach)."""
    flops = np.asarray(flops, dtype=float)
    n_opt, d_opt = allocation.predict(flops)
    bands = allocation.predict_ci(flops)
    (n_lo, n_hi), (d_lo, d_hi) = bands if bands is not None else ((None, None), (None, None))
    a, b = allocation.params["a"], allocation.params["b"]
    return (
        Curve(flops, np.asarray(n_opt, float), n_lo, n_hi, f"{prefix}N_opt ∝ C^{a:.2f}"),
        Curve(flops, np.asarray(d_opt, float), d_lo, d_hi, f"{prefix}D_opt ∝ C^{b:.2f}"),
    )
