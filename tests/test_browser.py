"""The HTML report in a real browser: headless Chromium opens it offline, every plot renders with the
traces it should hold, nothing is logged as an error, and the screenshot is kept as an artifact."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from dashboards import write_report
from orchestrator.fit import fit_trials
from tests import synthetic_sweeps as synth
from tests.chromium import Chromium

N_DATA, N_BUDGETS = len(synth.DATA_SIZES), 3
# Traces per plot, in page order, from what each figure draws (see dashboards.interactive): first a
# double-descent sweep, then an IsoFLOP sweep, each one page.
EXPECTED_TRACES = [
    1,  # heatmap over model size x data size
    N_DATA,  # model size x epoch: one heatmap panel per data size
    4 * N_DATA,  # per curve: test error, train error, interpolation threshold, peak
    N_DATA,  # per data size its trials; its law is no power law (a bump), so no line is drawn
    1,  # the IsoFLOP sweep's heatmap
    2 * N_BUDGETS + 1,  # per budget: trials and fitted profile; the optima
    2 * (1 + 2 * 2),  # N_opt and D_opt: optima, and per approach (joint, IsoFLOP) its law and band
]


def test_html_report_renders_every_plot_in_headless_chromium(tmp_path, capsys):
    trials, history = synth.double_descent_trials(), synth.double_descent_history()
    write_report(trials, fit_trials(trials, history, n_boot=20), tmp_path / "dd", "browser-sweep", history=history)
    iso = synth.tiny_lm_isoflop_shape()
    write_report(iso, fit_trials(iso, metric="test_loss", n_boot=30), tmp_path / "iso", "browser-sweep")
    reports = []
    with Chromium() as browser:
        for name, plots in (("dd", 4), ("iso", 3)):
            reports.append(browser.inspect((tmp_path / name / "report.html").resolve().as_uri(), expected_plots=plots))
    plots = reports[0].plots + reports[1].plots

    screenshot = tmp_path / "report-screenshot.png"
    screenshot.write_bytes(reports[0].screenshot_png)
    with capsys.disabled():
        print(f"\nscreenshot of the HTML report: {screenshot}")

    assert reports[0].console_errors == reports[1].console_errors == []
    assert reports[0].remote_requests == reports[1].remote_requests == []  # everything it needs is inside the file
    assert [p["traces"] for p in plots] == EXPECTED_TRACES
    assert [p["rendered"] for p in plots] == EXPECTED_TRACES
    assert all(p["title"].startswith("browser-sweep: ") for p in plots)

    for report in reports:
        image = np.asarray(Image.open(io.BytesIO(report.screenshot_png)).convert("RGB"), dtype=float)
        assert image.shape[0] >= sum(p["height"] for p in report.plots)
        for plot in report.plots:
            assert plot["svg"] >= 1 and plot["width"] > 300 and plot["height"] > 300
            top, left = int(plot["y"]), int(plot["x"])
            region = image[top : top + int(plot["height"]), left : left + int(plot["width"])]
            drawn = (region.mean(axis=2) < 245).mean()
            coloured = (region.max(axis=2) - region.min(axis=2) > 60).mean()  # data, not just grey axes
            assert drawn > 0.02 and coloured > 0.003, (plot["title"], drawn, coloured)
