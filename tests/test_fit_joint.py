"""The joint law L(N, D), fitted as Chinchilla approach 3, recovers a known law from noisy points."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator.fit import FitError, fit_joint_law
from orchestrator.fit.joint import hoffmann_grid

# Hoffmann et al. (2022), eq. 10: the law their approach 3 found.
TRUTH = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}
N_GRID = np.geomspace(7e7, 1.6e10, 9)  # parameters
D_GRID = np.geomspace(5e9, 1e12, 9)  # tokens


def chinchilla_points(noise: float, seed: int = 0):
    N, D = (a.ravel() for a in np.meshgrid(N_GRID, D_GRID))
    loss = TRUTH["E"] + TRUTH["A"] / N ** TRUTH["alpha"] + TRUTH["B"] / D ** TRUTH["beta"]
    return N, D, loss * np.exp(noise * np.random.default_rng(seed).normal(size=N.size))


@pytest.fixture(scope="module")
def fits():
    return {noise: fit_joint_law(*chinchilla_points(noise), n_boot=200) for noise in (0.01, 0.0025)}


def test_every_parameter_lies_in_its_ci_and_near_the_truth(fits):
    for noise, fit in fits.items():
        for name, value in TRUTH.items():
            lo, hi = fit.ci[name]
            assert lo <= value <= hi, (noise, name, value, fit.ci[name])
    clean = fits[0.0025]
    assert clean.params["alpha"] == pytest.approx(TRUTH["alpha"], abs=0.02)
    assert clean.params["beta"] == pytest.approx(TRUTH["beta"], abs=0.02)
    assert clean.params["E"] == pytest.approx(TRUTH["E"], rel=0.03)


def test_no_guard_fires_on_hoffmanns_law_with_one_percent_noise(fits):
    fit = fits[0.01]
    assert fit.identified and fit.identification.problems == () and fit.identification.caveats == ()
    assert fit.allocation.identified and fit.allocation.identification.caveats == ()
    a_true = TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])
    assert fit.allocation.ci["a"][0] <= a_true <= fit.allocation.ci["a"][1]
    g = fit.goodness  # 1% noise: every error is about 0.01
    assert 0.007 < g.rmse < 0.013 and g.rmse <= g.loo_rmse < 0.015 and g.largest_out_rmse < 0.02
    assert g.largest_out.startswith("N = 1.6e+10, 9 points")
    payload = json.loads(json.dumps(fit.to_dict()))
    assert payload["identified"] is True and payload["status"] == "identified" and payload["caveats"] == []
    assert payload["goodness"]["loo_rmse"] == pytest.approx(g.loo_rmse)
    assert "leave-one-out" in fit.summary() and "caveat" not in fit.summary()


def test_cis_shrink_when_the_noise_does(fits):
    noisy, clean = fits[0.01], fits[0.0025]
    for name in TRUTH:
        width = lambda fit: fit.ci[name][1] - fit.ci[name][0]  # noqa: E731
        assert width(clean) < width(noisy), (name, clean.ci[name], noisy.ci[name])


def test_compute_optimal_exponents_match_the_law(fits):
    fit = fits[0.0025]
    a_true = TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])
    lo, hi = fit.allocation.ci["a"]
    assert lo <= a_true <= hi
    assert fit.allocation.params["a"] + fit.allocation.params["b"] == pytest.approx(1.0)
    n_opt, d_opt = fit.allocation.predict(1e21)
    assert n_opt * d_opt * 6 == pytest.approx(1e21, rel=1e-9)  # C = 6 N D holds at the optimum
    # The optimum really is the minimum of the fitted law along C = 6 N D.
    N = np.geomspace(n_opt / 10, n_opt * 10, 201)
    assert N[np.argmin(fit.predict(N, 1e21 / (6 * N)))] == pytest.approx(n_opt, rel=0.03)


def test_result_object_is_complete_and_json_able(fits):
    fit = fits[0.01]
    assert fit.predict(N_GRID, D_GRID).shape == (9,)
    lo, hi = fit.predict_ci(N_GRID, D_GRID)
    assert np.all(lo <= fit.predict(N_GRID, D_GRID) + 1e-9) and np.all(fit.predict(N_GRID, D_GRID) <= hi + 1e-9)
    payload = json.loads(json.dumps(fit.to_dict()))
    assert payload["params"]["alpha"] == fit.params["alpha"] and payload["n_boot"] == 200
    text = fit.summary()
    assert all(name in text for name in TRUTH) and "approach 3" in text and "N_opt" in text
    with pytest.raises(Exception):
        fit.params = {}  # frozen


def test_the_initialisation_grid_is_hoffmanns():
    grid = hoffmann_grid()
    assert grid.shape == (4500, 5)
    assert set(grid[:, 3]) == {0.0, 0.5, 1.0, 1.5, 2.0} and set(grid[:, 2]) == {-1.0, -0.5, 0.0, 0.5, 1.0}
    assert set(grid[:, 0]) == {0.0, 5.0, 10.0, 15.0, 20.0, 25.0}


def test_nan_points_are_dropped_not_fitted():
    N, D, loss = chinchilla_points(0.0025)
    loss[:5] = np.nan
    fit = fit_joint_law(N, D, loss, n_boot=0)
    assert len(fit.y) == len(loss) - 5
    assert fit.params["alpha"] == pytest.approx(TRUTH["alpha"], abs=0.03)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda N, D, y: (N, np.where(D > D_GRID[1], D_GRID[1], D), y), "distinct D"),  # two data sizes only
        (lambda N, D, y: (np.full_like(N, 1e9), D, y), "distinct N"),  # constant model size
        (lambda N, D, y: (N, D, np.full_like(y, np.nan)), "distinct N"),  # every loss NaN
        (lambda N, D, y: (N, D, -y), "positive"),
        (lambda N, D, y: (N[:6], D[:6], y[:6]), "distinct"),
    ],
)
def test_degenerate_input_is_a_clear_error(mutate, message):
    with pytest.raises(FitError, match=message):
        fit_joint_law(*mutate(*chinchilla_points(0.01)), n_boot=0)
