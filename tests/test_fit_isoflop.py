"""IsoFLOP profiles (Chinchilla approach 2) and held-out extrapolation on points from a known law."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from orchestrator.fit import FitError, fit_isoflop, fit_trials, held_out_extrapolation
from orchestrator.fit.isoflop import compute_budgets

E, A, ALPHA, B, BETA = 1.69, 406.4, 0.34, 410.7, 0.28
A_OPT = BETA / (ALPHA + BETA)  # N_opt ~ C^a for this law


def law(N, D):
    return E + A / N**ALPHA + B / D**BETA


def isoflop_points(budgets=np.geomspace(1e18, 1e21, 4), noise=0.003, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        n_opt = 0.6 * (C / 6) ** A_OPT  # centre the sampled sizes near the optimum, as a real IsoFLOP design does
        for N in n_opt * np.geomspace(1 / 12, 12, 9):
            D = C / (6 * N)
            rows.append({"train_flops": C * (1 + 0.01 * rng.normal()), "n_params": N, "n_samples": D, "loss": law(N, D) * np.exp(noise * rng.normal())})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def isoflop():
    frame = isoflop_points()
    return fit_isoflop(frame["train_flops"], frame["n_params"], frame["n_samples"], frame["loss"], n_boot=300)


def test_budgets_group_trials_of_equal_compute():
    assert list(compute_budgets([1e18, 1.02e18, 5e18, 1e19, 0.99e19])) == [0, 0, 1, 2, 2]


def test_isoflop_minima_and_exponents_recover_the_law(isoflop):
    assert len(isoflop.profiles) == 4 and all(p.interior for p in isoflop.profiles)
    for profile in isoflop.profiles:
        N = np.geomspace(profile.N.min(), profile.N.max(), 2001)
        true_opt = N[np.argmin(law(N, profile.budget / (6 * N)))]
        assert profile.N_opt == pytest.approx(true_opt, rel=0.15)
        assert profile.N_opt_ci[0] < profile.N_opt < profile.N_opt_ci[1]
        assert profile.N_opt * profile.D_opt * 6 == pytest.approx(profile.budget, rel=0.05)
    lo, hi = isoflop.ci["a"]
    assert lo <= A_OPT <= hi and isoflop.params["a"] == pytest.approx(A_OPT, abs=0.03)
    lo, hi = isoflop.ci["b"]
    assert lo <= 1 - A_OPT <= hi
    n_opt, d_opt = isoflop.predict(1e20)
    assert n_opt * d_opt * 6 == pytest.approx(1e20, rel=0.1)
    payload = json.loads(json.dumps(isoflop.to_dict()))
    assert len(payload["profiles"]) == 4 and "N_opt" in isoflop.summary()


def test_isoflop_needs_two_budgets():
    frame = isoflop_points(budgets=[1e19])
    with pytest.raises(FitError, match="at least 2 compute budgets"):
        fit_isoflop(frame["train_flops"], frame["n_params"], frame["n_samples"], frame["loss"], n_boot=10)


def test_held_out_extrapolation_predicts_the_largest_trials():
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, 7), np.geomspace(1e9, 1e12, 7)))
    frame = pd.DataFrame({"n_params": N, "n_samples": D, "train_flops": 6 * N * D})
    frame["test_loss"] = law(N, D) * np.exp(0.003 * np.random.default_rng(1).normal(size=len(N)))
    result = held_out_extrapolation(frame, y="test_loss", threshold_col="train_flops", n_boot=50)
    assert result.errors["n_held_out"] > 5 and result.errors["n_fit"] + result.errors["n_held_out"] == len(frame)
    assert (result.held_out["train_flops"] > result.threshold).all()
    assert result.errors["mean_abs_rel_error"] < 0.02
    assert result.params["alpha"] == pytest.approx(ALPHA, abs=0.05)
    json.dumps(result.to_dict())
    with pytest.raises(FitError, match="no trials on one side"):
        held_out_extrapolation(frame, y="test_loss", threshold=1e40, n_boot=0)


def test_sweep_fits_make_every_applicable_fit():
    frame = isoflop_points(noise=0.002).rename(columns={"loss": "test_loss"})
    frame["seed"] = 0
    fits = fit_trials(frame, metric="test_loss", n_boot=50)
    assert fits.joint is not None and fits.isoflop is not None and fits.extrapolation is not None
    assert fits.joint.params["alpha"] == pytest.approx(ALPHA, abs=0.05)
    assert any(f.label == "compute frontier" for f in fits.power_laws)
    payload = json.loads(json.dumps(fits.to_dict()))
    assert payload["joint"]["params"]["alpha"] == fits.joint.params["alpha"]
    assert "approach 2" in fits.summary() and "approach 3" in fits.summary()


def test_a_budget_column_defines_the_profiles():
    frame = isoflop_points(budgets=np.geomspace(1e18, 1e20, 3)).rename(columns={"loss": "test_loss"})
    frame["compute_budget"] = np.repeat(["small", "medium", "large"], 9)
    frame["train_flops"] *= np.exp(0.2 * np.random.default_rng(3).normal(size=len(frame)))  # too spread to group by FLOPs
    fits = fit_trials(frame, metric="test_loss", n_boot=20)
    assert fits.isoflop is not None and [len(p.y) for p in fits.isoflop.profiles] == [9, 9, 9]
