"""The double-descent detector: threshold, peak and verdict on curves with known shape."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from orchestrator.fit import FitError, SweepColumns, detect_double_descent, double_descent_curves, fit_trials
from orchestrator.fit.double_descent import RULE, stated_rule

WIDTHS = np.array([100, 200, 400, 800, 1600, 3200, 6400])
# Test error falls, peaks at 800 where train error first reaches 0, falls again (classic model-wise shape).
TEST_MEAN = np.array([0.40, 0.35, 0.38, 0.45, 0.36, 0.30, 0.28])
TRAIN_MEAN = np.array([0.30, 0.15, 0.05, 0.00, 0.00, 0.00, 0.00])


def curve_frame(test_mean=TEST_MEAN, seeds=3, jitter=0.005, **extra) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        for n, test, train in zip(WIDTHS, test_mean, TRAIN_MEAN):
            rows.append({"n_params": n, "seed": seed, "test_error": test + jitter * rng.normal(), "train_error": train, **extra})
    return pd.DataFrame(rows)


def test_classic_curve_is_double_descent_with_peak_at_the_threshold():
    result = detect_double_descent(curve_frame(), label="clean")
    assert result.double_descent
    assert result.peak_x == 800 and result.threshold_x == 800 and result.peak_near_threshold
    assert result.peak_height == pytest.approx(0.45, abs=0.01)
    assert result.rise_left == pytest.approx(0.45 - 0.35, abs=0.015)
    assert result.rise_right == pytest.approx(0.45 - 0.28, abs=0.015)
    assert list(result.curve["x"]) == list(WIDTHS) and (result.curve["n_seeds"] == 3).all()
    lo, hi = result.ci["peak_height"]
    assert lo < result.peak_height < hi
    assert result.predict(800) == pytest.approx(result.peak_height)
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["double_descent"] is True and payload["rule"] == stated_rule("Welch", 0.05)
    assert payload["rule"].startswith(RULE) and "one-sided t-test" in payload["rule"]
    assert result.test == "Welch" and result.p_value < 0.01 and payload["p_value"] == result.p_value
    assert "YES" in result.summary() and "threshold n_params=800" in result.summary()


def test_monotone_curve_is_not_double_descent():
    result = detect_double_descent(curve_frame(np.linspace(0.5, 0.2, len(WIDTHS)), jitter=0.0))
    assert not result.double_descent and result.peak_x is None and result.peak_near_threshold is None


def test_a_peak_carried_by_one_seed_is_not_called():
    frame = curve_frame(jitter=0.0)
    at_peak = frame["n_params"] == 800
    frame.loc[at_peak, "test_error"] = [0.60, 0.40, 0.33]  # mean 0.443, but one seed is below the left minimum 0.35
    result = detect_double_descent(frame)
    assert result.peak_x == 800 and not result.double_descent


def test_a_peak_must_rise_above_both_sides_by_min_rise():
    small = np.array([0.40, 0.35, 0.352, 0.353, 0.351, 0.30, 0.28])
    assert not detect_double_descent(curve_frame(small, jitter=0.0), min_rise=0.05).double_descent
    assert detect_double_descent(curve_frame(small, jitter=0.0), min_rise=0.001).double_descent


def test_nan_rows_are_dropped_and_too_few_points_are_refused():
    frame = curve_frame()
    frame.loc[frame["n_params"] == 6400, "test_error"] = np.nan
    result = detect_double_descent(frame)
    assert 6400 not in set(result.curve["x"]) and result.double_descent
    with pytest.raises(FitError, match="at least 3 distinct"):
        detect_double_descent(curve_frame().query("n_params < 200"))
    with pytest.raises(FitError, match="missing"):
        detect_double_descent(curve_frame(), y="nope")


def test_one_curve_per_data_size_and_label_noise():
    frame = pd.concat(
        [curve_frame(n_samples=1000, label_noise=0.2), curve_frame(TEST_MEAN[::-1] * 0 + 0.3, n_samples=1000, label_noise=0.0)]
    )
    results, skipped = double_descent_curves(frame, "n_params", ("n_samples", "label_noise"))
    assert not skipped
    verdicts = {r.label: r.double_descent for r in results}
    assert verdicts == {
        "n_params curve n_samples=1000,label_noise=0.0": False,
        "n_params curve n_samples=1000,label_noise=0.2": True,
    }


def test_epoch_wise_curve_from_a_history_frame():
    epochs = np.arange(1, 31)
    test = 0.5 - 0.01 * epochs + 0.12 * np.exp(-0.5 * ((epochs - 15) / 2.5) ** 2)  # a bump at epoch 15
    history = pd.DataFrame(
        {"epoch": np.tile(epochs, 2), "seed": np.repeat([0, 1], 30), "test_error": np.tile(test, 2), "train_error": 0.5, "n_params": 10}
    )
    [result], _ = double_descent_curves(history, "epoch", ("n_params",))
    assert result.double_descent and abs(result.peak_x - 15) <= 1 and result.threshold_x is None


def test_sweep_fits_refuse_all_failed_or_all_nan_trials():
    with pytest.raises(FitError, match="no finished trials"):
        fit_trials(pd.DataFrame(columns=["n_params", "n_samples", "test_error"]))
    frame = curve_frame(n_samples=1000, train_flops=1.0)
    frame["test_error"] = np.nan
    with pytest.raises(FitError, match="NaN or infinite"):
        fit_trials(frame)


def test_sample_wise_threshold_is_the_largest_data_size_that_is_still_fitted():
    sizes = np.array([50, 100, 200, 400, 800])
    frame = pd.DataFrame(
        {"n_samples": sizes, "test_error": [0.3, 0.5, 0.9, 0.4, 0.2], "train_error": [0.0, 0.0, 0.0, 0.1, 0.2]}
    )
    result = detect_double_descent(frame, x="n_samples", threshold="last")
    assert result.threshold_x == 200 and result.peak_x == 200 and result.double_descent


def seed_offset_frame(seeds: int, peak: float, offset_std: float = 0.05) -> pd.DataFrame:
    """A curve whose seeds each carry one offset at every width (as seeds that share noisy labels do),
    plus a little independent noise; the peak at 800 rises `peak` above the left minimum."""
    rng = np.random.default_rng(1)
    offsets = offset_std * rng.normal(size=seeds)
    shape = np.array([0.40, 0.35, 0.36, 0.35 + peak, 0.33, 0.30, 0.28])
    rows = []
    for seed, offset in enumerate(offsets):
        for n, test, train in zip(WIDTHS, shape, TRAIN_MEAN):
            rows.append({"n_params": n, "seed": seed, "test_error": test + offset + 0.002 * rng.normal(), "train_error": train})
    return pd.DataFrame(rows)


def test_pairing_by_seed_removes_the_seeds_shared_luck():
    frame = seed_offset_frame(seeds=5, peak=0.03)
    paired = detect_double_descent(frame, paired=True, min_rise=0.01)
    welch = detect_double_descent(frame, paired=False, min_rise=0.01)
    assert paired.peak_x == welch.peak_x == 800
    # Seed offsets (std 0.05) swamp a 0.03 rise between seeds, but cancel within a seed.
    assert paired.test == "paired by seed" and paired.p_value < 0.001
    assert welch.test == "Welch" and welch.p_value > 0.05
    assert paired.p_value == max(paired.p_left, paired.p_right)
    assert "paired by seed" in paired.rule and "Welch" in welch.rule
    assert not welch.double_descent  # the test is part of the verdict
    # With small seed offsets the rise rule holds too, and the paired verdict is double descent.
    assert detect_double_descent(seed_offset_frame(seeds=5, peak=0.03, offset_std=0.003), paired=True, min_rise=0.01).double_descent


def test_fewer_than_three_seeds_give_no_p_value_and_the_rise_rule_alone():
    result = detect_double_descent(curve_frame(seeds=2))
    assert result.p_value is None and result.test is None and result.double_descent
    assert result.rule == RULE
    assert "seed-level test" not in result.summary()


def test_a_peak_carried_by_one_seed_passes_the_rise_rule_but_not_the_test():
    frame = curve_frame(jitter=0.0)
    frame.loc[frame["n_params"] == 800, "test_error"] = [0.36, 0.37, 0.50]  # every seed above 0.35, mean 0.41
    result = detect_double_descent(frame, paired=True)
    assert result.peak_x == 800 and result.rise_left == pytest.approx(0.06)
    # Paired differences from the left minimum (0.35 for every seed): 0.01, 0.02, 0.15; t = 1.33 on 2 df.
    assert result.p_left == pytest.approx(0.157, abs=0.01) and result.p_value == result.p_left
    assert not result.double_descent
    assert detect_double_descent(frame, paired=True, alpha=0.2).double_descent  # the rise rule alone holds


def test_split_by_gives_each_weight_decay_its_own_curve_where_pooling_hides_the_peak():
    """Weight decay as an axis, as examples/mnist1d_weight_decay.yaml sweeps it: the unregularized
    curve peaks at the threshold, the regularized one falls with width and never interpolates."""
    regularized = np.array([0.45, 0.40, 0.36, 0.33, 0.31, 0.30, 0.29])
    peaked = curve_frame(n_samples=1000, train_flops=1.0, weight_decay=0.0)
    flat = curve_frame(regularized, n_samples=1000, train_flops=1.0, weight_decay=0.008).assign(train_error=0.35)
    frame = pd.concat([peaked, flat], ignore_index=True)
    frame["train_flops"] = frame["n_params"] * 6e3
    columns = SweepColumns(hyper=("weight_decay",))

    pooled = fit_trials(frame, n_boot=0, columns=columns)
    assert [c.double_descent for c in pooled.double_descent] == [False]
    assert any("`--split-by weight_decay` each value apart" in n for n in pooled.notes)

    split = fit_trials(frame, n_boot=0, columns=columns, split_by=["weight_decay"])
    verdicts = {dict(c.group)["weight_decay"]: c for c in split.double_descent}
    assert set(verdicts) == {0.0, 0.008}
    assert verdicts[0.0].double_descent and verdicts[0.0].peak_x == 800 and verdicts[0.0].threshold_x == 800
    assert not verdicts[0.008].double_descent and verdicts[0.008].threshold_x is None
    assert not any("weight_decay" in n for n in split.notes)  # nothing pooled any more
    assert split.split_by == ("weight_decay",) and "apart per weight_decay" in split.heading
    assert json.loads(json.dumps(split.to_dict()))["split_by"] == ["weight_decay"]
    laws = [f for f in split.power_laws if f.x_name == "n_params"]
    assert sorted(dict(f.group)["weight_decay"] for f in laws) == [0.0, 0.008]  # a law per value too
    assert any("the fits are split (weight_decay in [0.0, 0.008])" in s for s in split.skipped)  # no joint law across them
    with pytest.raises(FitError, match=r"split_by: columns \['lr'\] missing"):
        fit_trials(frame, n_boot=0, columns=columns, split_by=["lr"])
