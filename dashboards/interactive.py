"""Plotly figures for the HTML report; the page embeds plotly.js so it opens offline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboards.plots import label, mean_grid
from orchestrator.fit import PowerLawFit


def heatmap_figure(df: pd.DataFrame, x: str, y: str, value: str, title: str) -> go.Figure:
    grid = mean_grid(df, x, y, value)
    fig = go.Figure(
        go.Heatmap(
            z=grid.values,
            x=[f"{v:g}" for v in grid.columns],
            y=[f"{v:g}" for v in grid.index],
            colorscale="Viridis",
            colorbar={"title": label(value)},
            hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{value}=%{{z:.4f}}<extra></extra>",
        )
    )
    fig.update_layout(title=title, xaxis_title=label(x), yaxis_title=label(y), xaxis_type="category", yaxis_type="category")
    return fig


def curves_figure(df: pd.DataFrame, x: str, y: str, group: str, fits: list[PowerLawFit], title: str) -> go.Figure:
    fig = go.Figure()
    fits_by_label = {f.label: f for f in fits}
    for value, rows in df.groupby(group, sort=True):
        stats = rows.groupby(x)[y].agg(["mean", "min", "max"]).sort_index()
        name = f"{group}={value:g}"
        fig.add_trace(
            go.Scatter(
                x=stats.index,
                y=stats["mean"],
                mode="lines+markers",
                name=name,
                legendgroup=name,
                error_y={"type": "data", "symmetric": False, "array": stats["max"] - stats["mean"], "arrayminus": stats["mean"] - stats["min"]},
            )
        )
        fit = fits_by_label.get(f"{group}={value}")
        if fit is not None:
            grid = np.geomspace(fit.x.min(), fit.x.max(), 100)
            fig.add_trace(
                go.Scatter(x=grid, y=fit.predict(grid), mode="lines", line={"dash": "dash"}, name=f"fit {name}", legendgroup=name)
            )
    fig.update_layout(title=title, xaxis_title=label(x), yaxis_title=label(y), xaxis_type="log")
    return fig


def write_html(figures: list[go.Figure], path, title: str) -> None:
    """One page, plotly.js inlined once (no CDN: the machines that open it may be offline)."""
    parts = [
        fig.to_html(full_html=False, include_plotlyjs=(i == 0), default_width="100%", default_height="480px")
        for i, fig in enumerate(figures)
    ]
    body = "\n".join(f'<div class="plot">{part}</div>' for part in parts)
    page = (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}.plot{margin:2em 0}</style>"
        f"</head><body><h1>{title}</h1>\n{body}\n</body></html>"
    )
    path.write_text(page)
