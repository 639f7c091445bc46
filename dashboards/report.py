"""The report of a sweep: PNGs (or SVGs) for papers, one self-contained HTML page, and the fits as JSON.

Pictures, when the data has them:
  heatmap.png        seed-mean test error over model size N x data size D (final epoch)
  epoch_heatmap.png  test error over model size x epoch, one panel per data size (epoch-wise double descent)
  curves.png         test error vs model size per data size; train error, interpolation threshold, peak
  scaling.png        test error vs model size, log-log, with fitted laws and bootstrap CI bands
  isoflop.png        loss vs model size per compute budget, with each budget's optimum
  frontier.png       compute-optimal N_opt(C) and D_opt(C)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd

from dashboards import interactive, plots
from dashboards.curves import Curve, curves_by_group, empirical_optima, markers_by_group
from dashboards.plots import si


@dataclass
class ComputeOptimal:
    """An IsoFLOP sweep's inputs to the report: trials tagged with their compute budget (FLOPs).

    profiles: a fitted profile per budget (e.g. a parabola in log N), drawn through the trials.
    optima: one row per budget (budget_col, n_params, n_samples, metric); None: the lowest recorded
        trial per budget.
    n_opt / d_opt: fitted compute-optimal laws N_opt(C) and D_opt(C), with bands where they have them.
    """

    trials: pd.DataFrame
    budget_col: str = "compute_budget"
    metric: str = "test_loss"
    profiles: Mapping[float, Curve] = field(default_factory=dict)
    optima: pd.DataFrame | None = None
    n_opt: Curve | None = None
    d_opt: Curve | None = None


def _save(fig, out: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    paths = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        fig.savefig(path, dpi=150)
        paths.append(path)
    plt.close(fig)
    return paths


def write_report(
    trials: pd.DataFrame,
    fits: Sequence,
    out_dir: str | Path,
    title: str,
    history: pd.DataFrame | None = None,
    compute: ComputeOptimal | None = None,
    size_col: str = "n_params",
    data_col: str = "n_samples",
    metric: str = "test_error",
    train_metric: str = "train_error",
    data_unit: str = "samples",
    metric_units: Mapping[str, str] | None = None,
    interpolation_tol: float = 0.01,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Write the pictures (in each of `formats`), report.html and fits.json into out_dir; return their paths.

    trials: one row per finished trial (orchestrator.results.load_trials); history: one row per
    trial x epoch (load_history), for the epoch heatmap; fits: PowerLawFit-like results labelled
    '<data_col>=<value>'; data_unit: what D counts ('samples' or 'tokens'), metric_units: what each
    metric measures (e.g. {'test_loss': 'bits per byte'}), both for axis labels.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if trials.empty or metric not in trials:
        raise ValueError(f"no finished trials with metric {metric!r} to report on")
    with plots.metric_units(metric_units):  # the workload's units in every label drawn here
        data_label = f"data size D (training {data_unit})"
        train_col = train_metric if train_metric in trials else None
        markers = markers_by_group(trials, size_col, data_col, metric, train_metric, interpolation_tol) if train_col else {}
        fit_curves = curves_by_group(fits, data_col)
        what = plots.label(metric).split(" (")[0]
        titles = {
            "heatmap": f"{title}: final {what} over model and data size",
            "epoch_heatmap": f"{title}: {what} over model size and epoch",
            "curves": f"{title}: {what} vs model size",
            "scaling": f"{title}: scaling of {what} with model size",
            "isoflop": f"{title}: IsoFLOP profiles",
            "frontier": f"{title}: compute-optimal frontier",
        }

        static = [
            ("heatmap", plots.heatmap(trials, size_col, data_col, metric, title=titles["heatmap"], ylabel=data_label)),
            ("curves", plots.error_vs_size(trials, size_col, metric, data_col, markers, train_col, titles["curves"], group_label="D")),
            ("scaling", plots.scaling_curves(trials, size_col, metric, data_col, fit_curves, titles["scaling"], group_label="D")),
        ]
        figures = [
            interactive.heatmap_figure(trials, size_col, data_col, metric, titles["heatmap"], ylabel=data_label),
            interactive.error_vs_size_figure(trials, size_col, metric, data_col, titles["curves"], markers, train_col, group_label="D"),
            interactive.scaling_figure(trials, size_col, metric, data_col, titles["scaling"], fit_curves, group_label="D"),
        ]
        if history is not None and not history.empty and metric in history:
            static.insert(1, ("epoch_heatmap", plots.epoch_heatmaps(history, size_col, data_col, metric, titles["epoch_heatmap"], group_label="D")))
            figures.insert(1, interactive.epoch_heatmap_figure(history, size_col, data_col, metric, titles["epoch_heatmap"], group_label="D"))
        if compute is not None and not compute.trials.empty:
            c = compute
            optima = c.optima if c.optima is not None else empirical_optima(c.trials, c.budget_col, size_col, data_col, c.metric)
            static += [
                ("isoflop", plots.isoflop_profiles(c.trials, size_col, c.metric, c.budget_col, c.profiles, optima, titles["isoflop"])),
                ("frontier", plots.compute_frontier(optima, c.budget_col, size_col, data_col, c.n_opt, c.d_opt, titles["frontier"], data_label=data_label)),
            ]
            figures += [
                interactive.isoflop_figure(c.trials, size_col, c.metric, c.budget_col, titles["isoflop"], c.profiles, optima),
                interactive.frontier_figure(optima, c.budget_col, size_col, data_col, titles["frontier"], c.n_opt, c.d_opt, data_label),
            ]

        written = [path for stem, fig in static for path in _save(fig, out, stem, formats)]
        intro = (
            f"{len(trials)} finished trials; model sizes {si(trials[size_col].min())} to {si(trials[size_col].max())} parameters, "
            f"data sizes {si(trials[data_col].min())} to {si(trials[data_col].max())} {data_unit}. "
            f"Dashed vertical lines mark the interpolation threshold (the smallest model whose mean train error is <= {interpolation_tol:g}), "
            "stars the test-error peak; shaded bands are bootstrap confidence intervals of the fits."
        )
        summaries = "\n\n".join(f.summary() for f in fits)
        written.append(interactive.write_html(figures, out / "report.html", title, intro=intro, appendix=summaries))
        fits_json = out / "fits.json"
        fits_json.write_text(json.dumps([f.to_dict() for f in fits], indent=2))
        written.append(fits_json)
        return written
