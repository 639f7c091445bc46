"""The Python API: plan, run, inspect, fit and report a sweep. The CLI is a thin layer over this.

Every function takes a validated `SweepSpec` and rebuilds what it needs from MLflow alone, so none
of them needs the process that launched the sweep.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator import results
from orchestrator.fit import FitError, SweepFits, fit_error_vs_size, fit_trials
from orchestrator.fit.isoflop import fit_isoflop
from orchestrator.fit.double_descent import DEFAULT_MIN_RISE, DEFAULT_TRAIN_TOL
from orchestrator.grid import Trial, expand_grid, load_workload
from orchestrator.spec import SpecError, SweepSpec
from orchestrator.store import WSD_PART_TAG, SweepStore, TrackingUnavailable, TrialRecord, TrialRecorder


class GridTooLarge(SpecError):
    """The grid exceeds execution.max_trials and was not confirmed."""


@dataclass
class SweepPlan:
    """The trials of a spec and which of them MLflow already holds as FINISHED."""

    spec: SweepSpec
    trials: list[Trial]
    finished: set[str]

    @property
    def todo(self) -> list[Trial]:
        return [t for t in self.trials if t.key not in self.finished]

    @property
    def total_flops(self) -> float:
        """What the plan trains (FLOPs): with a WSD schedule its trunks and cooldowns."""
        return sum(t.run_flops for t in self.trials)

    @property
    def from_scratch_flops(self) -> float:
        """What training every point of the grid from scratch would cost (FLOPs), trunks aside."""
        return sum(t.size.train_flops for t in self.trials if not t.is_trunk)


@dataclass
class SweepOutcome:
    """What one `run` did: how many trials it submitted and how they ended."""

    parent_run_id: str
    n_trials: int
    n_skipped: int
    counts: Counter = field(default_factory=Counter)
    wall_s: float = 0.0
    n_packs: int = 0  # packs the submitted trials ran in (equal to n_submitted when nothing was packed)
    recording_s: float = 0.0  # wall time spent in MLflow calls on the recorder's thread (seconds)

    @property
    def n_submitted(self) -> int:
        return self.n_trials - self.n_skipped

    @property
    def ok(self) -> bool:
        return self.counts.get("failed", 0) == 0 and self.counts.get("diverged", 0) == 0


def open_store(spec: SweepSpec) -> SweepStore:
    return SweepStore(spec.tracking.uri, spec.experiment, spec.tracking.artifact_location, spec.tracking.max_outage_s)


def check_grid_size(spec: SweepSpec, confirmed: bool) -> None:
    if spec.grid_size > spec.execution.max_trials and not confirmed:
        raise GridTooLarge(
            f"axes: the grid has {spec.grid_size} trials, more than execution.max_trials={spec.execution.max_trials}; "
            "confirm with --yes (confirmed=True) or raise execution.max_trials"
        )


def plan_sweep(spec: SweepSpec, store: SweepStore | None = None, confirmed: bool = False) -> SweepPlan:
    """Expand the grid and look up finished trials; validates everything, launches nothing."""
    check_grid_size(spec, confirmed)
    trials = expand_grid(spec)
    finished: set[str] = set()
    if store is not None:
        parent = store.find_sweep(spec.name)
        if parent is not None:
            finished = store.finished_trial_keys(parent)
    return SweepPlan(spec, trials, finished)


def run_sweep(
    spec: SweepSpec,
    address: str | None = None,
    num_cpus: int | None = None,
    confirmed: bool = False,
    progress: bool = True,
) -> SweepOutcome:
    """Run every trial of the spec that has no FINISHED run yet, on Ray, recording to MLflow."""
    from orchestrator.pack import make_packs, uses_packs
    from orchestrator.progress import SweepProgress
    from orchestrator.scheduler import Scheduler, check_fits_locally, check_shared_directory, connect

    started = time.perf_counter()
    check_grid_size(spec, confirmed)
    workload = load_workload(spec)
    trials = expand_grid(spec, workload)  # validates every trial config before anything launches
    uses_packs(workload, spec.execution.mode)  # mode 'pack' on a workload that cannot pack is bad input
    if address is None:
        check_fits_locally(spec.resources_per_trial, num_cpus)
    store = open_store(spec)
    parent = store.open_sweep(spec.name, spec.model_dump(mode="json"), len(trials))
    existing = store.prepare_resume(store.trial_records(parent))  # what a dead driver left; never duplicated
    finished = {r.trial_key for r in existing if r.run_status == "FINISHED"}
    todo = [t for t in trials if t.key not in finished]
    outcome = SweepOutcome(parent, len(trials), len(trials) - len(todo))
    if not todo:
        store.close_sweep(parent, "FINISHED")
        return outcome

    connect(address, num_cpus)
    if spec.schedule is not None:
        try:
            check_shared_directory(spec.execution.checkpoint_dir)  # branches on other nodes read trunks there
        except SpecError:
            store.close_sweep(parent, "FAILED")
            raise
    scheduler = Scheduler(spec.workload, spec.resources_per_trial, spec.execution)
    packs = make_packs(todo, workload, spec.execution.mode, scheduler.n_slots, gpu=scheduler.gpus > 0)
    # MLflow calls happen on the recorder's thread: the scheduler never waits for the tracking store.
    recorder = TrialRecorder(store, parent, existing)

    dispatched: set[str] = set()
    ended_finished = set(finished)

    def on_dispatch(pack: list[Trial]) -> None:
        if recorder.error is not None:
            raise recorder.error
        recorder.started(pack)
        fresh = {trial.key for trial in pack} - dispatched  # a retried pack is already counted as running
        dispatched.update(fresh)
        bar.started(len(fresh))

    def on_result(trial: Trial, result) -> None:
        if result.status == "finished":
            ended_finished.add(trial.key)
        recorder.finished(trial, result)
        outcome.counts[result.status] += 1
        bar.finished(result.status)

    with SweepProgress(len(todo), spec.name, enabled=progress) as bar:
        try:
            scheduler.run(packs, on_dispatch, on_result)
            recorder.close()
        except TrackingUnavailable:
            raise  # nothing can be recorded; the parent stays RUNNING and the next run resumes it
        except BaseException:
            recorder.close(timeout_s=30, raise_error=False)  # keep the results that did arrive
            store.close_sweep(parent, "KILLED")
            raise
    # What the sweep spent: each finished trial's own training once (work redone after a crash aside).
    store.log_sweep_compute(
        parent,
        {"spent_flops": sum(t.run_flops for t in trials if t.key in ended_finished),
         "from_scratch_flops": sum(t.size.train_flops for t in trials if not t.is_trunk)},
    )  # fmt: skip
    store.close_sweep(parent, "FINISHED" if outcome.ok else "FAILED")
    outcome.wall_s = time.perf_counter() - started
    outcome.n_packs = len(packs)
    outcome.recording_s = recorder.busy_s
    return outcome


@dataclass
class SweepState:
    """A sweep as MLflow records it right now: which trials exist, how they stand, when they moved.

    Built from the tracking store alone, so it reads the same while the sweep runs, after its
    driver died, or from another machine.
    """

    name: str
    parent_run_id: str | None
    grid: pd.DataFrame  # one row per trial of the spec: trial_key, n_params, n_samples, train_flops
    trials: pd.DataFrame  # one row per recorded trial (results.trials_frame)
    first_start_s: float | None = None  # unix seconds of the earliest trial start
    last_activity_s: float | None = None  # unix seconds of the latest trial start or end

    @property
    def grid_size(self) -> int:
        return len(self.grid)

    @property
    def counts(self) -> Counter:
        """Recorded trials by status (finished, running, failed, diverged), grid trials only."""
        if self.trials.empty:
            return Counter()
        recorded = self.trials[self.trials["trial_key"].isin(self.grid["trial_key"])]
        return Counter(recorded["status"].value_counts().to_dict())

    @property
    def pending(self) -> int:
        """Trials of the grid with no run yet."""
        recorded = set(self.trials["trial_key"]) if not self.trials.empty else set()
        return int((~self.grid["trial_key"].isin(recorded)).sum())

    def eta_s(self, now_s: float | None = None) -> float | None:
        """Seconds left at the pace so far (finished trials per second since the first start), or None."""
        done = self.counts["finished"] + self.counts["failed"] + self.counts["diverged"]
        left = self.grid_size - done
        if not done or not left or self.first_start_s is None:
            return None
        elapsed = (now_s or time.time()) - self.first_start_s
        return left * elapsed / done


def sweep_status(spec: SweepSpec) -> SweepState:
    """The state of a sweep read from MLflow alone (see SweepState); parent_run_id is None if it never ran."""
    grid = pd.DataFrame(
        [
            {"trial_key": t.key, "n_params": t.size.n_params, "n_samples": t.size.n_samples, "train_flops": t.size.train_flops}
            for t in expand_grid(spec)
            if not t.is_trunk  # a WSD trunk is no point of the grid
        ],
        columns=["trial_key", "n_params", "n_samples", "train_flops"],
    )
    store = open_store(spec)
    parent = store.find_sweep(spec.name)
    if parent is None:
        return SweepState(spec.name, None, grid, results.trials_frame([]))
    records = store.trial_records(parent)
    starts = [r.start_time for r in records if r.start_time]
    records = grid_points(records)
    moments = starts + [r.end_time for r in records if r.end_time]
    return SweepState(
        spec.name,
        parent,
        grid,
        results.trials_frame(records),
        first_start_s=min(starts) / 1000 if starts else None,
        last_activity_s=max(moments) / 1000 if moments else None,
    )


def sweep_records(spec: SweepSpec) -> tuple[SweepStore, str, list[TrialRecord]]:
    """The sweep's store, parent run id and every child run, read from MLflow once."""
    store = open_store(spec)
    parent = store.find_sweep(spec.name)
    if parent is None:
        raise SpecError(f"name: no sweep {spec.name!r} in experiment {spec.experiment!r} at {spec.tracking.uri}; run it first")
    return store, parent, store.trial_records(parent)


def finished(records: list[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if r.run_status == "FINISHED"]


def is_trunk(record: TrialRecord) -> bool:
    return record.tags.get(WSD_PART_TAG) == "trunk"


def grid_points(records: list[TrialRecord]) -> list[TrialRecord]:
    """The runs of grid points: a WSD trunk (a stable learning rate, never cooled down) is none."""
    return [r for r in records if not is_trunk(r)]


def fit_sweep(
    spec: SweepSpec,
    n_boot: int = 1000,
    log: bool = True,
    metric: str = "test_error",
    train_tol: float = DEFAULT_TRAIN_TOL,
    min_rise: float = DEFAULT_MIN_RISE,
    epoch_wise: bool = True,
) -> SweepFits:
    """Every applicable fit of the sweep's finished trials; logs them as fits/fits.json to its parent run.

    Per-axis power laws, the joint L(N, D), IsoFLOP profiles, held-out extrapolation and double-descent
    verdicts per curve (see `orchestrator.fit.fit_trials`). Raises FitError when nothing can be fitted.
    """
    store, parent, records = sweep_records(spec)
    trunks = sorted(r.trial_key for r in records if is_trunk(r))
    records = grid_points(records)
    trials = results.trials_frame(finished(records))
    history = None
    if epoch_wise and not trials.empty:
        history = results.history_frame(store, finished(records), (metric, "train_error"))
    fits = fit_trials(trials, history, metric=metric, n_boot=n_boot, train_tol=train_tol, min_rise=min_rise)
    diverged = sorted(r.trial_key for r in records if r.status == "diverged")
    if diverged:
        fits = replace(fits, notes=(*fits.notes, f"left out {len(diverged)} diverged trial(s): {', '.join(diverged)}"))
    if trunks:
        note = f"left out {len(trunks)} WSD trunk run(s), stable learning rate without a cooldown: {', '.join(trunks)}"
        fits = replace(fits, notes=(*fits.notes, note))
    if log:
        store.log_json(parent, fits.to_dict(), "fits/fits.json")
    return fits


def compute_optimal_view(budgeted: pd.DataFrame, metric: str, n_boot: int):
    """The report's IsoFLOP inputs: trials by budget, plus the fitted parabolas and N_opt/D_opt laws when they fit."""
    from dashboards import ComputeOptimal
    from dashboards.curves import curve_from_callable, log_grid

    try:
        isoflop = fit_isoflop(
            budgeted["train_flops"], budgeted["n_params"], budgeted["n_samples"], budgeted[metric],
            n_boot=n_boot, budgets=budgeted["compute_budget"], y_name=metric,
        )  # fmt: skip
    except FitError:
        return ComputeOptimal(budgeted, metric=metric)  # too few sizes per budget: draw the data alone
    # A profile's budget is its trials' mean FLOPs; the report groups by the spec's budget values.
    labels = np.array(sorted(budgeted["compute_budget"].unique()), dtype=float)
    spec_budget = {p.budget: float(labels[np.argmin(np.abs(np.log(labels / p.budget)))]) for p in isoflop.profiles}
    profiles = {
        spec_budget[p.budget]: curve_from_callable(p.predict, log_grid(p.N.min(), p.N.max(), 60)) for p in isoflop.profiles
    }
    optima = pd.DataFrame(
        {"compute_budget": [spec_budget[p.budget] for p in isoflop.profiles], "n_params": [p.N_opt for p in isoflop.profiles],
         "n_samples": [p.D_opt for p in isoflop.profiles], metric: [p.y_opt for p in isoflop.profiles]}
    )  # fmt: skip
    flops = log_grid(min(p.budget for p in isoflop.profiles), max(p.budget for p in isoflop.profiles), 60)
    n_opt = curve_from_callable(lambda c: isoflop.predict(c)[0], flops, label="N_opt fit")
    d_opt = curve_from_callable(lambda c: isoflop.predict(c)[1], flops, label="D_opt fit")
    return ComputeOptimal(budgeted, metric=metric, profiles=profiles, optima=optima, n_opt=n_opt, d_opt=d_opt)


def report_sweep(spec: SweepSpec, out_dir: str | Path, n_boot: int = 200, formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Write the report files to out_dir and log them under 'report/' on the sweep's parent run.

    Reads the finished trials and their per-epoch history from MLflow, fits test error vs model size
    per data size, and, when the spec has compute budgets, adds the IsoFLOP profiles and frontier.
    """
    from dashboards import ComputeOptimal, write_report
    from dashboards.curves import budget_of

    store, parent, records = sweep_records(spec)
    records = grid_points(records)
    trials = results.trials_frame(finished(records))
    fits, _ = fit_error_vs_size(trials, n_boot=n_boot)
    history = results.history_frame(store, finished(records), metrics=("train_error", "test_error"))
    compute = None
    budgets = spec.compute_budgets
    if budgets and not trials.empty and "train_flops" in trials:
        budgeted = trials.assign(compute_budget=budget_of(trials["train_flops"], budgets))
        metric = "test_loss" if "test_loss" in budgeted else "test_error"
        compute = compute_optimal_view(budgeted, metric, n_boot)
    workload = load_workload(spec)
    written = write_report(
        trials,
        fits,
        out_dir,
        title=spec.name,
        history=history,
        compute=compute,
        data_unit=workload.data_unit,
        metric_units=workload.metric_units,
        formats=formats,
    )
    store.log_artifacts(parent, out_dir, "report")
    return written
