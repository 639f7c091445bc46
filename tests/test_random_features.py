"""Random-features regression: the peak sits at p = n, Gaussian features follow Hastie et al. (2019),
and the workload runs through the real orchestrator (Ray + MLflow) into `scalesweep fit`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from orchestrator import load_spec
from orchestrator.cli import app
from orchestrator.fit import detect_double_descent
from orchestrator.sweep import Sweep
from workloads.api import Reporter, STANDARD_METRICS, resolve_workload
from workloads.random_features import RandomFeatures, RandomFeaturesConfig, fit_and_score, isotropic_ridgeless_risk

N_TRAIN = 200
GAMMAS = (0.2, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0)
SEEDS = range(8)


def simulate(features: str, n_train: int, gammas=GAMMAS, seeds=SEEDS, noise_std: float = 0.5) -> pd.DataFrame:
    rows = []
    for gamma in gammas:
        p = int(round(gamma * n_train))
        for seed in seeds:
            config = RandomFeaturesConfig(
                n_features=p, n_train=n_train, features=features, noise_std=noise_std, n_test=1000, seed=seed
            )
            rows.append({"n_params": p, "seed": seed, **fit_and_score(config)})
    return pd.DataFrame(rows)


def test_gaussian_features_match_the_closed_form_ridgeless_risk_away_from_the_peak():
    frame = simulate("gaussian", N_TRAIN)
    mean = frame.groupby("n_params")["test_error"].mean()
    gamma = mean.index.to_numpy() / N_TRAIN
    theory = isotropic_ridgeless_risk(gamma, signal=1.0, noise_std=0.5)
    away = np.abs(gamma - 1) >= 0.3
    assert away.sum() >= 6
    rel = np.abs(mean.to_numpy()[away] - theory[away]) / theory[away]
    assert rel.max() < 0.10, dict(zip(gamma[away], rel.round(3)))
    # Under-parameterised, the risk is pure variance: sigma^2 gamma / (1 - gamma), rising towards the peak.
    assert np.all(np.diff(mean.to_numpy()[gamma < 1]) > 0)


@pytest.mark.parametrize("n_train", [100, 200])
def test_relu_features_peak_at_p_equal_n_and_the_detector_says_so(n_train):
    frame = simulate("relu", n_train, seeds=range(3))
    result = detect_double_descent(frame, x="n_params", train_tol=1e-8, label=f"n={n_train}")
    assert result.double_descent, result.summary()
    grid = sorted(frame["n_params"].unique())
    assert abs(grid.index(result.peak_x) - grid.index(n_train)) <= 1
    assert result.threshold_x == n_train  # the first p that fits n noisy labels exactly
    assert result.peak_near_threshold
    # Far on the over-parameterised side the error falls well below the peak.
    assert result.curve["mean"].iloc[-1] < 0.1 * result.peak_height


def test_workload_contract():
    workload = resolve_workload("random_features")()
    assert isinstance(workload, RandomFeatures)
    config = workload.validate_config({"n_features": 50, "n_train": 40})
    size = workload.size(config)
    assert (size.n_params, size.n_samples) == (50, 40) and size.train_flops > 0
    reporter = Reporter()
    workload.train(config, reporter)
    assert len(reporter.history) == 1 and reporter.history[0]["epoch"] == 1
    row = reporter.history[0]
    assert set(STANDARD_METRICS) <= set(row)
    assert row["train_loss"] == row["train_error"] < 1e-20  # p > n: interpolates
    assert row["test_loss"] == row["test_error"] > 0
    assert fit_and_score(config) == fit_and_score(config)  # same seed, same numbers


def test_random_features_sweep_through_ray_and_mlflow_into_fit(ray_local, write_spec, tmp_path):
    spec_path = write_spec(
        {
            "name": "rf-double-descent",
            "workload": "random_features",
            "axes": {"n_features": [20, 40, 60, 80, 100, 120, 150, 200, 400], "seed": [0, 1]},
            "params": {"n_train": 100, "noise_std": 0.5, "n_test": 1000},
            "resources_per_trial": {"cpu": 1},
        }
    )
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(spec_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "18 submitted (18 finished)" in result.output

    result = runner.invoke(app, ["fit", str(spec_path), "--n-boot", "50", "--train-tol", "1e-8", "--verbose"])
    assert result.exit_code == 0, result.output
    assert "double descent of test_error vs n_params" in result.output and ": YES" in result.output
    assert "peak n_params=100" in result.output
    assert "joint L(N, D)" in result.output  # one data size: listed as not fitted, with the reason

    spec = load_spec(spec_path)
    store = Sweep(spec).store
    parent = store.find_sweep(spec.name)
    assert "fits/fits.json" in store.list_artifacts(parent, "fits")
    logged = json.loads(Path(store.client.download_artifacts(parent, "fits/fits.json", str(tmp_path))).read_text())
    [curve] = logged["double_descent"]
    assert curve["double_descent"] is True and curve["params"]["peak_x"] == 100.0
    assert curve["params"]["threshold_x"] == 100.0
    assert logged["joint"] is None and any("joint" in s for s in logged["skipped"])
