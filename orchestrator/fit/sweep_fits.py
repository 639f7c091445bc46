"""Every fit that a sweep's results support, in one call: what `scalesweep fit` prints and logs, and
what the report draws. Computed once per sweep; nothing downstream fits again.

Each fit is attempted only where the data can carry it; a fit that cannot be made is listed in
`skipped` with the reason, and a fit the data do not identify says so (orchestrator.fit.guards)
instead of giving numbers. What the columns mean (label noise, budgets, what N counts) comes from
the workload as `SweepColumns`, so nothing here knows any one workload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from orchestrator.fit import tables
from orchestrator.fit.allocation import ComputeOptimalFit
from orchestrator.fit.bootstrap import DEFAULT_N_BOOT, bootstrap_jobs
from orchestrator.fit.double_descent import DEFAULT_MIN_RISE, DEFAULT_TRAIN_TOL, DoubleDescentResult, double_descent_curves, format_value
from orchestrator.fit.envelope import Envelope, best_per_cell
from orchestrator.fit.extrapolation import ExtrapolationResult, held_out_extrapolation
from orchestrator.fit.isoflop import IsoFLOPFit, fit_isoflop
from orchestrator.fit.joint import JointFit, fit_joint_law
from orchestrator.fit.power_law import FitError, PowerLawFit, fit_power_law

SCHEMA = "scalesweep.fits/2"
# Per-axis power laws bootstrap a least-squares fit per resample; capped so `fit` on a large grid stays quick.
POWER_LAW_MAX_BOOT = 200
N_PARAMS_CONVENTIONS = {"non_embedding": "n_params", "with_embeddings": "n_params_with_embeddings"}


@dataclass(frozen=True)
class SweepColumns:
    """What a sweep's result columns mean, as its workload declares them (see workloads.api.Workload).

    noise: config columns that set label noise (a curve and a law per value). budgets: columns naming
    a trial's compute budget (FLOPs), first present wins. n_params_meaning: what `n_params` counts.
    paired_seeds: trials of one seed share data and noisy labels across model sizes. seed: the seed
    column. hyper: the sweep's other axes (learning rate, batch size...), pooled unless enveloped.
    """

    noise: tuple[str, ...] = ()
    budgets: tuple[str, ...] = ("compute_budget",)
    n_params_meaning: str = "parameters"
    paired_seeds: bool = False
    seed: str = "seed"
    hyper: tuple[str, ...] = ()

    @classmethod
    def of(cls, workload, axes: Sequence[str] = ()) -> SweepColumns:
        """The columns of a sweep of `workload` (a Workload instance or class) over `axes`."""
        noise = tuple(getattr(workload, "noise_columns", ()))
        budgets = ("compute_budget", *getattr(workload, "budget_columns", ()))
        sizes = {getattr(workload, "model_size_param", None), getattr(workload, "data_size_param", None)}
        hyper = tuple(a for a in axes if a not in sizes | set(noise) | set(budgets) | {"seed"})
        return cls(noise, budgets, getattr(workload, "n_params_meaning", "parameters"), bool(getattr(workload, "paired_seeds", False)), "seed", hyper)


@dataclass(frozen=True)
class SweepFits:
    """The fits of one sweep.

    metric: the fitted metric. n_params: which parameter count N is ('non_embedding', the column
      n_params, or 'with_embeddings'); n_params_meaning says what it counts.
    envelope: which hyperparameter setting each size kept (None: every trial was used).
    split_by: the axes fitted apart (a law and a curve per value).
    power_laws: y against N per data size, against D per model size, and against C on the
      compute frontier (PowerLawFit each; label and group say which).
    joint: L(N, D) (approach 3) or None. isoflop: IsoFLOP profiles (approach 2) or None.
    extrapolation: held-out extrapolation error of the law or None.
    double_descent / sample_wise / epoch_wise: DoubleDescentResult per curve.
    skipped: one message per fit that was not made, with the reason. notes: data that was dropped
      or pooled. train_tol / min_rise: the double-descent detector's settings.
    """

    metric: str
    n_params: str = "non_embedding"
    n_params_meaning: str = "parameters"
    envelope: Envelope | None = None
    split_by: tuple[str, ...] = ()
    power_laws: tuple[PowerLawFit, ...] = ()
    joint: JointFit | None = None
    isoflop: IsoFLOPFit | None = None
    extrapolation: ExtrapolationResult | None = None
    double_descent: tuple[DoubleDescentResult, ...] = ()
    sample_wise: tuple[DoubleDescentResult, ...] = ()
    epoch_wise: tuple[DoubleDescentResult, ...] = ()
    skipped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    train_tol: float = DEFAULT_TRAIN_TOL
    min_rise: float = DEFAULT_MIN_RISE

    @property
    def n_fits(self) -> int:
        return len(self.results())

    def results(self) -> list:
        """Every result object, in print order."""
        singles = [f for f in (self.joint, self.isoflop, self.extrapolation) if f is not None]
        return [*self.power_laws, *singles, *self.double_descent, *self.sample_wise, *self.epoch_wise]

    @property
    def laws(self) -> list:
        """The scaling-law results (not the double-descent curves), in print order."""
        return [f for f in (*self.power_laws, self.joint, self.isoflop, self.extrapolation) if f is not None]

    @property
    def curves(self) -> list[DoubleDescentResult]:
        return [*self.double_descent, *self.sample_wise, *self.epoch_wise]

    def allocations(self) -> list[ComputeOptimalFit]:
        """The compute-optimal allocations that were computed (approach 3, then 2), identified or not."""
        found = [self.joint.allocation if self.joint is not None else None, self.isoflop.allocation if self.isoflop is not None else None]
        return [a for a in found if a is not None]

    @property
    def n_params_column(self) -> str:
        return N_PARAMS_CONVENTIONS[self.n_params]

    @property
    def heading(self) -> str:
        text = f"fits of {self.metric}; N = {self.n_params_column} ({self.n_params_meaning})"
        if self.envelope is not None:
            text += f"; best {', '.join(self.envelope.axes)} per size"
        if self.split_by:
            text += f"; apart per {', '.join(self.split_by)}"
        return text

    def summary(self, verbose: bool = True) -> str:
        """Every result's full block (verbose), or the tables `scalesweep fit` prints."""
        if not verbose:
            return "\n".join(tables.sweep_tables(self))
        parts = [self.heading]
        if self.envelope is not None:
            parts.append(self.envelope.summary())
        parts += [r.summary() for r in self.results()]
        if len(self.allocations()) == 2:
            parts.append("\n".join(tables.allocation_table(self.allocations())))
        parts += [f"note: {n}" for n in self.notes]
        parts += [f"not fitted: {s}" for s in self.skipped]
        return "\n\n".join(parts)

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "metric": self.metric,
            "n_params": {"convention": self.n_params, "column": self.n_params_column, "counts": self.n_params_meaning},
            "envelope": self.envelope.to_dict() if self.envelope is not None else None,
            "split_by": list(self.split_by),
            "power_laws": [f.to_dict() for f in self.power_laws],
            "joint": self.joint.to_dict() if self.joint else None,
            "isoflop": self.isoflop.to_dict() if self.isoflop else None,
            "allocations": [a.to_dict() for a in self.allocations()],
            "extrapolation": self.extrapolation.to_dict() if self.extrapolation else None,
            "double_descent": [r.to_dict() for r in self.double_descent],
            "sample_wise": [r.to_dict() for r in self.sample_wise],
            "epoch_wise": [r.to_dict() for r in self.epoch_wise],
            "train_tol": self.train_tol,
            "min_rise": self.min_rise,
            "skipped": list(self.skipped),
            "notes": list(self.notes),
        }


def _group_of(keys, names) -> tuple[tuple[str, float], ...]:
    keys = keys if isinstance(keys, tuple) else (keys,)
    return tuple((n, k.item() if isinstance(k, np.generic) else k) for n, k in zip(names, keys))


def _group_label(group) -> str:
    return ",".join(f"{n}={format_value(v)}" for n, v in group)


def per_axis_power_laws(
    trials: pd.DataFrame, metric: str, size_col: str, group_cols: Sequence[str] | str, n_boot: int
) -> tuple[list[PowerLawFit], list[str]]:
    """One power law of `metric` against `size_col` per value of `group_cols`; seeds are separate points.

    Groups with fewer than 3 distinct sizes are not fitted: one message says how many there were.
    """
    names = [group_cols] if isinstance(group_cols, str) else [c for c in group_cols if c in trials]
    fits, too_small = [], []
    for keys, rows in trials.groupby(names, sort=True) if names else [((), trials)]:
        group = _group_of(keys, names)
        label = _group_label(group) or "all"
        try:
            fits.append(fit_power_law(rows[size_col], rows[metric], n_boot=n_boot, x_name=size_col, y_name=metric, label=label, group=group))
        except FitError as err:
            too_small.append(f"{label} ({err})" if "distinct" not in str(err) else label)
    return fits, [_too_small(f"{metric} vs {size_col}", size_col, too_small)] if too_small else []


def _too_small(what: str, size_col: str, groups: list[str]) -> str:
    """One 'not fitted' line for the groups of a law with fewer than 3 distinct sizes."""
    shown = ", ".join(groups[:4]) + (", ..." if len(groups) > 4 else "")
    return f"{what}: {len(groups)} group(s) with fewer than 3 distinct {size_col}: {shown}"


def compute_frontier(trials: pd.DataFrame, metric: str, flops_col: str = "train_flops") -> pd.DataFrame:
    """The trials no cheaper trial beats: the lowest `metric` reached at or below each compute."""
    ordered = trials.sort_values([flops_col, metric])
    best = ordered[metric].cummin()
    return ordered[ordered[metric] <= best].drop_duplicates(flops_col)


def _varying(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c in frame and frame[c].nunique(dropna=False) > 1]


def fit_trials(
    trials: pd.DataFrame,
    history: pd.DataFrame | None = None,
    metric: str = "test_error",
    n_boot: int = DEFAULT_N_BOOT,
    train_tol: float = DEFAULT_TRAIN_TOL,
    min_rise: float = DEFAULT_MIN_RISE,
    columns: SweepColumns = SweepColumns(),
    envelope: Sequence[str] = (),
    n_params: str = "non_embedding",
    split_by: Sequence[str] = (),
) -> SweepFits:
    """Every applicable fit of a results frame (one row per finished trial; `history` per trial x epoch).

    columns: what the columns mean (from the workload). envelope: hyperparameter columns to take the
    best setting of per size before fitting. split_by: columns fitted apart, a law and a curve per
    value (as label noise is). n_params: 'non_embedding' fits N = n_params,
    'with_embeddings' N = n_params_with_embeddings. Raises FitError when nothing can be fitted at all
    (no trials, or `metric` missing or never finite) or an option names a column the trials lack.
    """
    if trials.empty:
        raise FitError("no finished trials to fit (did every trial fail?)")
    if metric not in trials:
        raise FitError(f"no trial reported {metric!r}; columns: {sorted(trials.columns)}")
    if n_params not in N_PARAMS_CONVENTIONS:
        raise FitError(f"n_params: {n_params!r} is not one of {', '.join(N_PARAMS_CONVENTIONS)}")
    missing = [c for c in split_by if c not in trials]
    if missing:
        raise FitError(f"split_by: columns {missing} missing; have {sorted(trials.columns)}")
    notes, skipped = [], []
    finite = np.isfinite(pd.to_numeric(trials[metric], errors="coerce"))
    if not finite.any():
        raise FitError(f"every trial's {metric!r} is NaN or infinite; nothing to fit")
    if (~finite).any():
        notes.append(f"dropped {int((~finite).sum())} trials whose {metric} is not finite")
    trials = trials[finite].copy()
    trials[metric] = trials[metric].astype(float)
    n_params_meaning = columns.n_params_meaning
    if n_params == "with_embeddings":
        column = N_PARAMS_CONVENTIONS[n_params]
        if column not in trials or trials[column].isna().any():
            raise FitError(f"n_params: with_embeddings needs the column {column}, which this sweep's trials lack (its workload counts N one way)")
        trials["n_params"] = pd.to_numeric(trials[column])
        n_params_meaning = "parameters including embeddings"
        if history is not None and column in history:
            history = history.assign(n_params=pd.to_numeric(history[column]))
    noise = _varying(trials, columns.noise)
    split = [c for c in _varying(trials, split_by) if c not in noise]
    groups = [*noise, *split]  # each value of these is a law and a curve of its own
    budget_col = next((c for c in columns.budgets if c in trials and trials[c].notna().all()), None)

    chosen = None
    if envelope:
        cells = ["n_params", budget_col or "n_samples", *groups]
        trials, chosen = best_per_cell(trials, envelope, metric, cells)
        if history is not None and "trial_key" in history and "trial_key" in trials:
            history = history[history["trial_key"].isin(trials["trial_key"])]
    pooled = [a for a in _varying(trials, columns.hyper) if a not in envelope and a not in split]
    if pooled:
        values = "; ".join(f"{a}: {trials[a].nunique()} values" for a in pooled)
        notes.append(
            f"the fits pool trials that differ in {values}; `--envelope {pooled[0]}` fits the best per size instead,"
            f" `--split-by {pooled[0]}` each value apart"
        )
    power_boot = min(n_boot, POWER_LAW_MAX_BOOT)

    power_laws = []
    for size_col, group_col in (("n_params", "n_samples"), ("n_samples", "n_params")):
        if trials[size_col].nunique() >= 3:
            fits, why = per_axis_power_laws(trials, metric, size_col, [group_col, *groups], power_boot)
            power_laws += fits
            skipped += why
        else:
            skipped.append(f"{metric} vs {size_col}: only {trials[size_col].nunique()} distinct value(s)")
    too_small = []
    for keys, rows in trials.groupby(groups, sort=True) if groups else [((), trials)]:
        group = _group_of(keys, groups)
        frontier = compute_frontier(rows, metric)
        label = "compute frontier" + (f" {_group_label(group)}" if group else "")
        try:
            power_laws.append(
                fit_power_law(frontier["train_flops"], frontier[metric], n_boot=power_boot, x_name="train_flops", y_name=metric, label=label, group=group)
            )
        except FitError as err:  # its message starts with the label
            if "distinct" in str(err) and group:
                too_small.append(_group_label(group))
            else:
                skipped.append(str(err))
    if too_small:
        skipped.append(_too_small("compute frontier", "train_flops", too_small))

    def attempt(what: str, make):
        try:
            return make()
        except FitError as err:
            skipped.append(f"{what}: {err}")
            return None

    joint = isoflop = extrapolation = None
    if groups:
        levels = ", ".join(f"{c} in {sorted(trials[c].unique().tolist())}" for c in groups)
        what = "label noise varies" if noise else "the fits are split"
        skipped.append(f"joint L(N, D), IsoFLOP and extrapolation: {what} ({levels}); they describe one setting")
    else:
        joint = attempt(
            "joint L(N, D)",
            lambda: fit_joint_law(
                trials["n_params"], trials["n_samples"], trials[metric], n_boot=n_boot, y_name=metric, n_jobs=bootstrap_jobs(len(trials), n_boot)
            ),
        )
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
        extrapolation = _extrapolation(trials, metric, joint, power_laws, power_boot, skipped, attempt)

    detector = {"train_tol": train_tol, "min_rise": min_rise, "seed": columns.seed}
    model_wise, why = double_descent_curves(
        trials, "n_params", ("n_samples", *groups), metric, paired=columns.paired_seeds, **detector
    )
    skipped += [f"double descent: {w}" for w in why]
    sample_wise: list = []
    if trials["n_samples"].nunique() >= 3:
        # Different data sizes are different data: seeds are not paired along this curve.
        sample_wise, why = double_descent_curves(trials, "n_samples", ("n_params", *groups), metric, threshold="last", **detector)
        skipped += [f"sample-wise: {w}" for w in why]
    epoch_wise: list = []
    if history is not None and not history.empty and metric in history and history["epoch"].nunique() >= 3:
        # One trial's epochs: the same seed, data and labels at every point of the curve.
        epoch_wise, why = double_descent_curves(history, "epoch", ("n_params", "n_samples", *groups), metric, paired=True, **detector)
        skipped += [f"epoch-wise: {w}" for w in why]
    return SweepFits(
        metric=metric,
        n_params=n_params,
        n_params_meaning=n_params_meaning,
        envelope=chosen,
        split_by=tuple(split),
        power_laws=tuple(power_laws),
        joint=joint,
        isoflop=isoflop,
        extrapolation=extrapolation,
        double_descent=tuple(model_wise),
        sample_wise=tuple(sample_wise),
        epoch_wise=tuple(epoch_wise),
        skipped=tuple(skipped),
        notes=tuple(notes),
        train_tol=train_tol,
        min_rise=min_rise,
    )


def _extrapolation(trials, metric, joint, power_laws, n_boot, skipped, attempt):
    """Held-out extrapolation of the joint law (below a compute threshold), or of the power law in N at
    the largest data size where there is no joint fit; never from a law the data do not identify."""
    if joint is not None:
        if not joint.identified:
            skipped.append("held-out extrapolation: the joint law is not identified, so nothing is extrapolated from it")
            return None
        return attempt("held-out extrapolation", lambda: held_out_extrapolation(trials, y=metric, threshold_col="train_flops", law="joint", n_boot=n_boot))
    largest = trials["n_samples"].max()
    base = next((f for f in power_laws if f.x_name == "n_params" and dict(f.group).get("n_samples") == largest), None)
    if base is None or not base.identified:
        skipped.append(f"held-out extrapolation: no identified law of {metric} vs n_params at the largest data size")
        return None
    rows = trials[trials["n_samples"] == largest]
    return attempt("held-out extrapolation", lambda: held_out_extrapolation(rows, y=metric, threshold_col="n_params", law="power_law", n_boot=n_boot))
