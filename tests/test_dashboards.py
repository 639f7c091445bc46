"""The report draws the sweep's fits and nothing else: its thresholds, peaks, lines and bands are the
SweepFits' own; every picture is labelled with units and titled with the sweep; the files land in
the folder and on the sweep's parent run; drawing never touches pyplot's global state."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from dashboards import Labels, report_pictures, write_report
from dashboards.curves import curve_from_fit
from dashboards.labels import DEFAULT_LABELS
from orchestrator import load_spec
from orchestrator.cli import app
from orchestrator.fit import SweepColumns, fit_power_law, fit_trials
from orchestrator.sweep import Sweep
from tests import synthetic_sweeps as synth
from tests.conftest import REPO

SWEEP = "synthetic-sweep"
NOISY = SweepColumns(noise=("label_noise",), paired_seeds=True)


@pytest.fixture(scope="module")
def trials():
    return synth.double_descent_trials()


@pytest.fixture(scope="module")
def fits(trials):
    return fit_trials(trials, synth.double_descent_history(), n_boot=20)


@pytest.fixture(scope="module")
def iso_trials():
    return synth.tiny_lm_isoflop_shape()


@pytest.fixture(scope="module")
def iso_fits(iso_trials):
    return fit_trials(iso_trials, metric="test_loss", n_boot=30)


def stars(ax) -> list[tuple[float, float, bool]]:
    """(x, y, filled) of every one-point star marker on a matplotlib axes."""
    return [
        (float(line.get_xdata()[0]), float(line.get_ydata()[0]), not (isinstance(line.get_markerfacecolor(), str) and line.get_markerfacecolor() == "none"))
        for line in ax.lines
        if line.get_marker() == "*" and len(line.get_xdata()) == 1
    ]


@pytest.mark.parametrize("axis", ["label_noise", "weight_decay"])
def test_report_and_fit_agree_on_threshold_and_peak_for_every_curve_with_two_noise_levels(axis):
    """Two label-noise levels, or the same curves as two values of an axis the fits are split by."""
    trials = synth.two_noise_trials().rename(columns={"label_noise": axis})
    if axis == "label_noise":
        fits = fit_trials(trials, n_boot=0, columns=NOISY)
    else:
        fits = fit_trials(trials, n_boot=0, columns=SweepColumns(paired_seeds=True, hyper=(axis,)), split_by=[axis])
    curves = fits.double_descent
    assert len(curves) == 4 and {dict(r.group)[axis] for r in curves} == {0.0, 0.2}
    assert {dict(r.group)[axis]: r.double_descent for r in curves if dict(r.group)["n_samples"] == 1000} == {0.0: False, 0.2: True}
    assert all(r.p_value is not None and r.test == "paired by seed" for r in curves if r.peak_x is not None)
    [picture] = [p for p in report_pictures(trials, fits, SWEEP) if p.stem == "curves"]

    ax = picture.figure.axes[0]
    thresholds = sorted(float(line.get_xdata()[0]) for line in ax.lines if line.get_linestyle() == "--")
    assert thresholds == sorted(r.threshold_x for r in curves if r.threshold_x is not None)
    assert sorted(stars(ax)) == sorted((r.peak_x, r.peak_height, r.double_descent) for r in curves if r.peak_x is not None)

    traces = {trace.name: trace for trace in picture.interactive.data}
    for result in curves:
        name = DEFAULT_LABELS.group(result.group)
        if result.threshold_x is not None:
            [line] = [t for n, t in traces.items() if n.startswith(f"interpolation threshold, {name}:")]
            assert list(line.x) == [result.threshold_x] * 2
        if result.peak_x is not None:
            [star] = [t for n, t in traces.items() if n.startswith(f"peak, {name} (")]
            assert (star.x[0], star.y[0]) == (result.peak_x, result.peak_height)
            assert star.marker.symbol == ("star" if result.double_descent else "star-open")


def test_only_identified_laws_are_drawn(trials, fits):
    scaling = next(p for p in report_pictures(trials, fits, SWEEP) if p.stem == "scaling")
    identified = [f for f in fits.power_laws if f.x_name == "n_params" and f.identified]
    dashed = [line for line in scaling.figure.axes[0].lines if line.get_linestyle() == "--" and len(line.get_xdata()) > 2]
    assert len(dashed) == len(identified)  # the bumpy double-descent curves are no power law: none drawn
    # A sweep whose laws are identified draws each one with its band.
    clean = synth.law_trials(synth.chinchilla_loss, d_sizes=synth.GRID_D[:2], noise=0.01)
    clean_fits = fit_trials(clean, metric="test_loss", n_boot=30)
    assert all(f.identified for f in clean_fits.power_laws if f.x_name == "n_params")
    picture = next(p for p in report_pictures(clean, clean_fits, SWEEP) if p.stem == "scaling")
    ax = picture.figure.axes[0]
    assert len([line for line in ax.lines if line.get_linestyle() == "--" and len(line.get_xdata()) > 2]) == 2
    assert len(ax.collections) >= 2 + 2  # the trials' dots and one shaded band per law


def test_isoflop_pictures_are_the_fits_profiles_optima_and_allocations(iso_trials, iso_fits):
    pictures = {p.stem: p for p in report_pictures(iso_trials, iso_fits, SWEEP)}
    assert {"isoflop", "frontier"} <= set(pictures)
    ax = pictures["isoflop"].figure.axes[0]
    [optima] = [line for line in ax.lines if line.get_marker() == "*"]
    vertices = sorted((p.N_opt, p.y_opt) for p in iso_fits.isoflop.profiles if p.identified)
    assert np.allclose(sorted(zip(optima.get_xdata(), optima.get_ydata())), vertices)
    frontier = pictures["frontier"].figure.axes[0]
    labels = [line.get_label() for line in frontier.lines]
    assert any(label.startswith("approach 3 (joint fit): N_opt ∝ C^0.45") for label in labels)
    assert any(label.startswith("approach 2 (IsoFLOP): N_opt ∝ C^0.45") for label in labels)
    # Off the grid, the profiles say so and draw no optimum and no frontier line.
    past = synth.tiny_lm_isoflop_shape(offset=1.0)
    past_fits = fit_trials(past, metric="test_loss", n_boot=20)
    drawn = {p.stem: p for p in report_pictures(past, past_fits, SWEEP)}
    assert not [line for line in drawn["isoflop"].figure.axes[0].lines if line.get_marker() == "*"]
    frontier_labels = [line.get_label() for line in drawn["frontier"].figure.axes[0].lines]
    assert not any("approach 2" in label for label in frontier_labels)


UNITS = re.compile(r"\((parameters|training samples|FLOPs|fraction misclassified|nats|passes over the training set)\)")


def test_every_picture_has_units_log_scales_and_the_sweep_in_its_title(trials, fits, iso_trials, iso_fits):
    pictures = report_pictures(trials, fits, SWEEP, synth.double_descent_history())
    pictures += [p for p in report_pictures(iso_trials, iso_fits, SWEEP) if p.stem in ("isoflop", "frontier")]
    assert [p.stem for p in pictures] == ["heatmap", "epoch_heatmap", "curves", "scaling", "isoflop", "frontier"]
    for picture in pictures:
        fig = picture.figure
        titles = [fig._suptitle.get_text()] if fig._suptitle else []
        titles += [ax.get_title(loc) for ax in fig.axes for loc in ("left", "center")]
        assert any(SWEEP in t for t in titles), picture.stem
        panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        for ax in panels:
            assert UNITS.search(ax.get_xlabel()), (picture.stem, ax.get_xlabel())
            assert UNITS.search(ax.get_ylabel()) or ax.get_ylabel() == "", (picture.stem, ax.get_ylabel())
            assert ax.get_xscale() == "log", picture.stem
        assert UNITS.search(panels[0].get_ylabel()), picture.stem
        assert SWEEP in picture.interactive.layout.title.text
    for picture in pictures[2:4]:
        layout = picture.interactive.layout
        assert UNITS.search(layout.xaxis.title.text) and UNITS.search(layout.yaxis.title.text) and layout.xaxis.type == "log"


def nonblank(path) -> bool:
    """More than 3% of the pixels drawn on (not white), in more than a few colours."""
    image = Image.open(path).convert("RGB")
    drawn = (np.asarray(image.convert("L")) < 250).mean()
    return drawn > 0.03 and len(image.getcolors(maxcolors=1 << 20)) > 16


def test_write_report_writes_the_pictures_and_one_offline_page(tmp_path, trials, fits):
    written = write_report(trials, fits, tmp_path, SWEEP, history=synth.double_descent_history(), labels=Labels(data_unit="tokens"))
    stems = ("heatmap", "epoch_heatmap", "curves", "scaling")
    assert {p.name for p in written} == {f"{s}.png" for s in stems} | {"report.html"}  # the fits are logged by the fit, once
    for stem in stems:
        assert nonblank(tmp_path / f"{stem}.png"), stem
    page = (tmp_path / "report.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page)  # plotly.js is inlined: the page opens offline
    assert len(re.findall(r"plotly\.js v\d", page)) == 1  # and only once
    assert page.count('class="plot"') == len(stems)
    assert "training tokens" in page and "double-descent curves of test_error" in page and "not identified" in page
    tables, folded = page.split("<details>")  # the tables in view, every block folded below them
    assert "double-descent curves of test_error" in tables and "rule: " in tables
    assert f"<summary>Every fit in full ({fits.n_fits} results)</summary>" in folded
    assert all(html.escape(r.summary()) in folded for r in fits.results())


def test_labels_are_the_workloads_and_not_global(tmp_path, iso_trials, iso_fits):
    from workloads.tiny_lm import TinyLM

    labels = Labels.of(TinyLM)
    assert labels("test_loss") == "test loss (bits per byte)" and labels("n_params") == "model size N (non-embedding parameters)"
    assert Labels.of(TinyLM, iso_fits)("n_params") == "model size N (parameters)"  # as the fits counted N
    write_report(iso_trials, iso_fits, tmp_path, SWEEP, formats=(), labels=labels)
    page = (tmp_path / "report.html").read_text()
    assert "test loss (bits per byte)" in page and "(nats)" not in page
    assert DEFAULT_LABELS("test_loss") == "test loss (nats)"  # nothing changed for the next report
    from workloads.mnist1d_mlp import MNIST1DMLP

    assert Labels.of(MNIST1DMLP)("width") == "hidden width (units)"


def test_drawing_a_report_never_imports_pyplot_or_sets_a_backend(tmp_path):
    script = (
        "import sys, matplotlib; before = matplotlib.rcParams._get_backend_or_none();"
        "from tests import synthetic_sweeps as synth; from orchestrator.fit import fit_trials; from dashboards import write_report;"
        f"t = synth.double_descent_trials(); write_report(t, fit_trials(t, n_boot=0), {str(tmp_path)!r}, 'x');"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported';"
        "assert matplotlib.rcParams._get_backend_or_none() == before, 'backend changed'; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    assert (tmp_path / "curves.png").exists()


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
    assert fit_power_law(n, truth(n), n_boot=0).predict_ci(n) is None


def test_report_command_draws_the_logged_fits_and_logs_the_folder(ray_local, write_spec, toy_spec, tmp_path):
    body = {**toy_spec, "name": "toy-report", "axes": {"n": [10, 100, 1000, 10000], "d": [100, 1000]}}
    spec_path = write_spec(body)
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(spec_path), "--no-progress"]).exit_code == 0
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(spec_path), "--out", str(out), "--n-boot", "30", "--metric", "test_loss"])
    assert result.exit_code == 0, result.output
    names = {"heatmap.png", "epoch_heatmap.png", "curves.png", "scaling.png", "report.html"}
    assert {p.name for p in out.iterdir()} == names
    assert all(nonblank(out / n) for n in names if n.endswith(".png"))
    spec = load_spec(spec_path)
    store = Sweep(spec).store
    parent = store.find_sweep(spec.name)
    assert set(store.list_artifacts(parent, "report")) == {f"report/{n}" for n in names}
    # One schema, on the run: the fits the pictures were drawn from. The toy follows
    # L = E + A N^-alpha + B D^-beta exactly: the fitted exponent is its alpha.
    logged = json.loads(open(store.client.download_artifacts(parent, "fits/fits.json", str(tmp_path))).read())
    laws = [f for f in logged["power_laws"] if f["x_name"] == "n_params"]
    assert [f["label"] for f in laws] == ["n_samples=100", "n_samples=1000"]
    assert all(f["identified"] and f["params"]["alpha"] == pytest.approx(0.5, rel=0.05) for f in laws)
    assert "identified" in (out / "report.html").read_text()
    bad = runner.invoke(app, ["report", str(spec_path), "--format", "gif"])
    assert bad.exit_code == 2 and "gif" in bad.output


def test_a_report_of_a_sweep_without_finished_trials_is_refused(trials):
    empty = pd.DataFrame(columns=trials.columns)
    with pytest.raises(ValueError, match="no finished trials"):
        report_pictures(empty, fit_trials(trials, n_boot=0), SWEEP)


def test_an_epoch_heatmap_of_many_data_sizes_draws_six_spread_from_first_to_last():
    import pandas as pd

    from dashboards.interactive import epoch_heatmap_figure
    from dashboards.plots import panel_groups

    assert panel_groups(range(40)) == [0, 8, 16, 23, 31, 39] and panel_groups([3, 1, 2]) == [1, 2, 3]
    history = pd.DataFrame(
        [{"n_params": n, "n_samples": d, "epoch": e, "test_error": 0.5 / e} for n in (10, 100) for d in range(1, 41) for e in (1, 2, 3)]
    )
    fig = epoch_heatmap_figure(history, "n_params", "n_samples", "test_error", "many")
    assert len(fig.data) == 6 and "(6 of 40 n_samples values)" in fig.layout.title.text


def test_an_epoch_heatmaps_colour_scale_is_not_spent_on_the_first_epochs():
    """Errors near 0.9 after one epoch, 0.40 to 0.48 over the later ones: the scale covers the
    later epochs, where an epoch-wise peak grows, and draws the first epochs at its top colour."""
    import pandas as pd

    from dashboards.interactive import epoch_heatmap_figure
    from dashboards.plots import epoch_heatmaps

    later = lambda n, e: 0.40 + 0.08 * (n == 100) * e / 60  # noqa: E731 (a peak that grows with training)
    history = pd.DataFrame(
        [{"n_params": n, "n_samples": 1000, "epoch": e, "test_error": 0.9 if e == 1 else later(n, e)} for n in (10, 100, 1000) for e in range(1, 61)]
    )
    fig = epoch_heatmaps(history, "n_params", "n_samples")
    mesh = fig.axes[0].collections[0]
    low, high = mesh.norm.vmin, mesh.norm.vmax
    assert low == pytest.approx(0.40) and 0.46 < high < 0.9
    assert mesh.colorbar.extend == "max"  # the colour bar says that higher values are clipped
    layout = epoch_heatmap_figure(history, "n_params", "n_samples", "test_error", "growing").layout.coloraxis
    assert (layout.cmin, layout.cmax) == (low, high)


def test_epoch_heatmaps_give_each_value_of_a_split_axis_its_own_panels():
    """Two weight decays fitted apart: a panel per (D, weight decay), as the curves are, not one
    panel per D averaging the two."""
    history = synth.double_descent_history()
    both = pd.concat(
        [history.assign(weight_decay=0.0), history.assign(weight_decay=0.008, test_error=history["test_error"] + 0.1)], ignore_index=True
    )
    both["trial_key"] = both["trial_key"] + "-" + both["weight_decay"].astype(str)
    trials = both[both["epoch"] == both["epoch"].max()]
    fits = fit_trials(trials, both, n_boot=0, columns=SweepColumns(hyper=("weight_decay",)), split_by=["weight_decay"])
    [picture] = [p for p in report_pictures(trials, fits, SWEEP, history=both) if p.stem == "epoch_heatmap"]
    titles = [ax.get_title(loc="left") for ax in picture.figure.axes if ax.get_title(loc="left")]
    assert titles == ["D = 1k, weight_decay = 0", "D = 1k, weight_decay = 0.008", "D = 4k, weight_decay = 0", "D = 4k, weight_decay = 0.008"]
    assert [a.text for a in picture.interactive.layout.annotations] == titles
    first, second = (ax.collections[0].get_array() for ax in picture.figure.axes[:2])
    assert np.allclose(second - first, 0.1)  # each panel its own weight decay's errors
