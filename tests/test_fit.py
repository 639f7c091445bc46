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
