"""Matplotlib figures from DataFrames and fit results. They take data, never query MLflow or Ray."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on machines with no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from orchestrator.fit import PowerLawFit

AXIS_LABELS = {
    "n_params": "model size N (parameters)",
    "n_samples": "data size D (training samples)",
    "train_flops": "training compute C (FLOPs)",
    "width": "hidden width (units)",
    "n_train": "training samples",
    "test_error": "test error (fraction misclassified)",
    "train_error": "train error (fraction misclassified)",
    "test_loss": "test loss (nats)",
    "train_loss": "train loss (nats)",
    "epoch": "epoch",
}


def label(column: str) -> str:
    return AXIS_LABELS.get(column, column)


def mean_grid(df: pd.DataFrame, x: str, y: str, value: str) -> pd.DataFrame:
    """Mean of `value` over seeds on the (y rows) x (x columns) grid."""
    return df.pivot_table(index=y, columns=x, values=value, aggfunc="mean").sort_index().sort_index(axis=1)


def heatmap(df: pd.DataFrame, x: str, y: str, value: str, title: str = "", ax=None):
    """Mean `value` over a grid of x by y, one labelled cell per grid point."""
    grid = mean_grid(df, x, y, value)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 4.5))
    image = ax.imshow(grid.values, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(grid.columns)), [f"{v:g}" for v in grid.columns], rotation=45)
    ax.set_yticks(range(len(grid.index)), [f"{v:g}" for v in grid.index])
    for (i, j), cell in np.ndenumerate(grid.values):
        if np.isfinite(cell):
            ax.text(j, i, f"{cell:.3f}", ha="center", va="center", fontsize=7, color="w" if cell > np.nanmean(grid.values) else "k")
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    ax.set_title(title or f"{label(value)}")
    fig.colorbar(image, ax=ax, label=label(value))
    fig.tight_layout()
    return fig


def curves(
    df: pd.DataFrame, x: str, y: str, group: str, fits: list[PowerLawFit] | None = None, title: str = "", ax=None
):
    """`y` against `x` (log x) per `group`: seed means with min-max bands, and fitted laws dashed."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 4.5))
    fits_by_label = {f.label: f for f in fits or []}
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(df[group].nunique(), 1)))
    for color, (value, rows) in zip(colors, df.groupby(group, sort=True)):
        stats = rows.groupby(x)[y].agg(["mean", "min", "max"]).sort_index()
        ax.plot(stats.index, stats["mean"], "o-", color=color, label=f"{group}={value:g}")
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.15)
        fit = fits_by_label.get(f"{group}={value}")
        if fit is not None:
            grid = np.geomspace(fit.x.min(), fit.x.max(), 100)
            ax.plot(grid, fit.predict(grid), "--", color=color, alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    ax.set_title(title or f"{label(y)} vs {label(x)}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig
