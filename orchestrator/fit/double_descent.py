"""Double descent: test error against model size (or epochs, or data size) that falls, peaks, falls again.

The curve is aggregated over seeds (mean, and a Student-t CI of the mean). Two landmarks:

- interpolation threshold: the smallest x whose mean train error is at most `train_tol` (the largest
  x, for the sample-wise view, where more data ends interpolation: `threshold="last"`);
- peak: the interior local maximum of the mean test error with the largest rise above the lowest
  point on *each* side, rise = min(peak - min(left of it), peak - min(right of it)).

Verdict rule (`double_descent`): there is an interior peak whose rise is at least `min_rise` times
the peak's value, and every seed at the peak lies above the lowest mean on both sides. The seed
check is used rather than a CI of the mean because at the threshold itself the error is
heavy-tailed (one seed can be 100x another), which makes a t-interval useless there.

With 3 or more seeds the peak must also beat each side's lowest point in a one-sided t-test (of
ln y, as errors are heavy-tailed at the threshold) at level `alpha`: paired by seed where seeds share their data and noisy labels along the curve (the
same seed at two model sizes saw the same labels, so their difference cancels the labels' luck),
Welch's unequal-variance test otherwise. The p-value is the larger of the two sides' (the peak
must beat both).
The same detector serves the model-wise view (x = parameters), the epoch-wise view (x = epoch) and
the sample-wise view (x = training samples, where a peak means more data hurt).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from orchestrator.fit.bootstrap import DEFAULT_CI_LEVEL
from orchestrator.fit.common import DEFAULT_ALPHA, DEFAULT_MIN_RISE, DEFAULT_TRAIN_TOL, FitError

MIN_CURVE_POINTS = 3
MIN_TEST_SEEDS = 3

RULE = (
    "double descent when an interior local maximum of the seed-mean test error rises above the lowest point "
    "on each side by at least min_rise x its value, and every seed at the peak lies above the lowest mean on both sides"
)
TEST_RULE = (
    "; with 3+ seeds also a one-sided t-test of ln(test error) at the peak against each side's lowest point ({test}) "
    "with p < {alpha:g} on both sides"
)


def stated_rule(test: str | None, alpha: float) -> str:
    """The verdict rule as applied to one curve (with the seed-level test when it ran)."""
    return RULE + (TEST_RULE.format(test=test, alpha=alpha) if test else "")


@dataclass(frozen=True)
class DoubleDescentResult:
    """One curve's landmarks and verdict; plot `curve` directly, no fitting needed.

    curve: one row per x with columns x, mean, lo, hi (Student-t CI of the mean over seeds), std,
      min, max (over seeds), n_seeds, train_mean (mean train error, NaN when not given).
    threshold_x: interpolation threshold (smallest x with train_mean <= train_tol), None if never reached.
    peak_x / peak_height: location and seed-mean test error of the chosen peak, None without an interior peak.
    rise_left / rise_right: peak_height minus the lowest mean on its left / right.
    double_descent: the verdict by `rule`. peak_near_threshold: peak within one grid step of the
      threshold (None when either is missing).
    p_value: the seed-level one-sided test of the peak against both sides (the larger of p_left and
      p_right), None with fewer than 3 seeds or no peak. test: which test ('paired by seed' or 'Welch').
    """

    label: str
    x_name: str
    y_name: str
    curve: pd.DataFrame = field(repr=False)
    threshold_x: float | None
    peak_x: float | None
    peak_height: float | None
    rise_left: float | None
    rise_right: float | None
    double_descent: bool
    peak_near_threshold: bool | None
    train_tol: float
    min_rise: float
    ci_level: float = DEFAULT_CI_LEVEL
    rule: str = RULE
    p_value: float | None = None
    p_left: float | None = None
    p_right: float | None = None
    test: str | None = None
    alpha: float = DEFAULT_ALPHA
    group: tuple[tuple[str, float], ...] = ()

    @property
    def params(self) -> dict[str, float | None]:
        return {
            "threshold_x": self.threshold_x,
            "peak_x": self.peak_x,
            "peak_height": self.peak_height,
            "rise_left": self.rise_left,
            "rise_right": self.rise_right,
            "p_value": self.p_value,
        }

    @property
    def ci(self) -> dict[str, tuple[float, float]]:
        """CI of the seed-mean test error at the peak (the only estimated quantity with one)."""
        if self.peak_x is None:
            return {}
        row = self.curve.loc[self.curve["x"] == self.peak_x].iloc[0]
        return {"peak_height": (float(row["lo"]), float(row["hi"]))}

    def predict(self, x) -> np.ndarray:
        """The seed-mean curve at x, interpolated linearly in log x (a lookup, not a model)."""
        xs, ys = self.curve["x"].to_numpy(float), self.curve["mean"].to_numpy(float)
        return np.interp(np.log(np.asarray(x, dtype=float)), np.log(xs), ys)

    def summary(self) -> str:
        def fmt(v):
            return "-" if v is None else f"{v:.5g}"

        verdict = "YES" if self.double_descent else "no"
        lines = [
            f"double descent of {self.y_name} vs {self.x_name}  [{self.label}]: {verdict}",
            f"  interpolation threshold {self.x_name}={fmt(self.threshold_x)} (train error <= {self.train_tol:g})",
            f"  peak {self.x_name}={fmt(self.peak_x)} height={fmt(self.peak_height)} "
            f"rise left={fmt(self.rise_left)} right={fmt(self.rise_right)}",
        ]
        if self.peak_near_threshold is not None:
            lines.append(f"  peak within one grid step of the threshold: {'yes' if self.peak_near_threshold else 'no'}")
        if self.p_value is not None:
            lines.append(f"  seed-level test ({self.test}): p = {self.p_value:.3g} (left {self.p_left:.3g}, right {self.p_right:.3g})")
        lines.append(f"  points={len(self.curve)} seeds={int(self.curve['n_seeds'].max())} rule: {self.rule}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "kind": "double_descent",
            "label": self.label,
            "group": dict(self.group),
            "x_name": self.x_name,
            "y_name": self.y_name,
            "params": self.params,
            "ci": {k: list(v) for k, v in self.ci.items()},
            "double_descent": self.double_descent,
            "peak_near_threshold": self.peak_near_threshold,
            "train_tol": self.train_tol,
            "min_rise": self.min_rise,
            "ci_level": self.ci_level,
            "rule": self.rule,
            "p_value": self.p_value,
            "p_left": self.p_left,
            "p_right": self.p_right,
            "test": self.test,
            "alpha": self.alpha,
            "curve": {name: [None if v != v else v for v in values.tolist()] for name, values in self.curve.items()},  # NaN: null
        }


CURVE_COLUMNS = ["x", "mean", "lo", "hi", "std", "min", "max", "n_seeds", "train_mean"]


def seed_curves(
    frame: pd.DataFrame, x: str, y: str, train: str | None = None, groups: Sequence[str] = (), ci_level: float = DEFAULT_CI_LEVEL
) -> pd.DataFrame:
    """Mean, std and Student-t CI of the mean of `y` per value of `x` over seeds (rows), per group of
    the `groups` columns, in one pass over the frame; NaN y rows dropped. One row per (group, x)."""
    rows = frame[np.isfinite(frame[y].astype(float))]
    grouped = rows.groupby([*groups, x], sort=True)
    curve = grouped[y].agg(["mean", "std", "min", "max", "count"]).reset_index().rename(columns={x: "x", "count": "n_seeds"})
    curve["std"] = curve["std"].fillna(0.0)
    t = stats.t.ppf(0.5 + ci_level / 2, np.maximum(curve["n_seeds"] - 1, 1))
    half = np.where(curve["n_seeds"] > 1, t * curve["std"] / np.sqrt(curve["n_seeds"]), 0.0)
    curve["lo"], curve["hi"] = curve["mean"] - half, curve["mean"] + half
    curve["train_mean"] = grouped[train].mean().to_numpy(float) if train and train in rows else np.nan
    curve["x"] = curve["x"].astype(float)
    return curve[[*groups, *CURVE_COLUMNS]]


def seed_curve(frame: pd.DataFrame, x: str, y: str, train: str | None = None, ci_level: float = DEFAULT_CI_LEVEL) -> pd.DataFrame:
    """Mean, std and Student-t CI of the mean of `y` per value of `x` over seeds (rows); NaN y rows dropped."""
    return seed_curves(frame, x, y, train, (), ci_level)


def detect_double_descent(
    frame: pd.DataFrame,
    x: str = "n_params",
    y: str = "test_error",
    train: str | None = "train_error",
    train_tol: float = DEFAULT_TRAIN_TOL,
    min_rise: float = DEFAULT_MIN_RISE,
    ci_level: float = DEFAULT_CI_LEVEL,
    label: str = "",
    threshold: str = "first",
    seed: str = "seed",
    paired: bool = False,
    alpha: float = DEFAULT_ALPHA,
    curve: pd.DataFrame | None = None,
) -> DoubleDescentResult:
    """Landmarks and verdict of one curve; `frame` has one row per (x, seed). See the module docstring.

    threshold: 'first' takes the smallest interpolating x (models, epochs), 'last' the largest (samples).
    seed: the column naming a row's seed. paired: seeds share data and noisy labels along x, so the
    seed-level test pairs them (Welch's test otherwise, or when there is no seed column). curve: this
    frame's `seed_curve`, where the caller computed it for many curves at once.
    """
    if threshold not in ("first", "last"):
        raise FitError(f"{label or y}: threshold must be 'first' or 'last', got {threshold!r}")
    missing = [c for c in (x, y) if c not in frame]
    if missing:
        raise FitError(f"{label or y}: columns {missing} missing; have {sorted(frame.columns)}")
    curve = seed_curve(frame, x, y, train, ci_level) if curve is None else curve.reset_index(drop=True)[CURVE_COLUMNS]
    if len(curve) < MIN_CURVE_POINTS:
        raise FitError(
            f"{label or y}: need at least {MIN_CURVE_POINTS} distinct {x} values with finite {y} to look for a peak, got {len(curve)}"
        )
    xs, mean, seed_min = curve["x"].to_numpy(), curve["mean"].to_numpy(), curve["min"].to_numpy()
    reached = np.flatnonzero(curve["train_mean"].to_numpy() <= train_tol)
    threshold_i = int(reached[0 if threshold == "first" else -1]) if len(reached) else None

    best_i, best_rise, rises, sides = None, -np.inf, (None, None), np.nan
    for i in range(1, len(mean) - 1):
        if mean[i] < mean[i - 1] or mean[i] < mean[i + 1]:
            continue
        left, right = mean[i] - mean[:i].min(), mean[i] - mean[i + 1 :].min()
        if min(left, right) > best_rise:
            best_i, best_rise, rises = i, min(left, right), (float(left), float(right))
            sides = max(mean[:i].min(), mean[i + 1 :].min())
    found = best_i is not None and best_rise > 0
    verdict = bool(found and best_rise >= min_rise * abs(mean[best_i]) and seed_min[best_i] > sides)
    test, p_left, p_right = None, None, None
    if found:
        left_i, right_i = int(np.argmin(mean[:best_i])), best_i + 1 + int(np.argmin(mean[best_i + 1 :]))
        rows = frame[np.isfinite(frame[y].astype(float))]
        pair = paired and seed in rows
        at = {i: rows[rows[x].astype(float) == xs[i]] for i in (best_i, left_i, right_i)}
        test, p_left = seed_test(at[best_i], at[left_i], y, seed if pair else None)
        p_right = seed_test(at[best_i], at[right_i], y, seed if pair else None)[1]
    p_value = max(p_left, p_right) if p_left is not None and p_right is not None else None
    if p_value is None:
        test = None
    else:
        verdict = verdict and p_value < alpha
    near = None
    if found and threshold_i is not None:
        near = abs(best_i - threshold_i) <= 1
    return DoubleDescentResult(
        label=label,
        x_name=x,
        y_name=y,
        curve=curve,
        threshold_x=float(xs[threshold_i]) if threshold_i is not None else None,
        peak_x=float(xs[best_i]) if found else None,
        peak_height=float(mean[best_i]) if found else None,
        rise_left=rises[0] if found else None,
        rise_right=rises[1] if found else None,
        double_descent=verdict,
        peak_near_threshold=near,
        train_tol=train_tol,
        min_rise=min_rise,
        ci_level=ci_level,
        rule=stated_rule(test, alpha),
        p_value=p_value,
        p_left=p_left,
        p_right=p_right,
        test=test,
        alpha=alpha,
    )


def seed_test(peak: pd.DataFrame, side: pd.DataFrame, y: str, seed: str | None) -> tuple[str | None, float | None]:
    """(test name, one-sided p) that `y` at the peak exceeds `y` at a side; (None, None) with < 3 seeds.

    With `seed`, rows are paired by their seed (the seeds both have); otherwise Welch's t-test. The
    test compares ln y where every value is positive: at the interpolation threshold the error is
    heavy-tailed (one seed 100x another), which a t-test on y itself cannot see past.
    """
    values = pd.concat([peak[y], side[y]]).to_numpy(float)
    scale = np.log if np.all(values > 0) else (lambda v: v)
    if seed is not None:
        per_seed = [rows.assign(**{y: scale(rows[y].to_numpy(float))}).groupby(seed, as_index=False)[y].mean() for rows in (peak, side)]
        both = per_seed[0].merge(per_seed[1], on=seed, suffixes=("_peak", "_side"))
        if len(both) < MIN_TEST_SEEDS:
            return None, None
        diff = both[f"{y}_peak"].to_numpy(float) - both[f"{y}_side"].to_numpy(float)
        if np.ptp(diff) == 0:  # no spread: the t statistic is +-inf or undefined
            return "paired by seed", 0.0 if diff[0] > 0 else 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return "paired by seed", float(stats.ttest_rel(diff, np.zeros_like(diff), alternative="greater").pvalue)
    a, b = scale(peak[y].to_numpy(float)), scale(side[y].to_numpy(float))
    if min(len(a), len(b)) < MIN_TEST_SEEDS:
        return None, None
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return "Welch", 0.0 if a[0] > b[0] else 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return "Welch", float(stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)


def _plain(value):
    """A group key as a plain Python number (or string), so it prints and serialises as itself."""
    return value.item() if isinstance(value, np.generic) else value


def _group_label(group) -> str:
    return ",".join(f"{n}={format_value(k)}" for n, k in group)


def format_value(value) -> str:
    """A group value as a label shows it: as written where short, long floats to 6 significant digits."""
    text = str(value)
    return f"{value:.6g}" if isinstance(value, float) and len(text) > 8 else text


def double_descent_curves(
    frame: pd.DataFrame,
    x: str = "n_params",
    group_cols: tuple[str, ...] = ("n_samples", "label_noise"),
    y: str = "test_error",
    train: str | None = "train_error",
    **detector,
) -> tuple[list[DoubleDescentResult], list[str]]:
    """One detection per group (e.g. per data size and label noise); seeds are the rows within a group.

    Model-wise: x='n_params', groups ('n_samples', 'label_noise'). Sample-wise: x='n_samples',
    groups ('n_params', 'label_noise'). Epoch-wise: a history frame, x='epoch', groups the trial's
    other axes. Returns the results and one message per group that could not be analysed.
    """
    if frame.empty or y not in frame:
        return [], [f"double descent: no rows with {y!r}"]
    names = [c for c in group_cols if c in frame and c != x]
    groups = frame.groupby(names, sort=True) if names else [((), frame)]
    ci_level = detector.get("ci_level", DEFAULT_CI_LEVEL)
    curves = seed_curves(frame, x, y, train, names, ci_level)
    curve_of = {k if isinstance(k, tuple) else (k,): c for k, c in curves.groupby(names, sort=True)} if names else {(): curves}
    results, skipped, short = [], [], []
    for keys, rows in groups:
        keys = keys if isinstance(keys, tuple) else (keys,)
        group = tuple(zip(names, (_plain(k) for k in keys)))
        label = f"{x} curve " + (_group_label(group) if names else "all")
        if rows[x][np.isfinite(rows[y].astype(float))].nunique() < MIN_CURVE_POINTS:
            short.append(label)
            continue
        try:
            result = detect_double_descent(rows, x, y, train, label=label, curve=curve_of.get(keys), **detector)
            results.append(replace(result, group=group))
        except FitError as err:
            skipped.append(str(err))
    if short:
        shown = ", ".join(short[:3]) + (", ..." if len(short) > 3 else "")
        skipped.append(f"{len(short)} {x} curve(s) with fewer than {MIN_CURVE_POINTS} distinct {x} values with finite {y}: {shown}")
    return results, skipped
