"""The HTML report in a real browser: headless Chromium opens it offline, every plot renders with the
traces it should hold, nothing is logged as an error, and the screenshot is kept as an artifact."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from dashboards import write_report
from orchestrator.fit import fit_error_vs_size
from tests import synthetic_sweeps as synth
from tests.chromium import Chromium

N_DATA, N_BUDGETS = len(synth.DATA_SIZES), len(synth.BUDGETS)
# Traces per plot, in page order, from what each figure draws (see dashboards.interactive):
EXPECTED_TRACES = [
    1,  # heatmap over model size x data size
    N_DATA,  # model size x epoch: one heatmap panel per data size
    4 * N_DATA,  # per data size: test error, train error, interpolation threshold, peak
    3 * N_DATA,  # per data size: trials, fitted law, its bootstrap band
    2 * N_BUDGETS + 1,  # per budget: trials and fitted profile; the optima
    2 * 3,  # N_opt and D_opt: optima, fitted law, band
]


def test_html_report_renders_every_plot_in_headless_chromium(tmp_path, capsys):
    trials = synth.double_descent_trials()
    fits, _ = fit_error_vs_size(trials, n_boot=40)
    compute = synth.compute_optimal_inputs()
    write_report(trials, fits, tmp_path, "browser-sweep", history=synth.double_descent_history(), compute=compute)
    page = (tmp_path / "report.html").resolve()

    with Chromium() as browser:
        report = browser.inspect(page.as_uri(), expected_plots=len(EXPECTED_TRACES))

    screenshot = tmp_path / "report-screenshot.png"
    screenshot.write_bytes(report.screenshot_png)
    with capsys.disabled():
        print(f"\nscreenshot of the HTML report: {screenshot}")

    assert report.console_errors == []
    assert report.remote_requests == []  # everything it needs is inside the file
    assert [p["traces"] for p in report.plots] == EXPECTED_TRACES
    assert [p["rendered"] for p in report.plots] == EXPECTED_TRACES
    assert all(p["title"].startswith("browser-sweep: ") for p in report.plots)

    image = np.asarray(Image.open(io.BytesIO(report.screenshot_png)).convert("RGB"), dtype=float)
    assert image.shape[0] >= sum(p["height"] for p in report.plots)
    for plot in report.plots:
        assert plot["svg"] >= 1 and plot["width"] > 300 and plot["height"] > 300
        top, left = int(plot["y"]), int(plot["x"])
        region = image[top : top + int(plot["height"]), left : left + int(plot["width"])]
        drawn = (region.mean(axis=2) < 245).mean()
        coloured = (region.max(axis=2) - region.min(axis=2) > 60).mean()  # data, not just grey axes
        assert drawn > 0.02 and coloured > 0.003, (plot["title"], drawn, coloured)
