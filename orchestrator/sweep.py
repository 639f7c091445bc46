"""The Python API: plan, run, inspect, fit and report a sweep. The CLI is a thin layer over this.

Every function takes a validated `SweepSpec` and rebuilds what it needs from MLflow alone, so none
of them needs the process that launched the sweep.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from orchestrator import results
from orchestrator.fit import PowerLawFit, fit_error_vs_size
from orchestrator.grid import Trial, expand_grid, load_workload
from orchestrator.spec import SpecError, SweepSpec
from orchestrator.store import SweepStore, TrackingUnavailable


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
    from orchestrator.scheduler import Scheduler, connect
    from orchestrator.progress import SweepProgress

    started = time.perf_counter()
    check_grid_size(spec, confirmed)
    trials = expand_grid(spec)  # validates every trial config before anything launches
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
    run_ids: dict[str, str] = {}

    def on_dispatch(pack: list[Trial]) -> None:
        # A pack retried after its worker died already has runs: start only the trials that do not.
        run_ids.update(store.start_trials(parent, [t for t in pack if t.key not in run_ids], existing))
        bar.started(len(pack))

    def on_result(trial: Trial, result) -> None:
        store.finish_trial(run_ids[trial.key], result)
        outcome.counts[result.status] += 1
        bar.finished(result.status)

    packs = [[trial] for trial in todo]
    with SweepProgress(len(todo), spec.name, enabled=progress) as bar:
        try:
            Scheduler(spec.workload, spec.resources_per_trial, spec.execution).run(packs, on_dispatch, on_result)
        except TrackingUnavailable:
            raise  # nothing can be recorded; the parent stays RUNNING and the next run resumes it
        except BaseException:
            store.close_sweep(parent, "KILLED")
            raise
    store.close_sweep(parent, "FINISHED" if outcome.ok else "FAILED")
    outcome.wall_s = time.perf_counter() - started
    return outcome


def sweep_status(spec: SweepSpec) -> tuple[str | None, pd.DataFrame, int]:
    """(parent run id, one row per recorded trial, trials in the grid) read from MLflow alone."""
    store = open_store(spec)
    parent = store.find_sweep(spec.name)
    if parent is None:
        return None, results.trials_frame([]), spec.grid_size
    return parent, results.load_trials(store, parent), spec.grid_size


def finished_trials(spec: SweepSpec) -> tuple[SweepStore, str, pd.DataFrame]:
    store = open_store(spec)
    parent = store.find_sweep(spec.name)
    if parent is None:
        raise SpecError(f"name: no sweep {spec.name!r} in experiment {spec.experiment!r} at {spec.tracking.uri}; run it first")
    return store, parent, results.load_trials(store, parent, finished_only=True)


def fit_sweep(spec: SweepSpec, n_boot: int = 200, log: bool = True) -> tuple[list[PowerLawFit], list[str]]:
    """Fit test error vs model size per data size; log fits.json to the sweep's parent run."""
    store, parent, trials = finished_trials(spec)
    fits, skipped = fit_error_vs_size(trials, n_boot=n_boot)
    diverged = sorted(r.trial_key for r in store.trial_records(parent) if r.status == "diverged")
    if diverged:
        skipped.append(f"left out {len(diverged)} diverged trial(s): {', '.join(diverged)}")
    if log:
        store.log_json(parent, {"fits": [f.to_dict() for f in fits], "skipped": skipped}, "fits/fits.json")
    return fits, skipped


def report_sweep(spec: SweepSpec, out_dir: str | Path, n_boot: int = 200) -> list[Path]:
    """Write the report files to out_dir and log them under 'report/' on the sweep's parent run."""
    from dashboards import write_report

    store, parent, trials = finished_trials(spec)
    fits, _ = fit_error_vs_size(trials, n_boot=n_boot)
    workload = load_workload(spec)
    written = write_report(
        trials, fits, out_dir, title=spec.name, grid_x=workload.model_size_param, grid_y=workload.data_size_param
    )
    store.log_artifacts(parent, out_dir, "report")
    return written
