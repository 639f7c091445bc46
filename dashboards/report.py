"""The report of a sweep: heatmap and curves as PNG, one interactive HTML page, and the fits as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from dashboards import interactive, plots
from orchestrator.fit import PowerLawFit


def write_report(
    trials: pd.DataFrame,
    fits: list[PowerLawFit],
    out_dir: str | Path,
    title: str,
    size_col: str = "n_params",
    data_col: str = "n_samples",
    metric: str = "test_error",
    grid_x: str | None = None,
    grid_y: str | None = None,
) -> list[Path]:
    """Write heatmap.png, curves.png, report.html and fits.json into out_dir; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if trials.empty or metric not in trials:
        raise ValueError(f"no finished trials with metric {metric!r} to report on")
    grid_x, grid_y = grid_x or size_col, grid_y or data_col
    written = []
    for name, fig in (
        ("heatmap.png", plots.heatmap(trials, grid_x, grid_y, metric, title=f"{title}: final {metric}")),
        ("curves.png", plots.curves(trials, size_col, metric, data_col, fits, title=f"{title}: {metric} vs model size")),
    ):
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        written.append(out / name)
    html = out / "report.html"
    interactive.write_html(
        [
            interactive.heatmap_figure(trials, grid_x, grid_y, metric, f"{title}: final {metric}"),
            interactive.curves_figure(trials, size_col, metric, data_col, fits, f"{title}: {metric} vs model size"),
        ],
        html,
        title,
    )
    written.append(html)
    fits_json = out / "fits.json"
    fits_json.write_text(json.dumps([f.to_dict() for f in fits], indent=2))
    written.append(fits_json)
    return written
