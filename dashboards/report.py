"""The report of a sweep: PNGs (or SVGs) for papers and one self-contained HTML page, drawn from the
sweep's `SweepFits` (orchestrator.fit) and its trials. The report analyses nothing itself: every
threshold, peak, fitted line and band it draws is one the fits computed, so the pictures and
`scalesweep fit` always agree. The fits themselves are logged once, as fits/fits.json, by the fit.

Pictures, when the data has them:
  heatmap.png        seed-mean metric over model size N x data size D (final epoch)
  epoch_heatmap.png  the metric over model size x epoch, one panel per data size (and label noise or
                     split axis value; epoch-wise double descent)
  curves.png         each double-descent curve (per data size and label noise) with its threshold and peak
  scaling.png        the metric vs model size, log-log, with the identified power laws and bootstrap bands
  isoflop.png        loss vs model size per compute budget, each identified profile's parabola and optimum
  frontier.png       compute-optimal N_opt(C) and D_opt(C) with each identified allocation
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from dashboards import interactive, plots
from dashboards.curves import Curve, allocation_curves, curve_from_callable, curve_from_fit, log_grid
from dashboards.labels import DEFAULT_LABELS, Labels, si

SIZE, DATA = "n_params", "n_samples"


@dataclass(frozen=True)
class Picture:
    """One picture of the report: its file stem and the same figure in matplotlib and plotly."""

    stem: str
    figure: object  # matplotlib.figure.Figure
    interactive: object  # plotly.graph_objects.Figure


def drawn_trials(trials: pd.DataFrame, fits) -> pd.DataFrame:
    """The trials as the fits saw them: N in the fits' convention, only the envelope's choices."""
    if fits.n_params_column != SIZE and fits.n_params_column in trials:
        trials = trials.assign(**{SIZE: trials[fits.n_params_column].astype(float)})
    if fits.envelope is not None:
        keys = list(fits.envelope.cells) + list(fits.envelope.axes)
        trials = trials.merge(fits.envelope.choices[keys], on=keys, how="inner")
    return trials


def drawn_history(history: pd.DataFrame, trials: pd.DataFrame, fits) -> pd.DataFrame:
    """The history of the drawn trials, N in the fits' convention."""
    if "trial_key" in history and "trial_key" in trials:
        history = history[history["trial_key"].isin(trials["trial_key"])]
    if fits.n_params_column != SIZE and fits.n_params_column in history:
        history = history.assign(**{SIZE: history[fits.n_params_column].astype(float)})
    return history


def epoch_panels(history: pd.DataFrame, fits, labels: Labels) -> tuple[pd.DataFrame, str]:
    """(history, column) for the epoch heatmap's panels: the data size, or where the fits' curves are
    also grouped by label noise or a split axis, each combination of those (averaged together, a
    peak at one noise level or weight decay would blur into the others)."""
    names = next(([n for n, _ in c.group] for c in fits.curves if c.group), [])
    keys = [DATA, *(n for n in names if n not in (SIZE, DATA, "epoch") and n in history and history[n].nunique() > 1)]
    if len(keys) == 1:
        return history, DATA
    combos = history[keys].drop_duplicates().sort_values(keys)
    combos["panel"] = [labels.group(tuple(zip(keys, row))) for row in combos.itertuples(index=False)]
    return history.merge(combos, on=keys, how="left").sort_values(keys, kind="stable"), "panel"


def _scaling_inputs(trials: pd.DataFrame, fits, labels: Labels) -> tuple[pd.DataFrame, dict[str, Curve]] | None:
    """Trials tagged with the name of their power law's group, and the identified laws' curves by that name."""
    laws = [f for f in fits.power_laws if f.x_name == SIZE]
    if not laws:
        return None
    columns = [c for c, _ in laws[0].group]
    trials = trials.sort_values(columns, kind="stable") if columns else trials  # groups drawn in size order
    names = trials[columns].apply(lambda row: labels.group(tuple(zip(columns, row))), axis=1) if columns else "all"
    curves = {labels.group(f.group): curve_from_fit(f) for f in laws if f.identified}
    return trials.assign(curve=names), curves


def _isoflop_inputs(trials: pd.DataFrame, fits) -> tuple[pd.DataFrame, dict, pd.DataFrame] | None:
    """Points per budget, the identified profiles' parabolas and their optima; the data alone when
    the trials have budgets but no IsoFLOP fit could be made."""
    metric = fits.metric
    if fits.isoflop is None:
        if "compute_budget" not in trials or trials["compute_budget"].isna().all():
            return None
        return trials[["compute_budget", SIZE, DATA, metric]], {}, pd.DataFrame()
    profiles = fits.isoflop.profiles
    points = pd.DataFrame(
        {
            "compute_budget": np.concatenate([np.full(len(p.N), p.budget) for p in profiles]),
            SIZE: np.concatenate([p.N for p in profiles]),
            DATA: np.concatenate([p.D for p in profiles]),
            metric: np.concatenate([p.y for p in profiles]),
        }
    )
    used = [p for p in profiles if p.identified]
    curves = {p.budget: curve_from_callable(p.predict, log_grid(p.N.min(), p.N.max(), 60)) for p in used}
    optima = pd.DataFrame(
        {"compute_budget": [p.budget for p in used], SIZE: [p.N_opt for p in used], DATA: [p.D_opt for p in used], metric: [p.y_opt for p in used]}
    )
    return points, curves, optima


def report_pictures(
    trials: pd.DataFrame, fits, title: str, history: pd.DataFrame | None = None, labels: Labels = DEFAULT_LABELS
) -> list[Picture]:
    """Every picture the trials and fits support, each as a matplotlib and a plotly figure."""
    metric = fits.metric
    if trials.empty or metric not in trials:
        raise ValueError(f"no finished trials with metric {metric!r} to report on")
    trials = drawn_trials(trials, fits)
    what = labels(metric).split(" (")[0]
    data_label = labels(DATA)
    pictures = [
        Picture(
            "heatmap",
            plots.heatmap(trials, SIZE, DATA, metric, title=f"{title}: final {what} over model and data size", labels=labels),
            interactive.heatmap_figure(trials, SIZE, DATA, metric, f"{title}: final {what} over model and data size", labels=labels),
        )
    ]
    if history is not None and not history.empty and metric in history:
        history, panel = epoch_panels(drawn_history(history, trials, fits), fits, labels)
        t = f"{title}: {what} over model size and epoch"
        pictures.append(
            Picture(
                "epoch_heatmap",
                plots.epoch_heatmaps(history, SIZE, panel, metric, t, group_label="D", labels=labels),
                interactive.epoch_heatmap_figure(history, SIZE, panel, metric, t, group_label="D", labels=labels),
            )
        )
    if fits.double_descent:
        t = f"{title}: {what} vs model size"
        curves = list(fits.double_descent)
        pictures.append(Picture("curves", plots.double_descent_curves(curves, t, labels=labels), interactive.double_descent_figure(curves, t, labels=labels)))
    scaling = _scaling_inputs(trials, fits, labels)
    if scaling is not None:
        rows, curves = scaling
        t = f"{title}: scaling of {what} with model size"
        pictures.append(
            Picture(
                "scaling",
                plots.scaling_curves(rows, SIZE, metric, "curve", curves, t, labels=labels),
                interactive.scaling_figure(rows, SIZE, metric, "curve", t, curves, labels=labels),
            )
        )
    iso = _isoflop_inputs(trials, fits)
    if iso is not None:
        points, curves, optima = iso
        t = f"{title}: IsoFLOP profiles"
        pictures.append(
            Picture(
                "isoflop",
                plots.isoflop_profiles(points, SIZE, metric, "compute_budget", curves, optima, t, labels=labels),
                interactive.isoflop_figure(points, SIZE, metric, "compute_budget", t, curves, optima, labels=labels),
            )
        )
        allocations = [a for a in fits.allocations() if a.identified]
        if not optima.empty or allocations:
            budgets = points["compute_budget"]
            flops = log_grid(budgets.min(), budgets.max(), 60)
            lines = [allocation_curves(a, flops, f"{a.approach}: ") for a in allocations]
            size_curves, data_curves = [n for n, _ in lines], [d for _, d in lines]
            t = f"{title}: compute-optimal frontier"
            pictures.append(
                Picture(
                    "frontier",
                    plots.compute_frontier(optima, "compute_budget", SIZE, DATA, size_curves, data_curves, t, data_label=data_label, labels=labels),
                    interactive.frontier_figure(optima, "compute_budget", SIZE, DATA, t, size_curves, data_curves, data_label, labels=labels),
                )
            )
    return pictures


def write_report(
    trials: pd.DataFrame,
    fits,
    out_dir: str | Path,
    title: str,
    history: pd.DataFrame | None = None,
    labels: Labels = DEFAULT_LABELS,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Write the pictures (in each of `formats`) and report.html into out_dir; return their paths.

    trials: one row per finished trial (orchestrator.results.trials_frame); history: one row per
    trial x epoch, for the epoch heatmap; fits: the sweep's SweepFits, whose results are what is
    drawn; labels: the workload's units and column names.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pictures = report_pictures(trials, fits, title, history, labels)
    written = []
    for picture in pictures:
        for fmt in formats:
            path = out / f"{picture.stem}.{fmt}"
            picture.figure.savefig(path, dpi=150)
            written.append(path)
    shown = drawn_trials(trials, fits)
    intro = (
        f"{len(shown)} finished trials; model sizes {si(shown[SIZE].min())} to {si(shown[SIZE].max())} {labels.n_params_meaning}, "
        f"data sizes {si(shown[DATA].min())} to {si(shown[DATA].max())} {labels.data_unit}. "
        f"Dashed vertical lines mark each curve's interpolation threshold (the smallest model whose mean train error is <= {fits.train_tol:g}), "
        "stars its peak (hollow where the rule does not call it double descent); dashed lines are the identified laws, "
        "shaded bands their bootstrap confidence intervals. A law the data do not identify is not drawn."
    )
    written.append(
        interactive.write_html(
            [p.interactive for p in pictures],
            out / "report.html",
            title,
            intro=intro,
            appendix=fits.summary(verbose=False),
            details=fits.summary(verbose=True),
            details_title=f"Every fit in full ({fits.n_fits} results)",
        )
    )
    return written
