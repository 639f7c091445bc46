"""Matplotlib figures for papers, from DataFrames, fit results and plain values. They never query
MLflow or Ray, and never analyse: marks and fitted lines come from orchestrator.fit's results.

Every function takes its data, column names, `ax=None` and `labels` (a dashboards.labels.Labels with
the workload's units) and returns the figure. Figures are `matplotlib.figure.Figure`s made without
pyplot, so drawing a report neither picks nor changes a backend (a notebook keeps its own).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from dashboards.curves import Curve
from dashboards.labels import DEFAULT_LABELS, Labels, si

FIGSIZE = (7.5, 4.8)


def mean_grid(df: pd.DataFrame, x: str, y: str, value: str) -> pd.DataFrame:
    """Mean of `value` over seeds on the (y rows) x (x columns) grid."""
    return df.pivot_table(index=y, columns=x, values=value, aggfunc="mean").sort_index().sort_index(axis=1)


def _axes(ax, figsize=FIGSIZE):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11, loc="left", fontweight="bold")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)


def _si_axis(axis) -> None:
    axis.set_major_formatter(FuncFormatter(lambda v, _: si(v)))

    def minor(value: float, _) -> str:
        # On a log axis spanning few decades, label 2x and 5x ticks in the same style; otherwise none.
        lo, hi = sorted(axis.get_view_interval())
        if lo <= 0 or hi / lo > 10**2.5 or value <= 0:
            return ""
        lead = round(value / 10 ** np.floor(np.log10(value)), 6)
        return si(value) if lead in (2.0, 5.0) else ""

    axis.set_minor_formatter(FuncFormatter(minor))


def _colors(n: int, cmap: str = "viridis") -> np.ndarray:
    # Ordered groups (data sizes, budgets) get ordered colours; the pale end is left out for contrast.
    return matplotlib.colormaps[cmap](np.linspace(0.0, 0.8, max(n, 1)))


def cell_edges(values, log: bool) -> np.ndarray:
    """Cell boundaries around sorted grid values: midpoints between neighbours (in log when log)."""
    t = np.log(np.asarray(values, dtype=float)) if log else np.asarray(values, dtype=float)
    if len(t) == 1:
        edges = np.array([t[0] - 0.5, t[0] + 0.5])
    else:
        mid = (t[1:] + t[:-1]) / 2
        edges = np.concatenate([[2 * t[0] - mid[0]], mid, [2 * t[-1] - mid[-1]]])
    return np.exp(edges) if log else edges


def tick_values(values, log: bool, max_ticks: int = 9) -> np.ndarray:
    """The grid values to label: all of them, or about max_ticks spread evenly (in log when log)."""
    values = np.asarray(values, dtype=float)
    if len(values) <= max_ticks:
        return values
    t = np.log(values) if log else values
    targets = np.linspace(t[0], t[-1], max_ticks)
    return values[np.unique([np.argmin(np.abs(t - target)) for target in targets])]


def heatmap(
    df: pd.DataFrame,
    x: str,
    y: str,
    value: str,
    title: str = "",
    ax=None,
    log_x: bool = True,
    log_y: bool = True,
    xlabel: str | None = None,
    ylabel: str | None = None,
    annotate: bool | None = None,
    colorbar: bool = True,
    labels: Labels = DEFAULT_LABELS,
    max_ticks: int = 9,
):
    """Seed-mean `value` over the x by y grid, cells placed at their real (log) positions.

    Cells are annotated with their value when the grid is small enough to read (<= 100 cells); about
    max_ticks grid values are labelled on each axis.
    """
    grid = mean_grid(df, x, y, value)
    fig, ax = _axes(ax)
    xs, ys, z = grid.columns.to_numpy(float), grid.index.to_numpy(float), grid.to_numpy(float)
    finite = z[np.isfinite(z)]
    norm = Normalize(*(np.nanmin(finite), np.nanmax(finite)) if finite.size else (0, 1))
    mesh = ax.pcolormesh(cell_edges(xs, log_x), cell_edges(ys, log_y), np.ma.masked_invalid(z), cmap="viridis", norm=norm)
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    for axis, values, is_log in ((ax.xaxis, xs, log_x), (ax.yaxis, ys, log_y)):
        ticks = tick_values(values, is_log, max_ticks)
        axis.set_minor_locator(NullLocator())
        axis.set_minor_formatter(NullFormatter())
        axis.set_ticks(ticks, [si(v) for v in ticks])
    if annotate if annotate is not None else z.size <= 100:
        for (i, j), cell in np.ndenumerate(z):
            if np.isfinite(cell):
                dark = norm(cell) < 0.55  # light text on the dark end of viridis
                ax.text(xs[j], ys[i], f"{cell:.3f}", ha="center", va="center", fontsize=7, color="w" if dark else "k")
    ax.set_title(title or labels(value), fontsize=11, loc="left", fontweight="bold")
    ax.set_xlabel(xlabel or labels(x))
    ax.set_ylabel(ylabel or labels(y))
    if colorbar:
        fig.colorbar(mesh, ax=ax, label=labels(value), pad=0.02)
    return fig


def epoch_heatmaps(
    history: pd.DataFrame,
    size_col: str,
    group_col: str,
    value: str = "test_error",
    title: str = "",
    epoch_col: str = "epoch",
    xlabel: str | None = None,
    group_label: str | None = None,
    labels: Labels = DEFAULT_LABELS,
):
    """Epoch-wise double descent: `value` over model size x epoch, one panel per group (e.g. data size).

    All panels share one colour scale so they can be compared (see epoch_colour_range).
    """
    every = group_values(history, group_col)
    groups = panel_groups(every)
    fig = Figure(figsize=(4.2 * len(groups) + 1.2, 4.6), layout="constrained")
    axes = fig.subplots(1, len(groups), sharey=True, squeeze=False)
    vmin, vmax, clipped = epoch_colour_range(history[value])
    mesh = None
    for ax, group in zip(axes[0], groups):
        rows = history[history[group_col] == group]
        heatmap(rows, size_col, epoch_col, value, ax=ax, colorbar=False, annotate=False, xlabel=xlabel, labels=labels, max_ticks=5)
        mesh = ax.collections[0]
        mesh.set_norm(Normalize(vmin, vmax))
        ax.set_title(panel_title(group, group_label or group_col), fontsize=10, loc="left", fontweight="normal")
        if ax is not axes[0][0]:
            ax.set_ylabel("")
    fig.colorbar(mesh, ax=axes[0].tolist(), label=labels(value), pad=0.01, extend="max" if clipped else "neither")
    shown = "" if len(groups) == len(every) else f" ({len(groups)} of {len(every)} {group_label or group_col} values)"
    fig.suptitle((title or f"{labels(value)} over model size and epoch") + shown, fontsize=11, x=0.01, ha="left", fontweight="bold")
    return fig


MAX_PANELS = 6
# The first epochs' errors lie far above the rest: a colour scale up to them would paint the later
# epochs, where an epoch-wise peak grows, in one colour. The scale stops at this quantile instead.
EPOCH_COLOUR_QUANTILE = 0.95


def epoch_colour_range(values) -> tuple[float, float, bool]:
    """(low, high, clipped): an epoch heatmap's colour scale, from the lowest value to the
    EPOCH_COLOUR_QUANTILE quantile; clipped says that values above it are drawn at its colour."""
    values = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(float)
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 1.0, False
    low, high = float(values.min()), float(np.quantile(values, EPOCH_COLOUR_QUANTILE))
    if high <= low:
        high = float(values.max())
    return low, high, bool(values.max() > high)


def panel_title(group, name: str) -> str:
    """'D = 1k' for a number, the group itself for a name ('D = 1k, label_noise = 0.2')."""
    return group if isinstance(group, str) else f"{name} = {si(group)}"


def panel_groups(groups) -> list:
    """The groups an epoch heatmap gives a panel: all of them up to MAX_PANELS, else MAX_PANELS spread
    evenly from the first to the last (a row of 40 panels shows nothing and makes a huge picture).
    Numbers are sorted; names keep their order."""
    groups = list(groups) if any(isinstance(g, str) for g in groups) else sorted(groups)
    if len(groups) <= MAX_PANELS:
        return groups
    return [groups[i] for i in np.unique(np.linspace(0, len(groups) - 1, MAX_PANELS).round().astype(int))]


def group_values(df: pd.DataFrame, group: str | None) -> list:
    """A group column's values in order: numbers sorted, names (e.g. 'D = 1k') as they first appear."""
    if not group:
        return [None]
    if pd.api.types.is_numeric_dtype(df[group]):
        return sorted(df[group].unique())
    return list(dict.fromkeys(df[group]))


def _seed_stats(rows: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    return rows.groupby(x)[y].agg(["mean", "min", "max"]).sort_index()


def double_descent_curves(
    results: Sequence,
    title: str = "",
    ax=None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    labels: Labels = DEFAULT_LABELS,
):
    """Each double-descent result's curve against its x (log x): seed means, the seeds' min-max band,
    the train error dotted, and the landmarks the result found: its interpolation threshold (dashed
    vertical line) and its peak (a star, filled when the verdict is double descent, hollow when not).

    results: orchestrator.fit DoubleDescentResults of one x (e.g. SweepFits.double_descent).
    """
    fig, ax = _axes(ax)
    if not results:
        return fig
    x_name, y_name = results[0].x_name, results[0].y_name
    for color, result in zip(_colors(len(results)), results):
        curve = result.curve
        name = labels.group(result.group) + (": double descent" if result.double_descent else "")
        ax.plot(curve["x"], curve["mean"], "o-", color=color, lw=2, ms=5, label=name)
        ax.fill_between(curve["x"], curve["min"], curve["max"], color=color, alpha=0.15, lw=0)
        if np.isfinite(curve["train_mean"]).any():
            ax.plot(curve["x"], curve["train_mean"], ":", color=color, lw=1.5)
        if result.threshold_x is not None:
            ax.axvline(result.threshold_x, color=color, ls="--", lw=1.2, alpha=0.8)
        if result.peak_x is not None:
            face = color if result.double_descent else "none"
            ax.plot(result.peak_x, result.peak_height, marker="*", ms=16, color=color, mfc=face, mec="k", mew=0.8, ls="none", zorder=5)
    ax.set_xscale("log")
    _si_axis(ax.xaxis)
    _style(ax, title or f"{labels(y_name)} vs {labels(x_name)}", xlabel or labels(x_name), ylabel or labels(y_name))
    handles, _ = ax.get_legend_handles_labels()
    extra = []
    if any(np.isfinite(r.curve["train_mean"]).any() for r in results):
        extra.append(Line2D([], [], color="0.3", ls=":", label="train error"))
    if any(r.threshold_x is not None for r in results):
        extra.append(Line2D([], [], color="0.3", ls="--", label="interpolation threshold"))
    if any(r.peak_x is not None for r in results):
        extra.append(Line2D([], [], color="0.5", marker="*", ms=12, mec="k", ls="none", label="peak (hollow: not double descent)"))
    ax.legend(handles=handles + extra, fontsize=8, frameon=False, loc="best")
    return fig


def scaling_curves(
    df: pd.DataFrame,
    x: str,
    y: str,
    group: str | None = None,
    curves: Mapping | None = None,
    title: str = "",
    ax=None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    group_label: str | None = None,
    labels: Labels = DEFAULT_LABELS,
):
    """`y` against `x` on log-log axes: each seed as a faint dot, seed means, and per group the
    fitted law (`curves[group value]`) drawn dashed with its band shaded. Groups without a curve
    (their law was not identified) show their data alone."""
    fig, ax = _axes(ax)
    curves = curves or {}
    values = group_values(df, group)
    for color, value in zip(_colors(len(values)), values):
        rows = df if value is None else df[df[group] == value]
        stats = _seed_stats(rows, x, y)
        name = "" if value is None else (value if isinstance(value, str) else f"{group_label or group} = {si(value)}")
        ax.scatter(rows[x], rows[y], s=10, color=color, alpha=0.35, lw=0)
        ax.plot(stats.index, stats["mean"], "o", color=color, ms=6, label=name or "seed mean")
        curve = curves.get(value)
        if curve is not None:
            if curve.has_band:
                ax.fill_between(curve.x, curve.lo, curve.hi, color=color, alpha=0.18, lw=0)
            ax.plot(curve.x, curve.y, "--", color=color, lw=1.8, label=curve.label or None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _si_axis(ax.xaxis)
    # Frame the data and the fitted lines; a wide bootstrap band at the edge of the range must not
    # squash the picture.
    shown = np.concatenate([df[y].to_numpy(float), *(c.y for c in curves.values())])
    shown = shown[np.isfinite(shown) & (shown > 0)]
    if shown.size:
        lo, hi = shown.min() / 1.15, shown.max() * 1.15
        ax.set_ylim(lo, hi)
        ax.yaxis.set_major_locator(LogLocator(subs="all" if hi / lo < 10 else (1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    _style(ax, title or f"{labels(y)} vs {labels(x)}", xlabel or labels(x), ylabel or labels(y))
    handles, _ = ax.get_legend_handles_labels()
    if any(c.has_band for c in curves.values()):
        handles.append(Line2D([], [], color="0.3", ls="--", label="fit, shaded: bootstrap CI"))
    ax.legend(handles=handles, fontsize=8, frameon=False, loc="best")
    return fig


def isoflop_profiles(
    df: pd.DataFrame,
    size_col: str,
    metric: str,
    budget_col: str,
    curves: Mapping[float, Curve] | None = None,
    optima: pd.DataFrame | None = None,
    title: str = "",
    ax=None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    labels: Labels = DEFAULT_LABELS,
):
    """IsoFLOP profiles: `metric` against model size at each fixed compute budget (log x), the fitted
    profile per budget (`curves[budget]`, e.g. a parabola in log N) and each budget's optimum
    (`optima`: columns budget_col, size_col, metric) joined by a line: the compute-optimal frontier."""
    fig, ax = _axes(ax)
    curves = curves or {}
    budgets = sorted(df[budget_col].unique())
    colors = _colors(len(budgets), "plasma")
    for color, budget in zip(colors, budgets):
        rows = df[df[budget_col] == budget]
        stats = _seed_stats(rows, size_col, metric)
        ax.plot(stats.index, stats["mean"], "o", color=color, ms=6, label=f"C = {budget:.2g} FLOPs".replace("e+", "e"))
        curve = curves.get(budget)
        if curve is not None:
            if curve.has_band:
                ax.fill_between(curve.x, curve.lo, curve.hi, color=color, alpha=0.15, lw=0)
            ax.plot(curve.x, curve.y, "-", color=color, lw=1.6, alpha=0.9)
    if optima is not None and not optima.empty:
        best = optima.sort_values(budget_col)
        ax.plot(best[size_col], best[metric], "-", color="0.4", lw=1, alpha=0.7, zorder=4)
        ax.plot(best[size_col], best[metric], "*", color="gold", mec="k", mew=0.8, ms=15, ls="none", zorder=5, label="optimum per budget")
    ax.set_xscale("log")
    _si_axis(ax.xaxis)
    _style(ax, title or f"IsoFLOP profiles: {labels(metric)}", xlabel or labels(size_col), ylabel or labels(metric))
    ax.legend(fontsize=8, frameon=False, loc="best")
    return fig


def compute_frontier(
    optima: pd.DataFrame,
    budget_col: str,
    size_col: str,
    data_col: str,
    size_curves: Sequence[Curve] = (),
    data_curves: Sequence[Curve] = (),
    title: str = "",
    axes: Sequence | None = None,
    data_label: str | None = None,
    labels: Labels = DEFAULT_LABELS,
):
    """The compute-optimal model size N_opt(C) and data size D_opt(C), log-log, side by side: each
    budget's optimum, and each fitted law (a Curve, band shaded; one per approach) given."""
    if axes is None:
        fig = Figure(figsize=(11, 4.5), layout="constrained")
        axes = fig.subplots(1, 2)
    fig = axes[0].figure
    panels = (
        (axes[0], size_col, size_curves, "N_opt", labels(size_col), "#3b4cc0"),
        (axes[1], data_col, data_curves, "D_opt", data_label or labels(data_col), "#b40426"),
    )
    for ax, col, curves, name, ylabel, color in panels:
        ax.plot(optima[budget_col], optima[col], "o", color=color, ms=7, label=f"{name} per budget")
        for curve, ls in zip(curves, ("--", ":")):
            if curve.has_band:
                ax.fill_between(curve.x, curve.lo, curve.hi, color=color, alpha=0.15, lw=0)
            ax.plot(curve.x, curve.y, ls, color=color, lw=1.8, label=curve.label or f"{name} fit")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _si_axis(ax.xaxis)
        _si_axis(ax.yaxis)
        _style(ax, f"{name} vs compute", labels(budget_col), f"{name}: {ylabel}")
        ax.legend(fontsize=8, frameon=False, loc="best")
    fig.suptitle(title or "compute-optimal frontier", fontsize=11, x=0.01, ha="left", fontweight="bold")
    return fig
