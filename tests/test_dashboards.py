"""The report: what the plots mark, that every picture is labelled with units and titled with the
sweep, and that the files land in the folder and on the sweep's parent run."""

from __future__ import annotations

import json
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from dashboards import interactive, plots, write_report
from dashboards.curves import (
    budget_of,
    curve_from_fit,
    curves_by_group,
    empirical_optima,
    error_peak,
    interpolation_threshold,
    markers_by_group,
    prediction_band,
)
from orchestrator import load_spec
from orchestrator.cli import app
from orchestrator.fit import fit_error_vs_size, fit_power_law
from orchestrator.sweep import Sweep
from tests import synthetic_sweeps as synth

SWEEP = "synthetic-sweep"


@pytest.fixture(scope="module")
def trials():
    return synth.double_descent_trials()


@pytest.fixture(scope="module")
def fits(trials):
    fitted, skipped = fit_error_vs_size(trials, n_boot=40)
    assert not skipped
    return fitted


@pytest.fixture(scope="module")
def compute():
    return synth.compute_optimal_inputs()


def test_interpolation_threshold_and_peak_are_where_the_data_puts_them(trials):
    marks = markers_by_group(trials, "n_params", "n_samples")
    for d in synth.DATA_SIZES:
        threshold = synth.THRESHOLD_PER_SAMPLE * d
        assert marks[d].threshold == threshold
        assert marks[d].peak[0] == threshold
        rows = trials[(trials["n_samples"] == d) & (trials["n_params"] == threshold)]
        assert marks[d].peak[1] == pytest.approx(rows["test_error"].mean())
    # A curve that only falls has no peak; a train error that never reaches the tolerance, no threshold.
    falling = trials.assign(test_error=1.0 / trials["n_params"])
    assert error_peak(falling, "n_params") is None
    assert interpolation_threshold(trials.assign(train_error=0.2), "n_params") is None
    assert interpolation_threshold(trials, "n_params", tol=1.0) == min(synth.SIZES)


def test_prediction_band_brackets_the_fit_and_holds_the_true_law():
    rng = np.random.default_rng(3)
    n = np.repeat(np.geomspace(1e3, 1e6, 8), 3)
    truth = lambda x: 0.2 + 30.0 * x**-0.4  # noqa: E731
    fit = fit_power_law(n, truth(n) * np.exp(0.03 * rng.normal(size=n.size)), n_boot=100, label="n_samples=1000")
    curve = curve_from_fit(fit)
    assert curve.has_band and len(curve.x) == 120
    assert np.all(curve.lo <= curve.y + 1e-12) and np.all(curve.y <= curve.hi + 1e-12)
    inside = (curve.lo <= truth(curve.x)) & (truth(curve.x) <= curve.hi)
    assert inside.mean() > 0.8
    assert curve.label.startswith("fit: α = ")
    assert list(curves_by_group([fit], "n_samples")) == [1000.0]
    assert prediction_band(fit_power_law(n, truth(n), n_boot=0), n) is None


def test_budget_of_and_empirical_optima():
    assert list(budget_of([1.1e15, 0.9e16, 3e17, 2e18], synth.BUDGETS)) == [1e15, 1e16, 1e17, 1e18]
    iso = synth.isoflop_trials()
    optima = empirical_optima(iso, "compute_budget", "n_params", "n_samples", "test_loss")
    assert list(optima["compute_budget"]) == synth.BUDGETS
    for _, row in optima.iterrows():
        at_budget = iso[iso["compute_budget"] == row["compute_budget"]]
        assert row["test_loss"] == at_budget["test_loss"].min()
    # Larger budgets buy larger compute-optimal models.
    assert optima["n_params"].is_monotonic_increasing


def matplotlib_figures(trials, fits, compute):
    history = synth.double_descent_history()
    marks = markers_by_group(trials, "n_params", "n_samples")
    curves = curves_by_group(fits, "n_samples")
    optima = empirical_optima(compute.trials, "compute_budget", "n_params", "n_samples", "test_loss")
    return {
        "heatmap": plots.heatmap(trials, "n_params", "n_samples", "test_error", title=f"{SWEEP}: heatmap"),
        "epoch": plots.epoch_heatmaps(history, "n_params", "n_samples", "test_error", title=f"{SWEEP}: epochs"),
        "curves": plots.error_vs_size(trials, "n_params", "test_error", "n_samples", marks, title=f"{SWEEP}: curves"),
        "scaling": plots.scaling_curves(trials, "n_params", "test_error", "n_samples", curves, title=f"{SWEEP}: scaling"),
        "isoflop": plots.isoflop_profiles(compute.trials, "n_params", "test_loss", "compute_budget", compute.profiles, optima, f"{SWEEP}: iso"),
        "frontier": plots.compute_frontier(optima, "compute_budget", "n_params", "n_samples", compute.n_opt, compute.d_opt, f"{SWEEP}: frontier"),
    }


UNITS = re.compile(r"\((parameters|training samples|FLOPs|fraction misclassified|nats|passes over the training set)\)")


def test_every_picture_has_units_log_scales_and_the_sweep_in_its_title(trials, fits, compute):
    figures = matplotlib_figures(trials, fits, compute)
    try:
        for name, fig in figures.items():
            titles = [fig._suptitle.get_text()] if fig._suptitle else []
            titles += [ax.get_title(loc) for ax in fig.axes for loc in ("left", "center")]
            assert any(SWEEP in t for t in titles), name
            panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
            for ax in panels:
                assert UNITS.search(ax.get_xlabel()), (name, ax.get_xlabel())
                assert UNITS.search(ax.get_ylabel()) or ax.get_ylabel() == "", (name, ax.get_ylabel())
                assert ax.get_xscale() == "log", name  # model size and compute span decades
            assert UNITS.search(panels[0].get_ylabel()), name
        for name in ("scaling", "frontier"):  # power laws: straight lines on log-log axes
            assert all(ax.get_yscale() == "log" for ax in figures[name].axes), name
        # The marks are drawn: one threshold line and one peak star per data size.
        ax = figures["curves"].axes[0]
        assert sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--") == [2000, 8000]
        assert len([line for line in ax.lines if line.get_marker() == "*" and len(line.get_xdata()) == 1]) == 2
        # The bands are drawn: one shaded band per fitted data size.
        assert len(figures["scaling"].axes[0].collections) >= 2 + len(synth.DATA_SIZES)
    finally:
        for fig in figures.values():
            plt.close(fig)

    plotly_figures = [
        interactive.heatmap_figure(trials, "n_params", "n_samples", "test_error", f"{SWEEP}: heatmap"),
        interactive.error_vs_size_figure(trials, "n_params", "test_error", "n_samples", f"{SWEEP}: curves", markers_by_group(trials, "n_params", "n_samples")),
        interactive.scaling_figure(trials, "n_params", "test_error", "n_samples", f"{SWEEP}: scaling", curves_by_group(fits, "n_samples")),
        interactive.isoflop_figure(compute.trials, "n_params", "test_loss", "compute_budget", f"{SWEEP}: iso", compute.profiles),
    ]
    for fig in plotly_figures:
        assert SWEEP in fig.layout.title.text
        assert UNITS.search(fig.layout.xaxis.title.text) and UNITS.search(fig.layout.yaxis.title.text)
    assert [fig.layout.xaxis.type for fig in plotly_figures[1:]] == ["log"] * 3
    assert plotly_figures[2].layout.yaxis.type == "log"


def nonblank(path) -> bool:
    """More than 3% of the pixels drawn on (not white), in more than a few colours."""
    image = Image.open(path).convert("RGB")
    drawn = (np.asarray(image.convert("L")) < 250).mean()
    return drawn > 0.03 and len(image.getcolors(maxcolors=1 << 20)) > 16


def test_write_report_writes_every_picture_one_offline_page_and_the_fits(tmp_path, trials, fits, compute):
    written = write_report(trials, fits, tmp_path, SWEEP, history=synth.double_descent_history(), compute=compute, data_unit="tokens")
    stems = ("heatmap", "epoch_heatmap", "curves", "scaling", "isoflop", "frontier")
    assert {p.name for p in written} == {f"{s}.png" for s in stems} | {"report.html", "fits.json"}
    for stem in stems:
        assert nonblank(tmp_path / f"{stem}.png"), stem
    page = (tmp_path / "report.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page)  # plotly.js is inlined: the page opens offline
    assert len(re.findall(r"plotly\.js v\d", page)) == 1  # and only once
    assert page.count('class="plot"') == len(stems)
    assert "training tokens" in page and "E + A * n_params^-alpha" in page
    saved = json.loads((tmp_path / "fits.json").read_text())
    assert [f["label"] for f in saved] == [f.label for f in fits]
    assert saved[0]["params"]["alpha"] == pytest.approx(fits[0].params["alpha"])


def test_report_labels_metrics_in_the_workloads_units(tmp_path, trials, compute):
    from workloads.tiny_lm import TinyLM

    write_report(trials, [], tmp_path, SWEEP, compute=compute, formats=(), metric_units=TinyLM.metric_units)
    page = (tmp_path / "report.html").read_text()
    assert "test loss (bits per byte)" in page and "fraction of bytes mispredicted" in page
    assert "(nats)" not in page and "fraction misclassified" not in page
    assert plots.label("test_loss") == "test loss (nats)"  # the defaults are back for the next report


def test_report_without_history_or_budgets_draws_the_rest(tmp_path, trials):
    written = write_report(trials, [], tmp_path, SWEEP, formats=("svg",))
    assert {p.name for p in written} == {"heatmap.svg", "curves.svg", "scaling.svg", "report.html", "fits.json"}
    assert all(p.read_text().lstrip().startswith("<?xml") for p in written if p.suffix == ".svg")
    with pytest.raises(ValueError, match="test_loss"):
        write_report(trials, [], tmp_path, SWEEP, metric="test_loss")


def test_report_command_writes_the_folder_and_logs_it_to_the_parent_run(ray_local, write_spec, toy_spec, tmp_path):
    body = {**toy_spec, "name": "toy-report", "axes": {"n": [10, 100, 1000, 10000], "d": [100, 1000]}}
    spec_path = write_spec(body)
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(spec_path), "--no-progress"]).exit_code == 0
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(spec_path), "--out", str(out), "--n-boot", "30"])
    assert result.exit_code == 0, result.output
    names = {"heatmap.png", "epoch_heatmap.png", "curves.png", "scaling.png", "report.html", "fits.json"}
    assert {p.name for p in out.iterdir()} == names
    assert all(nonblank(out / n) for n in names if n.endswith(".png"))
    spec = load_spec(spec_path)
    store = Sweep(spec).store
    parent = store.find_sweep(spec.name)
    assert set(store.list_artifacts(parent, "report")) == {f"report/{n}" for n in names}
    # The toy follows L = E + A N^-alpha + B D^-beta exactly: the fitted exponent is its alpha.
    fitted = json.loads((out / "fits.json").read_text())
    assert [f["label"] for f in fitted] == ["n_samples=100", "n_samples=1000"]
    assert all(f["params"]["alpha"] == pytest.approx(0.5, rel=0.05) for f in fitted)
    bad = runner.invoke(app, ["report", str(spec_path), "--format", "gif"])
    assert bad.exit_code == 2 and "gif" in bad.output


def test_isoflop_view_keys_fitted_profiles_by_the_specs_budgets():
    from orchestrator.sweep import compute_optimal_view

    rows = []
    for budget in (1e10, 1e11, 1e12):
        for n in np.geomspace(1e3, 1e6, 7):
            d = float(int(budget / (6 * n)))  # D is floored to whole tokens, so FLOPs sit just under the budget
            loss = 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28
            rows.append({"train_flops": 6 * n * d, "n_params": n, "n_samples": d, "test_loss": loss, "compute_budget": budget})
    view = compute_optimal_view(pd.DataFrame(rows), "test_loss", n_boot=20)
    assert sorted(view.profiles) == [1e10, 1e11, 1e12]
    assert list(view.optima["compute_budget"]) == [1e10, 1e11, 1e12]
    assert view.optima["n_params"].is_monotonic_increasing  # bigger budgets want bigger models
    assert view.n_opt is not None and view.d_opt is not None
