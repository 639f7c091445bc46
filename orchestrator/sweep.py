"""The Python API: plan, run, inspect, fit and report a sweep. The CLI is a thin layer over this.

Every function takes a validated `SweepSpec` and rebuilds what it needs from MLflow alone, so none
of them needs the process that launched the sweep.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from orchestrator import results
from orchestrator.fit import SweepColumns, SweepFits, fit_trials
from orchestrator.fit.double_descent import DEFAULT_MIN_RISE, DEFAULT_TRAIN_TOL
from orchestrator.grid import Trial, expand_grid, load_workload
from orchestrator.spec import SpecError, SweepSpec
from orchestrator.store import SweepStore, TrackingUnavailable, TrialRecord, TrialRecorder


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
        return sum(t.size.train_flops for t in self.trials)


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
    from orchestrator.scheduler import Scheduler, check_fits_locally, connect

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
    scheduler = Scheduler(spec.workload, spec.resources_per_trial, spec.execution)
    packs = make_packs(todo, workload, spec.execution.mode, scheduler.n_slots, gpu=scheduler.gpus > 0)
    # MLflow calls happen on the recorder's thread: the scheduler never waits for the tracking store.
    recorder = TrialRecorder(store, parent, existing)

    dispatched: set[str] = set()

    def on_dispatch(pack: list[Trial]) -> None:
        if recorder.error is not None:
            raise recorder.error
        recorder.started(pack)
        fresh = {trial.key for trial in pack} - dispatched  # a retried pack is already counted as running
        dispatched.update(fresh)
        bar.started(len(fresh))

    def on_result(trial: Trial, result) -> None:
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
        ],
        columns=["trial_key", "n_params", "n_samples", "train_flops"],
    )
    store = open_store(spec)
    parent = store.find_sweep(spec.name)
    if parent is None:
        return SweepState(spec.name, None, grid, results.trials_frame([]))
    records = store.trial_records(parent)
    starts = [r.start_time for r in records if r.start_time]
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


def fit_sweep(
    spec: SweepSpec,
    n_boot: int = 1000,
    log: bool = True,
    metric: str | None = None,
    train_tol: float = DEFAULT_TRAIN_TOL,
    min_rise: float = DEFAULT_MIN_RISE,
    epoch_wise: bool = True,
    envelope: Sequence[str] | None = None,
    n_params: str | None = None,
) -> SweepFits:
    """Every applicable fit of the sweep's finished trials; logs them as fits/fits.json to its parent run.

    Per-axis power laws, the joint L(N, D), IsoFLOP profiles, held-out extrapolation and double-descent
    verdicts per curve (see `orchestrator.fit.fit_trials`). metric: default the workload's fit_metric.
    envelope: axes to take the best setting of per size ('lr'...); n_params: 'non_embedding' or
    'with_embeddings'; both default to the spec's `fit:` section. Raises SpecError for an option the
    sweep cannot take, FitError when nothing can be fitted.
    """
    workload = load_workload(spec)
    metric = metric or workload.fit_metric
    envelope = tuple(spec.fit.envelope if envelope is None else envelope)
    n_params = n_params or spec.fit.n_params
    check_fit_options(spec, workload, envelope, n_params)
    store, parent, records = sweep_records(spec)
    trials = results.trials_frame(finished(records))
    history = None
    if epoch_wise and not trials.empty:
        history = results.history_frame(store, finished(records), (metric, "train_error"))
    columns = SweepColumns.of(workload, list(spec.axes))
    fits = fit_trials(
        trials, history, metric=metric, n_boot=n_boot, train_tol=train_tol, min_rise=min_rise, columns=columns, envelope=envelope, n_params=n_params
    )
    diverged = sorted(r.trial_key for r in records if r.status == "diverged")
    if diverged:
        fits = replace(fits, notes=(*fits.notes, f"left out {len(diverged)} diverged trial(s): {', '.join(diverged)}"))
    if log:
        store.log_json(parent, fits.to_dict(), "fits/fits.json")
    return fits


def check_fit_options(spec: SweepSpec, workload, envelope: Sequence[str], n_params: str) -> None:
    """Fit options this sweep cannot take are bad input, found before MLflow is read."""
    unknown = [a for a in envelope if a not in spec.axes]
    if unknown:
        raise SpecError(f"envelope: {unknown[0]!r} is not an axis of this sweep (axes: {', '.join(spec.axes)})")
    if n_params == "with_embeddings" and expand_grid(spec, workload)[0].size.n_params_with_embeddings is None:
        raise SpecError(f"n_params: with_embeddings needs a parameter count with embeddings, which workload {spec.workload!r} does not report")


def report_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    n_boot: int = 200,
    formats: tuple[str, ...] = ("png",),
    fits: SweepFits | None = None,
    **fit_options,
) -> list[Path]:
    """Write the report files to out_dir and log them under 'report/' on the sweep's parent run.

    The pictures draw `fits` (the sweep's SweepFits; computed here with `fit_sweep(spec, n_boot,
    **fit_options)`, which logs fits/fits.json, when not given) and the finished trials and their
    per-epoch history from MLflow; the report does no analysis of its own.
    """
    from dashboards import Labels, write_report

    if fits is None:
        fits = fit_sweep(spec, n_boot=n_boot, **fit_options)
    store, parent, records = sweep_records(spec)
    trials = results.trials_frame(finished(records))
    history = results.history_frame(store, finished(records), metrics=tuple(dict.fromkeys(("train_error", fits.metric))))
    written = write_report(trials, fits, out_dir, title=spec.name, history=history, labels=Labels.of(load_workload(spec), fits), formats=formats)
    store.log_artifacts(parent, out_dir, "report")
    return written
