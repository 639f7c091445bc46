from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orchestrator.fit import FitError, fit_error_vs_size, fit_power_law


def test_power_law_recovers_known_parameters():
    rng = np.random.default_rng(0)
    x = np.repeat(np.geomspace(1e2, 1e6, 9), 3)
    truth = {"E": 0.3, "A": 12.0, "alpha": 0.45}
    y = (truth["E"] + truth["A"] * x ** -truth["alpha"]) * np.exp(0.01 * rng.normal(size=x.size))
    fit = fit_power_law(x, y, n_boot=200, ci_level=0.99)
    for name, value in truth.items():
        lo, hi = fit.ci[name]
        assert lo <= value <= hi, (name, value, fit.ci[name])
        assert fit.params[name] == pytest.approx(value, rel=0.15)
    assert np.allclose(fit.predict(x), fit.predict(x))
    assert "alpha" in fit.summary()
    assert fit.to_dict()["params"]["alpha"] == fit.params["alpha"]


def test_too_few_points_is_a_clear_error():
    with pytest.raises(FitError, match="need at least 3 distinct"):
        fit_power_law([1, 2, 2], [1.0, 0.5, 0.5])


def test_non_positive_values_are_refused():
    with pytest.raises(FitError, match="positive"):
        fit_power_law([1, 2, 3, 4], [1.0, 0.5, 0.0, 0.2])


def test_groups_that_cannot_be_fitted_are_reported_not_dropped():
    frame = pd.DataFrame(
        {
            "n_params": [10, 100, 1000, 10, 100],
            "n_samples": [1, 1, 1, 2, 2],
            "test_error": [0.9, 0.5, 0.3, 0.8, 0.4],
        }
    )
    fits, skipped = fit_error_vs_size(frame, n_boot=20)
    assert [f.label for f in fits] == ["n_samples=1"]
    assert len(skipped) == 1 and "n_samples=2" in skipped[0]


def test_the_stacked_refits_equal_one_least_squares_fit_per_resample():
    """The bootstrap and leave-one-out refits are solved as one sparse problem; each must land where
    its own least-squares fit does, seeds sharing an x included."""
    from scipy.optimize import least_squares

    from orchestrator.fit.power_law import LOWER, UPPER, _refit_weighted

    rng = np.random.default_rng(3)
    x = np.repeat(np.geomspace(1e3, 1e7, 8), 5)
    y = (1.5 + 300 * x**-0.3) * np.exp(0.02 * rng.normal(size=len(x)))
    logx, logy = np.log(x / np.exp(np.log(x).mean())), np.log(y)
    start = np.array([np.log(1.5), np.log(300 * np.exp(np.log(x).mean()) ** -0.3), 0.3])
    weights = np.array([np.bincount(rng.integers(0, len(x), len(x)), minlength=len(x)) for _ in range(12)], dtype=float)
    weights[0] = 0.0
    weights[0, :10] = 1.0  # two distinct x: too few to fit

    stacked = _refit_weighted(logx, logy, weights, start)

    assert np.isnan(stacked[0]).all() and np.isfinite(stacked[1:]).all()
    for row, got in zip(weights[1:], stacked[1:]):
        idx = np.repeat(np.arange(len(x)), row.astype(int))
        alone = least_squares(lambda t: np.logaddexp(t[0], t[1] - t[2] * logx[idx]) - logy[idx], start, bounds=(LOWER, UPPER), method="trf")
        np.testing.assert_allclose(got, alone.x, atol=2e-4)
