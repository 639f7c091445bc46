"""Plotly figures for the HTML report, the same pictures as dashboards.plots with hover and zoom.

Like the matplotlib versions they take DataFrames, column names, fit results and `Curve`s, never
query MLflow or Ray, and never analyse. `write_html` inlines plotly.js once, so the page opens on a machine with no
network.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from dashboards.curves import Curve
from dashboards.labels import DEFAULT_LABELS, Labels, si
from dashboards.plots import epoch_colour_range, group_values, mean_grid, panel_groups, panel_title

TEMPLATE = "plotly_white"


def _colors(n: int, scale: str = "Viridis") -> list[str]:
    return sample_colorscale(scale, list(np.linspace(0.0, 0.8, max(n, 1))))


def _rgba(color: str, alpha: float) -> str:
    """'rgb(r, g, b)' (as sample_colorscale gives) -> 'rgba(r, g, b, alpha)' for shaded bands."""
    return color.replace("rgb(", "rgba(").replace(")", f", {alpha})")


def _layout(fig: go.Figure, title: str, xlabel: str, ylabel: str, log_x: bool = False, log_y: bool = False) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title={"text": title, "x": 0.01}, legend={"font": {"size": 11}}, margin={"t": 60})
    fig.update_xaxes(title_text=xlabel, type="log" if log_x else None)
    fig.update_yaxes(title_text=ylabel, type="log" if log_y else None)
    fig.for_each_xaxis(lambda axis: _tidy_log_axis(axis, SIZE_TICKS))
    fig.for_each_yaxis(lambda axis: _tidy_log_axis(axis, VALUE_TICKS))
    return fig


SIZE_TICKS = "~s"  # sizes and counts with SI prefixes: 500, 1k, 20M
VALUE_TICKS = ".2~g"  # errors and losses: 0.2, 0.5, 3


def _tidy_log_axis(axis, tickformat: str) -> None:
    """Log axes label every tick in full (plotly's default writes '5' for 0.5); size axes, which
    span decades, tick at 1, 2 and 5 of each."""
    if axis.type == "log":
        axis.update(tickformat=tickformat, dtick="D2" if tickformat == SIZE_TICKS else None)


def band_trace(curve: Curve, color: str, name: str, group: str | None = None, showlegend: bool = False) -> go.Scatter:
    """The band [lo, hi] of a curve as one closed, shaded polygon."""
    return go.Scatter(
        x=np.concatenate([curve.x, curve.x[::-1]]),
        y=np.concatenate([curve.hi, curve.lo[::-1]]),
        fill="toself",
        fillcolor=_rgba(color, 0.18),
        line={"width": 0},
        hoverinfo="skip",
        name=name,
        legendgroup=group,
        showlegend=showlegend,
    )


def _curve_traces(curve: Curve | None, color: str, group: str | None, dash: str = "dash") -> list[go.Scatter]:
    if curve is None:
        return []
    traces = [band_trace(curve, color, f"{curve.label} band", group)] if curve.has_band else []
    # An unlabelled curve (e.g. one IsoFLOP profile per budget) joins its group without a legend entry.
    traces.append(
        go.Scatter(
            x=curve.x, y=curve.y, mode="lines", line={"color": color, "dash": dash}, name=curve.label or f"{group} fit",
            legendgroup=group, showlegend=bool(curve.label),
        )
    )
    return traces


def heatmap_figure(
    df: pd.DataFrame, x: str, y: str, value: str, title: str, xlabel: str | None = None, ylabel: str | None = None, labels: Labels = DEFAULT_LABELS
) -> go.Figure:
    """Seed-mean `value` over the x by y grid; one Heatmap trace."""
    grid = mean_grid(df, x, y, value)
    fig = go.Figure(
        go.Heatmap(
            z=grid.values,
            x=[si(v) for v in grid.columns],
            y=[si(v) for v in grid.index],
            colorscale="Viridis",
            colorbar={"title": {"text": labels(value), "side": "right"}},
            texttemplate="%{z:.3f}" if grid.size <= 100 else None,
            hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{value}=%{{z:.4f}}<extra></extra>",
        )
    )
    _layout(fig, title, xlabel or labels(x), ylabel or labels(y))
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return fig


def epoch_heatmap_figure(
    history: pd.DataFrame,
    size_col: str,
    group_col: str,
    value: str,
    title: str,
    epoch_col: str = "epoch",
    xlabel: str | None = None,
    group_label: str | None = None,
    labels: Labels = DEFAULT_LABELS,
) -> go.Figure:
    """`value` over model size x epoch, one panel (one Heatmap trace) per group, one colour scale."""
    every = group_values(history, group_col)
    groups = panel_groups(every)
    fig = make_subplots(1, len(groups), shared_yaxes=True, horizontal_spacing=0.04, subplot_titles=[panel_title(g, group_label or group_col) for g in groups])
    if len(groups) < len(every):
        title += f" ({len(groups)} of {len(every)} {group_label or group_col} values)"
    for i, group in enumerate(groups, start=1):
        grid = mean_grid(history[history[group_col] == group], size_col, epoch_col, value)
        fig.add_trace(
            go.Heatmap(
                z=grid.values,
                x=[si(v) for v in grid.columns],
                y=grid.index.to_numpy(),
                coloraxis="coloraxis",
                hovertemplate=f"{size_col}=%{{x}}<br>{epoch_col}=%{{y}}<br>{value}=%{{z:.4f}}<extra></extra>",
            ),
            1,
            i,
        )
        fig.update_xaxes(title_text=xlabel or labels(size_col), type="category", row=1, col=i)
    low, high, _ = epoch_colour_range(history[value])
    colorbar = {"title": {"text": labels(value), "side": "right"}}
    fig.update_layout(coloraxis={"colorscale": "Viridis", "cmin": low, "cmax": high, "colorbar": colorbar})
    fig.update_layout(template=TEMPLATE, title={"text": title, "x": 0.01}, margin={"t": 80})
    fig.update_yaxes(title_text=labels(epoch_col), type="log", row=1, col=1)
    fig.update_yaxes(type="log")
    fig.for_each_yaxis(lambda axis: _tidy_log_axis(axis, SIZE_TICKS))
    return fig


def double_descent_figure(results: Sequence, title: str, xlabel: str | None = None, ylabel: str | None = None, labels: Labels = DEFAULT_LABELS) -> go.Figure:
    """Per double-descent result: its seed means with min-max error bars, its train error dotted, its
    interpolation threshold (a dashed vertical line) and its peak (a star; hollow when the verdict is
    no): up to 4 traces per curve, all from the result."""
    fig = go.Figure()
    if not results:
        return fig
    x_name, y_name = results[0].x_name, results[0].y_name
    top = max(float(r.curve["max"].max()) for r in results) * 1.05
    for color, result in zip(_colors(len(results)), results):
        curve = result.curve
        name = labels.group(result.group)
        fig.add_trace(
            go.Scatter(
                x=curve["x"],
                y=curve["mean"],
                mode="lines+markers",
                name=name + (": double descent" if result.double_descent else ""),
                legendgroup=name,
                line={"color": color, "width": 2.5},
                error_y={"type": "data", "symmetric": False, "array": curve["max"] - curve["mean"], "arrayminus": curve["mean"] - curve["min"]},
            )
        )
        if np.isfinite(curve["train_mean"]).any():
            fig.add_trace(
                go.Scatter(x=curve["x"], y=curve["train_mean"], mode="lines", line={"color": color, "dash": "dot"}, name=f"train error, {name}", legendgroup=name)
            )
        if result.threshold_x is not None:
            fig.add_trace(
                go.Scatter(
                    x=[result.threshold_x, result.threshold_x],
                    y=[0, top],
                    mode="lines",
                    line={"color": color, "dash": "dash", "width": 1.5},
                    name=f"interpolation threshold, {name}: {labels.short(x_name)} = {si(result.threshold_x)}",
                    legendgroup=name,
                )
            )
        if result.peak_x is not None:
            symbol = "star" if result.double_descent else "star-open"
            p = f", p = {result.p_value:.2g}" if result.p_value is not None else ""
            fig.add_trace(
                go.Scatter(
                    x=[result.peak_x],
                    y=[result.peak_height],
                    mode="markers",
                    marker={"symbol": symbol, "size": 18, "color": color, "line": {"color": "black", "width": 1}},
                    name=f"peak, {name} ({'double descent' if result.double_descent else 'not double descent'}{p})",
                    legendgroup=name,
                )
            )
    return _layout(fig, title, xlabel or labels(x_name), ylabel or labels(y_name), log_x=True)


def scaling_figure(
    df: pd.DataFrame,
    x: str,
    y: str,
    group: str | None,
    title: str,
    curves: Mapping[float, Curve] | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    group_label: str | None = None,
    labels: Labels = DEFAULT_LABELS,
) -> go.Figure:
    """Log-log `y` vs `x`: per group the trials (1 trace), the fitted law (1) and its band (1 if kept)."""
    fig = go.Figure()
    curves = curves or {}
    values = group_values(df, group)
    for color, value in zip(_colors(len(values)), values):
        rows = df if value is None else df[df[group] == value]
        name = "trials" if value is None else (value if isinstance(value, str) else f"{group_label or group} = {si(value)}")
        fig.add_trace(go.Scatter(x=rows[x], y=rows[y], mode="markers", marker={"color": color, "size": 8, "opacity": 0.8}, name=name, legendgroup=name))
        fig.add_traces(_curve_traces(curves.get(value), color, name))
    _layout(fig, title, xlabel or labels(x), ylabel or labels(y), log_x=True, log_y=True)
    # Frame the data and the fitted lines; a wide band at the edge of the range must not squash them.
    shown = np.concatenate([df[y].to_numpy(float), *(c.y for c in curves.values())])
    shown = shown[np.isfinite(shown) & (shown > 0)]
    if shown.size:
        fig.update_yaxes(range=[np.log10(shown.min() / 1.15), np.log10(shown.max() * 1.15)])
    return fig


def isoflop_figure(
    df: pd.DataFrame,
    size_col: str,
    metric: str,
    budget_col: str,
    title: str,
    curves: Mapping[float, Curve] | None = None,
    optima: pd.DataFrame | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    labels: Labels = DEFAULT_LABELS,
) -> go.Figure:
    """Per budget the trials (1 trace) and fitted profile (+ band) where given; the optima (1 trace)."""
    fig = go.Figure()
    curves = curves or {}
    budgets = sorted(df[budget_col].unique())
    for color, budget in zip(_colors(len(budgets), "Plasma"), budgets):
        rows = df[df[budget_col] == budget]
        name = f"C = {budget:.2g} FLOPs".replace("e+", "e")
        fig.add_trace(go.Scatter(x=rows[size_col], y=rows[metric], mode="markers", marker={"color": color, "size": 9}, name=name, legendgroup=name))
        fig.add_traces(_curve_traces(curves.get(budget), color, name, dash="solid"))
    if optima is not None and not optima.empty:
        best = optima.sort_values(budget_col)
        fig.add_trace(
            go.Scatter(
                x=best[size_col],
                y=best[metric],
                mode="lines+markers",
                marker={"symbol": "star", "size": 16, "color": "gold", "line": {"color": "black", "width": 1}},
                line={"color": "grey", "width": 1},
                name="optimum per budget",
            )
        )
    return _layout(fig, title, xlabel or labels(size_col), ylabel or labels(metric), log_x=True)


def frontier_figure(
    optima: pd.DataFrame,
    budget_col: str,
    size_col: str,
    data_col: str,
    title: str,
    size_curves: Sequence[Curve] = (),
    data_curves: Sequence[Curve] = (),
    data_label: str | None = None,
    labels: Labels = DEFAULT_LABELS,
) -> go.Figure:
    """N_opt(C) and D_opt(C), log-log, two panels: the optima (1 trace each) and each fitted law (+ band)."""
    fig = make_subplots(1, 2, subplot_titles=["N_opt vs compute", "D_opt vs compute"], horizontal_spacing=0.12)
    panels = (
        (1, size_col, size_curves, "N_opt", labels(size_col), "rgb(59, 76, 192)"),
        (2, data_col, data_curves, "D_opt", data_label or labels(data_col), "rgb(180, 4, 38)"),
    )
    for col, column, curves, name, ylabel, color in panels:
        fig.add_trace(go.Scatter(x=optima[budget_col], y=optima[column], mode="markers", marker={"color": color, "size": 10}, name=f"{name} per budget"), 1, col)
        for curve, dash in zip(curves, ("dash", "dot")):
            for trace in _curve_traces(curve, color, name, dash=dash):
                fig.add_trace(trace, 1, col)
        fig.update_xaxes(title_text=labels(budget_col), type="log", row=1, col=col)
        fig.update_yaxes(title_text=f"{name}: {ylabel}", type="log", row=1, col=col)
    fig.update_layout(template=TEMPLATE, title={"text": title, "x": 0.01}, margin={"t": 80})
    fig.update_xaxes(exponentformat="power")
    fig.for_each_yaxis(lambda axis: _tidy_log_axis(axis, SIZE_TICKS))
    return fig


def write_html(
    figures: Sequence[go.Figure],
    path: str | Path,
    title: str,
    intro: str = "",
    appendix: str = "",
    details: str = "",
    details_title: str = "More",
) -> Path:
    """One page, plotly.js inlined once in the head (no CDN: the machines that open it may be offline).

    `intro` and `appendix` are plain text shown above and below the plots, `details` below those,
    folded under `details_title` until opened (a sweep of thousands of trials has hundreds of fit
    blocks); all HTML-escaped.
    """
    config = {"displaylogo": False, "responsive": True}
    parts = [fig.to_html(full_html=False, include_plotlyjs=False, default_width="100%", default_height="500px", config=config) for fig in figures]
    body = "\n".join(f'<section class="plot">{part}</section>' for part in parts)
    intro_html = f"<p class='intro'>{html.escape(intro)}</p>" if intro else ""
    appendix_html = f"<h2>Fits</h2><pre>{html.escape(appendix)}</pre>" if appendix else ""
    if details:
        appendix_html += f"<details><summary>{html.escape(details_title)}</summary><pre>{html.escape(details)}</pre></details>"
    page = (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script>"
        "<style>body{font-family:system-ui,sans-serif;max-width:1150px;margin:auto;padding:0 1em;color:#222}"
        ".plot{margin:1.5em 0;border-top:1px solid #eee}.intro{color:#555}summary{cursor:pointer;color:#555}pre{background:#f6f6f6;padding:1em;overflow-x:auto}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{intro_html}\n{body}\n{appendix_html}</body></html>"
    )
    path = Path(path)
    path.write_text(page)
    return path
