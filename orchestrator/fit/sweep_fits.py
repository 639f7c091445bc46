"""Every fit that a sweep's results support, in one call: what `scalesweep fit` prints and logs.

Each fit is attempted only where the data can carry it; a fit that cannot be made is listed in
`skipped` with the reason, never silently replaced by a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.fit.bootstrap import DEFAULT_N_BOOT
from orchestrator.fit.double_descent import DEFAULT_MIN_RISE, DEFAULT_TRAIN_TOL, DoubleDescentResult, double_descent_curves
from orchestrator.fit.extrapolation import ExtrapolationResult, held_out_extrapolation
from orchestrator.fit.isoflop import IsoFLOPFit, fit_isoflop
from orchestrator.fit.joint import JointFit, fit_joint_law
from orchestrator.fit.power_law import FitError, PowerLawFit, fit_power_law

# Columns that index a curve besides the size axes; a double-descent curve is per data size and noise.
NOISE_COLUMNS = ("label_noise", "noise_std")
# Config fields that name a trial's compute budget, for sweeps designed as IsoFLOP profiles.
BUDGET_COLUMNS = ("compute_budget", "flops_budget")
# Per-axis power laws bootstrap a least-squares fit per resample; capped so `fit` on a large grid stays quick.
POWER_LAW_MAX_BOOT = 200


@dataclass(frozen=True)
class SweepFits:
    """The fits of one sweep.

    power_laws: y against N per data size, against D per model size, and against C on the
      compute frontier (PowerLawFit each; label says which).
    joint: L(N, D) (approach 3) or None. isoflop: IsoFLOP profiles (approach 2) or None.
    extrapolation: held-out extrapolation error of the law or None.
    double_descent / sample_wise / epoch_wise: DoubleDescentResult per curve.
    skipped: one message per fit that was not made, with the reason. notes: data that was dropped.
    """

    metric: str
    power_laws: tuple[PowerLawFit, ...] = ()
    joint: JointFit | None = None
    isoflop: IsoFLOPFit | None = None
    extrapolation: ExtrapolationResult | None = None
    double_descent: tuple[DoubleDescentResult, ...] = ()
    sample_wise: tuple[DoubleDescentResult, ...] = ()
    epoch_wise: tuple[DoubleDescentResult, ...] = ()
    skipped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def n_fits(self) -> int:
        singles = [f for f in (self.joint, self.isoflop, self.extrapolation) if f is not None]
        return len(self.power_laws) + len(singles) + len(self.double_descent) + len(self.sample_wise) + len(self.epoch_wise)

    def results(self) -> list:
        """Every result object, in print order."""
        singles = [f for f in (self.joint, self.isoflop, self.extrapolation) if f is not None]
        return [*self.power_laws, *singles, *self.double_descent, *self.sample_wise, *self.epoch_wise]

    def summary(self) -> str:
        parts = [r.summary() for r in self.results()]
        parts += [f"note: {n}" for n in self.notes]
        parts += [f"not fitted: {s}" for s in self.skipped]
        return "\n\n".join(parts)

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "fits": [f.to_dict() for f in self.power_laws],  # the per-axis laws, as earlier versions logged them
            "joint": self.joint.to_dict() if self.joint else None,
            "isoflop": self.isoflop.to_dict() if self.isoflop else None,
            "extrapolation": self.extrapolation.to_dict() if self.extrapolation else None,
            "double_descent": [r.to_dict() for r in self.double_descent],
            "sample_wise": [r.to_dict() for r in self.sample_wise],
            "epoch_wise": [r.to_dict() for r in self.epoch_wise],
            "skipped": list(self.skipped),
            "notes": list(self.notes),
        }


def per_axis_power_laws(
    trials: pd.DataFrame, metric: str, size_col: str, group_col: str, n_boot: int
) -> tuple[list[PowerLawFit], list[str]]:
    """One power law of `metric` against `size_col` per value of `group_col`; seeds are separate points."""
    fits, skipped = [], []
    for group, rows in trials.groupby(group_col, sort=True):
        label = f"{group_col}={group}"
        try:
            fits.append(fit_power_law(rows[size_col], rows[metric], n_boot=n_boot, x_name=size_col, y_name=metric, label=label))
        except FitError as err:
            skipped.append(str(err))
    return fits, skipped


def compute_frontier(trials: pd.DataFrame, metric: str, flops_col: str = "train_flops") -> pd.DataFrame:
    """The trials no cheaper trial beats: the lowest `metric` reached at or below each compute."""
    ordered = trials.sort_values([flops_col, metric])
    best = ordered[metric].cummin()
    return ordered[ordered[metric] <= best].drop_duplicates(flops_col)


def _curve_groups(frame: pd.DataFrame, *cols: str) -> tuple[str, ...]:
    return tuple(c for c in (*cols, *NOISE_COLUMNS) if c in frame)


def fit_trials(
    trials: pd.DataFrame,
    history: pd.DataFrame | None = None,
    metric: str = "test_error",
    n_boot: int = DEFAULT_N_BOOT,
    train_tol: float = DEFAULT_TRAIN_TOL,
    min_rise: float = DEFAULT_MIN_RISE,
) -> SweepFits:
    """Every applicable fit of a results frame (one row per finished trial; `history` per trial x epoch).

    Raises FitError when nothing can be fitted at all (no trials, or `metric` missing or never finite).
    """
    if trials.empty:
        raise FitError("no finished trials to fit (did every trial fail?)")
    if metric not in trials:
        raise FitError(f"no trial reported {metric!r}; columns: {sorted(trials.columns)}")
    notes, skipped = [], []
    finite = np.isfinite(pd.to_numeric(trials[metric], errors="coerce"))
    if not finite.any():
        raise FitError(f"every trial's {metric!r} is NaN or infinite; nothing to fit")
    if (~finite).any():
        notes.append(f"dropped {int((~finite).sum())} trials whose {metric} is not finite")
    trials = trials[finite].copy()
    trials[metric] = trials[metric].astype(float)
    power_boot = min(n_boot, POWER_LAW_MAX_BOOT)

    power_laws = []
    for size_col, group_col in (("n_params", "n_samples"), ("n_samples", "n_params")):
        if trials[size_col].nunique() >= 3:
            fits, why = per_axis_power_laws(trials, metric, size_col, group_col, power_boot)
            power_laws += fits
            skipped += why
        else:
            skipped.append(f"{metric} vs {size_col}: only {trials[size_col].nunique()} distinct value(s)")
    frontier = compute_frontier(trials, metric)
    try:
        power_laws.append(
            fit_power_law(frontier["train_flops"], frontier[metric], n_boot=power_boot, x_name="train_flops", y_name=metric, label="compute frontier")
        )
    except FitError as err:
        skipped.append(f"compute frontier: {err}")

    def attempt(what: str, make):
        try:
            return make()
        except FitError as err:
            skipped.append(f"{what}: {err}")
            return None

    joint = attempt("joint L(N, D)", lambda: fit_joint_law(trials["n_params"], trials["n_samples"], trials[metric], n_boot=n_boot, y_name=metric))
    # A workload that designs IsoFLOP profiles names each trial's budget; otherwise equal FLOPs make one.
    budget_col = next((c for c in BUDGET_COLUMNS if c in trials), None)
    isoflop = attempt(
        "IsoFLOP",
        lambda: fit_isoflop(
            trials["train_flops"],
            trials["n_params"],
            trials["n_samples"],
            trials[metric],
            n_boot=n_boot,
            budgets=trials[budget_col].to_numpy() if budget_col else None,
            y_name=metric,
        ),
    )
    law = "joint" if joint is not None else "power_law"
    extrapolation = attempt(
        "held-out extrapolation",
        lambda: held_out_extrapolation(
            trials if law == "joint" else trials[trials["n_samples"] == trials["n_samples"].max()],
            y=metric,
            threshold_col="train_flops" if law == "joint" else "n_params",
            law=law,
            n_boot=power_boot,
        ),
    )

    detector = {"train_tol": train_tol, "min_rise": min_rise}
    model_wise, why = double_descent_curves(trials, "n_params", _curve_groups(trials, "n_samples"), metric, **detector)
    skipped += [f"double descent: {w}" for w in why]
    sample_wise: list = []
    if trials["n_samples"].nunique() >= 3:
        sample_wise, why = double_descent_curves(
            trials, "n_samples", _curve_groups(trials, "n_params"), metric, threshold="last", **detector
        )
        skipped += [f"sample-wise: {w}" for w in why]
    epoch_wise: list = []
    if history is not None and not history.empty and metric in history and history["epoch"].nunique() >= 3:
        groups = _curve_groups(history, "n_params", "n_samples")
        epoch_wise, why = double_descent_curves(history, "epoch", groups, metric, **detector)
        skipped += [f"epoch-wise: {w}" for w in why]
    return SweepFits(
        metric=metric,
        power_laws=tuple(power_laws),
        joint=joint,
        isoflop=isoflop,
        extrapolation=extrapolation,
        double_descent=tuple(model_wise),
        sample_wise=tuple(sample_wise),
        epoch_wise=tuple(epoch_wise),
        skipped=tuple(skipped),
        notes=tuple(notes),
    )
