"""One real sweep end to end: CLI -> Ray -> MLflow server -> DataFrame -> fits -> report."""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from orchestrator import load_spec
from orchestrator.cli import app
from orchestrator.sweep import Sweep
from tests.conftest import on_each_backend
from workloads.api import STANDARD_METRICS
from workloads.mnist1d_mlp import mlp_param_count

EPOCHS = 3


@pytest.fixture
def mnist_spec(write_spec):
    return write_spec(
        {
            "name": "tiny-mnist1d",
            "workload": "mnist1d_mlp",
            "axes": {"width": [4, 16], "n_train": [200, 400], "seed": [0]},
            "params": {"epochs": EPOCHS, "label_noise": 0.1, "batch_size": 64},
            "resources_per_trial": {"cpu": 1},
        }
    )


@on_each_backend
def test_tiny_mnist1d_sweep_end_to_end(ray_local, mnist_spec, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(mnist_spec), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "4 submitted (4 finished)" in result.output

    spec = load_spec(mnist_spec)
    sweep = Sweep(spec)
    client = MlflowClient(spec.tracking.uri)
    experiment = client.get_experiment_by_name(spec.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("scalesweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("scalesweep.role") == "trial"]
    assert len(parents) == 1
    parent = parents[0].info.run_id
    assert len(children) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in children)
    assert all(r.info.status == "FINISHED" for r in children)
    assert len({r.data.tags["trial_key"] for r in children}) == 4
    for run in children:
        assert {"trial_key", "status"} <= set(run.data.tags)
        # N, D and FLOPs are numbers the MLflow UI can chart, beside the config params.
        assert {"n_params", "n_samples", "train_flops"} <= set(run.data.metrics)
        assert {"width", "n_train", "seed"} <= set(run.data.params)
        for metric in STANDARD_METRICS:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert sorted(steps) == list(range(1, EPOCHS + 1))

    # MLflow's own search filters on them, without scalesweep.
    wide = client.search_runs([experiment.experiment_id], filter_string=f"metrics.n_params > {mlp_param_count(4, 1)}")
    assert len(wide) == 2 and all(r.data.params["width"] == "16" for r in wide)

    trials = sweep.results()
    assert len(trials) == 4
    expected = {(mlp_param_count(w, 1), n) for w in (4, 16) for n in (200, 400)}
    assert set(zip(trials["n_params"], trials["n_samples"])) == expected
    assert trials["test_error"].between(0, 1).all()
    assert (trials["train_flops"] == 6 * trials["n_params"] * trials["n_samples"] * EPOCHS).all()
    history = sweep.history(trials, STANDARD_METRICS)
    assert len(history) == 4 * EPOCHS

    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(mnist_spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("heatmap.png", "report.html"):  # two widths: too few for a double-descent curve
        assert (out / name).stat().st_size > 0
    assert "fits/fits.json" in sweep.store.list_artifacts(parent, "fits")  # the fits the report drew, logged once
    html = (out / "report.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", html)  # plotly.js is inlined: opens offline
    assert "Plotly.newPlot" in html
    assert set(sweep.store.list_artifacts(parent, "report")) >= {f"report/{n}" for n in ("heatmap.png", "report.html")}

    # Resume: everything is finished, so a second run submits nothing and adds no runs.
    again = runner.invoke(app, ["run", str(mnist_spec), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "4 already finished, 0 submitted" in again.output
    assert len(client.search_runs([experiment.experiment_id])) == 5

    status = runner.invoke(app, ["status", str(mnist_spec)])
    assert "4 finished" in status.output and "0 pending" in status.output
