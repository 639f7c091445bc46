"""The Python API: plan, run, inspect, fit and report a sweep. The CLI is a thin layer over this.

A `Sweep` is a spec with what it needs opened once, lazily: its workload, the trials of its grid,
its tracking store and parent run, and a reader of its child runs. Everything is rebuilt from the
spec and MLflow alone, so nothing needs the process that launched the sweep.

    sweep = Sweep.load("examples/mnist1d_demo.yaml")
    sweep.run()          # resumable: finished trials are skipped
    sweep.status()       # SweepState, from MLflow alone
    sweep.fit()          # SweepFits
    sweep.report("reports/demo")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from orchestrator import results
from orchestrator.fit.common import DEFAULT_MIN_RISE, DEFAULT_TRAIN_TOL
from orchestrator.grid import Trial, expand_grid, load_workload
from orchestrator.spec import SpecError, SweepSpec, load_spec
from orchestrator.driver import Terminated, interruption
from orchestrator.tracking import SweepReader, SweepStore, TrackingUnavailable, TrialRecorder
from orchestrator.tracking import schema
from orchestrator.tracking.lease import Lease, SweepLocked, describe

if TYPE_CHECKING:  # the fits load scipy: imported where a fit runs, not by run or status
    from orchestrator.fit import SweepFits

log = logging.getLogger(__name__)

# The parent run's record of what the sweep is: a hash, and the parts a changed spec is compared by.
SPEC_HASH_TAG = "scalesweep.spec_hash"
SPEC_IDENTITY_TAG = "scalesweep.spec"
# What a spec's trials do not depend on: changing these never makes it another sweep.
# Spec sections no trial depends on: changing them leaves the sweep the same sweep.
NOT_IDENTITY = ("name", "description", "tracking", "resources_per_trial", "execution", "fit")


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
    took_over_from: str | None = None  # the gone driver whose lease this run took, described

    @property
    def n_submitted(self) -> int:
        return self.n_trials - self.n_skipped

    @property
    def ok(self) -> bool:
        return self.counts.get("failed", 0) == 0 and self.counts.get("diverged", 0) == 0


@dataclass
class SweepState:
    """A sweep as MLflow records it right now: which trials exist, how they stand, when they moved.

    Built from the tracking store alone, so it reads the same while the sweep runs, after its
    driver died, or from another machine.
    """

    name: str
    parent_run_id: str | None
    grid: pd.DataFrame  # one row per trial of the spec: trial_key, n_params, n_samples, train_flops
    trials: pd.DataFrame  # one row per recorded trial of the grid (results.trials_frame)
    first_start_s: float | None = None  # unix seconds of the earliest trial start
    last_activity_s: float | None = None  # unix seconds of the latest trial start or end
    n_outside_grid: int = 0  # recorded runs whose trial is not in the current grid (left out)
    n_deleted: int = 0  # trials of the grid whose only runs were deleted (MLflow's trash): `run` trains them again
    n_duplicates: int = 0  # extra FINISHED runs of trials that already have one (counted once; `run` marks them)
    driver: str | None = None  # the live driver holding the sweep's lease, described; None when none runs it

    @property
    def grid_size(self) -> int:
        return len(self.grid)

    @property
    def counts(self) -> Counter:
        """Recorded trials by status (finished, running, failed, diverged)."""
        if self.trials.empty:
            return Counter()
        return Counter(self.trials["status"].value_counts().to_dict())

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


def check_grid_size(spec: SweepSpec, confirmed: bool) -> None:
    if spec.grid_size > spec.execution.max_trials and not confirmed:
        raise GridTooLarge(
            f"axes: the grid has {spec.grid_size} trials, more than execution.max_trials={spec.execution.max_trials}; "
            "confirm with --yes (confirmed=True) or raise execution.max_trials"
        )


def spec_identity(spec: SweepSpec) -> dict:
    """What makes a sweep this sweep: its workload, grid and fixed params (everything its trials depend on)."""
    return {k: v for k, v in spec.model_dump(mode="json").items() if k not in NOT_IDENTITY}


def spec_hash(spec: SweepSpec) -> str:
    canonical = json.dumps(spec_identity(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def spec_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'field: old -> new' for each leaf that differs between two spec identities."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += spec_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return changes


def check_identity(spec: SweepSpec, parent_tags: dict[str, str], extend: bool) -> None:
    """Refuse a spec that is not the sweep recorded under its name (see Sweep.run)."""
    if parent_tags.get(SPEC_HASH_TAG, spec_hash(spec)) == spec_hash(spec):
        return  # the same sweep, or one recorded before sweeps had an identity
    try:
        recorded = json.loads(parent_tags.get(SPEC_IDENTITY_TAG, "{}"))
    except ValueError:
        recorded = {}
    if recorded:
        # A sweep recorded when one of these sections still counted (its hash differs) is the same sweep.
        recorded = {k: v for k, v in recorded.items() if k not in NOT_IDENTITY}
        if recorded == spec_identity(spec):
            return
    changes = spec_changes(recorded, spec_identity(spec)) or ["(the recorded spec could not be read back)"]
    if recorded.get("workload", spec.workload) != spec.workload:
        raise SpecError(
            f"name: sweep {spec.name!r} was recorded with workload {recorded['workload']!r}, not {spec.workload!r}; "
            "another workload is another sweep: give it its own name"
        )
    if not extend:
        raise SpecError(
            f"name: sweep {spec.name!r} was recorded with another spec ({'; '.join(changes)}); give the new one its own "
            "name, or pass --extend to add its trials to this sweep (old trials outside the new grid are left out)"
        )


def _short(err: BaseException) -> str:
    return f"{err.__class__.__name__}: {err}"[:1000]


def one_run_per_trial(runs: pd.DataFrame) -> pd.DataFrame:
    """The run that stands for each trial: its FINISHED run if it has one, else its latest run."""
    if runs.empty:
        return runs
    order = runs.assign(_finished=runs["run_status"] == "FINISHED", _key=schema.trial_keys(runs))
    order = order.sort_values(["_key", "_finished", "start_time"], kind="stable")
    return order.drop_duplicates("_key", keep="last").drop(columns=["_finished", "_key"])


class Sweep:
    """One sweep: its spec, the trials of its grid, its tracking store and parent run, opened once, lazily."""

    def __init__(self, spec: SweepSpec):
        self.spec = spec
        self._parent_run_id: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> Sweep:
        return cls(load_spec(path))

    @cached_property
    def workload(self):
        return load_workload(self.spec)

    @cached_property
    def trials(self) -> list[Trial]:
        """Every trial of the grid, validated by the workload (nothing launched)."""
        return expand_grid(self.spec, self.workload)

    @cached_property
    def grid(self) -> pd.DataFrame:
        """One row per point of the grid (a WSD trunk is none): trial_key, n_params, n_samples, train_flops."""
        points = [t for t in self.trials if not t.is_trunk]
        return pd.DataFrame(
            {
                "trial_key": [t.key for t in points],
                "n_params": [t.size.n_params for t in points],
                "n_samples": [t.size.n_samples for t in points],
                "train_flops": [t.size.train_flops for t in points],
            }
        )

    @cached_property
    def trunk_keys(self) -> set[str]:
        """The trial_keys of a WSD sweep's trunks: trained and recorded, but no point of the grid."""
        return {t.key for t in self.trials if t.is_trunk}

    @cached_property
    def store(self) -> SweepStore:
        tracking = self.spec.tracking
        return SweepStore(tracking.uri, self.spec.experiment, tracking.artifact_location, tracking.max_outage_s)

    @property
    def parent_run_id(self) -> str | None:
        """The sweep's parent run, or None if it never ran."""
        if self._parent_run_id is None:
            self._parent_run_id = self.store.find_sweep(self.spec.name)
        return self._parent_run_id

    @cached_property
    def reader(self) -> SweepReader:
        if self.parent_run_id is None:
            raise SpecError(
                f"name: no sweep {self.spec.name!r} in experiment {self.spec.experiment!r} at {self.spec.tracking.uri}; run it first"
            )
        return SweepReader(self.store, self.parent_run_id)

    # -- reading ---------------------------------------------------------------------------------

    def runs(self) -> pd.DataFrame:
        """The sweep's active child runs of the current grid, one per trial; read fresh from MLflow."""
        grid_keys = self.grid["trial_key"]  # bad input is found before the store is opened
        runs = self.reader.runs()
        runs = runs[~runs["deleted"]]
        return one_run_per_trial(runs[schema.trial_keys(runs).isin(grid_keys)])

    def n_outside_grid(self) -> int:
        """Active child runs whose trial the current grid does not have (left out of status and fits),
        as of the last read."""
        runs = self.reader.runs(refresh=False)
        keys = schema.trial_keys(runs[~runs["deleted"]])
        return int((~keys.isin(self.grid["trial_key"]) & ~keys.isin(self.trunk_keys)).sum())

    def n_trunks(self) -> int:
        """Active runs of the WSD trunks of this grid, as of the last read."""
        runs = self.reader.runs(refresh=False)
        return int(schema.trial_keys(runs[~runs["deleted"]]).isin(self.trunk_keys).sum())

    def n_deleted(self) -> int:
        """Trials of the grid whose runs are all deleted (e.g. in the MLflow UI), as of the last read."""
        runs = self.reader.runs(refresh=False)
        keys = schema.trial_keys(runs)
        gone = set(keys[runs["deleted"]]) - set(keys[~runs["deleted"]])
        return len(gone & set(self.grid["trial_key"]))

    def left_out(self) -> list[str]:
        """What status, fits and reports leave out, one sentence each, as of the last read."""
        notes = []
        if self.n_deleted():
            notes.append(f"{self.n_deleted()} trial(s) of the grid have only deleted runs (MLflow's trash): left out; `run` trains them again")
        if self.n_outside_grid():
            notes.append(f"left out {self.n_outside_grid()} run(s) of trials that are not in the current grid")
        if self.n_trunks():
            notes.append(f"left out {self.n_trunks()} WSD trunk run(s): a stable learning rate, never cooled down, is no point of the grid")
        return notes

    def results(self, runs: pd.DataFrame | None = None) -> pd.DataFrame:
        """One row per finished trial of the current grid (results.trials_frame), from `runs` (self.runs())."""
        runs = self.runs() if runs is None else runs
        return results.trials_frame(runs[runs["run_status"] == "FINISHED"])

    def history(self, trials: pd.DataFrame, metrics=("train_error", "test_error")) -> pd.DataFrame:
        """One row per finished trial x epoch for `trials` (a results frame), with `metrics` per epoch."""
        if trials.empty:
            return pd.DataFrame()
        return results.history_frame(self.reader.histories(list(trials["run_id"]), list(metrics)), trials)

    # -- the commands ----------------------------------------------------------------------------

    def plan(self, offline: bool = False, confirmed: bool = False) -> SweepPlan:
        """The grid and which trials are finished; validates everything, launches nothing."""
        check_grid_size(self.spec, confirmed)
        trials = self.trials  # bad input is found before the store is opened (and a SQLite file created)
        finished: set[str] = set()
        if not offline and self.parent_run_id is not None:
            runs = self.reader.runs()
            runs = runs[~runs["deleted"] & (runs["run_status"] == "FINISHED")]
            finished = set(schema.trial_keys(runs)) & {t.key for t in trials}  # trunks too
        return SweepPlan(self.spec, trials, finished)

    def run(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        confirmed: bool = False,
        progress: bool = True,
        extend: bool = False,
        force_takeover: bool = False,
    ) -> SweepOutcome:
        """Run every trial of the spec that has no FINISHED run yet, on Ray, recording to MLflow.

        One driver per sweep: a second one raises SweepLocked while the first lives (`force_takeover`
        takes the lease anyway). A spec whose grid, params or workload differ from the sweep's recorded
        one raises SpecError naming the difference, unless `extend` (never for another workload).
        """
        from orchestrator.driver import check_ray_address, signals_as_exceptions

        spec = self.spec
        check_grid_size(spec, confirmed)
        trials = self.trials  # validates every trial config before anything launches
        self._check_execution(address, num_cpus)
        if address:
            check_ray_address(address)
        store = self.store
        parent = store.open_sweep(spec.name, spec.model_dump(mode="json"), len(trials))
        self._parent_run_id = parent
        check_identity(spec, store.sweep_tags(parent), extend)
        lease = Lease(store.client, parent)
        lease.acquire(force=force_takeover)
        tags = {SPEC_HASH_TAG: spec_hash(spec), SPEC_IDENTITY_TAG: schema.tag_value(spec_identity(spec))}
        # Every way out ends the parent run in a true state; a second Ctrl-C meanwhile exits at once.
        with signals_as_exceptions() as reclaim_signals:
            try:
                store.start_sweep(parent, spec.model_dump(mode="json"), len(trials), tags)
                lease.start()
                outcome = self._run_trials(address, num_cpus, progress, lease, reclaim_signals)
            except TrackingUnavailable:
                lease.release()
                raise  # nothing can be recorded; the lease lapses and the next run resumes the sweep
            except SweepLocked:
                raise  # another driver holds the sweep now: its parent run is not ours to end
            except BaseException as err:
                signalled = interruption(err)
                status = "FAILED" if signalled is None else "KILLED"
                reason = {KeyboardInterrupt: "interrupted (SIGINT)", Terminated: "terminated (SIGTERM)"}.get(type(signalled))
                with contextlib.suppress(Exception):
                    store.close_sweep(parent, status, reason or _short(err))
                lease.release()
                if signalled is not None and signalled is not err:
                    raise signalled from None
                raise
            store.close_sweep(parent, "FINISHED" if outcome.ok else "FAILED", "" if outcome.ok else "some trials failed or diverged")
            lease.release()
        outcome.took_over_from = lease.took_over
        return outcome

    def _check_execution(self, address: str | None, num_cpus: int | None) -> None:
        from orchestrator.pack import uses_packs
        from orchestrator.scheduler import check_fits_locally

        uses_packs(self.workload, self.spec.execution.mode)  # mode 'pack' on a workload that cannot pack is bad input
        if num_cpus is not None and num_cpus < 1:
            raise SpecError(f"--num-cpus: a local Ray needs at least 1 CPU, got {num_cpus}")
        if address is None:
            check_fits_locally(self.spec.resources_per_trial, num_cpus)

    def _run_trials(self, address: str | None, num_cpus: int | None, progress: bool, lease: Lease, reclaim_signals) -> SweepOutcome:
        """Settle what earlier drivers left, then train what is not finished; the parent run is open."""
        started = time.perf_counter()
        spec, store, parent = self.spec, self.store, self._parent_run_id
        runs = self.reader.runs()
        if store.mark_duplicates(runs):
            runs = self.reader.runs()
        live = store.prepare_resume(runs)  # what a dead driver left; never duplicated
        live = live[schema.trial_keys(live).isin([t.key for t in self.trials])]  # WSD trunks too
        finished = set(schema.trial_keys(live[live["run_status"] == "FINISHED"]))
        unfinished = one_run_per_trial(live[live["run_status"] != "FINISHED"])
        reusable = dict(zip(schema.trial_keys(unfinished), unfinished["run_id"]))
        todo = [t for t in self.trials if t.key not in finished]
        outcome = SweepOutcome(parent, len(self.trials), len(self.trials) - len(todo))
        if not todo:
            return outcome  # a rerun with nothing to do neither imports nor starts Ray

        import ray

        from orchestrator.driver import start_reaper
        from orchestrator.pack import make_packs
        from orchestrator.progress import SweepProgress
        from orchestrator.scheduler import Scheduler, check_shared_directory, connect

        local = address is None and not ray.is_initialized()
        connect(address, num_cpus)
        reclaim_signals()  # ray.init put its own SIGTERM handlers in place of ours
        if local:
            start_reaper()  # the local Ray goes with this process, however it ends
        if spec.schedule is not None:
            check_shared_directory(spec.execution.checkpoint_dir)  # WSD branches on other nodes read their trunk there
        scheduler = Scheduler(spec.workload, spec.resources_per_trial, spec.execution)
        packs = make_packs(todo, self.workload, spec.execution.mode, scheduler.n_slots, gpu=scheduler.gpus > 0)
        # MLflow calls happen on the recorder's thread: the scheduler never waits for the tracking store.
        recorder = TrialRecorder(store, parent, reusable)
        dispatched: set[str] = set()
        ended: set[str] = set()
        done = set(finished)  # trials with a FINISHED run, for what the sweep spent

        def on_dispatch(pack: list[Trial]) -> None:
            if recorder.error is not None:
                raise recorder.error
            if lease.lost:
                raise SweepLocked(lease.lost)
            recorder.started(pack)
            fresh = {trial.key for trial in pack} - dispatched  # a retried pack is already counted as running
            dispatched.update(fresh)
            bar.started(len(fresh))

        def on_result(trial: Trial, result) -> None:
            recorder.finished(trial, result)
            ended.add(trial.key)
            if result.status == "finished":
                done.add(trial.key)
            outcome.counts[result.status] += 1
            bar.finished(result.status)

        with SweepProgress(len(todo), spec.name, enabled=progress) as bar:
            try:
                scheduler.run(packs, on_dispatch, on_result)
                recorder.close()
            except TrackingUnavailable:
                raise
            except BaseException:
                recorder.close(timeout_s=30, raise_error=False)  # keep the results that did arrive
                interrupted = [recorder.run_ids[k] for k in dispatched - ended if k in recorder.run_ids]
                with contextlib.suppress(Exception):
                    store.kill_runs(interrupted)  # marked now, not at the next run
                raise
        # What the sweep spent: each finished trial's own training once (work redone after a crash aside).
        store.log_sweep_compute(
            parent,
            {"spent_flops": sum(t.run_flops for t in self.trials if t.key in done),
             "from_scratch_flops": sum(t.size.train_flops for t in self.trials if not t.is_trunk)},
        )  # fmt: skip
        outcome.wall_s = time.perf_counter() - started
        outcome.n_packs = len(packs)
        outcome.recording_s = recorder.busy_s
        return outcome

    def status(self) -> SweepState:
        """The state of the sweep read from MLflow alone (see SweepState); parent_run_id None if it never ran."""
        self.grid  # bad input is found before the store is opened
        if self.parent_run_id is None:
            return SweepState(self.spec.name, None, self.grid, results.trials_frame(schema.runs_table([])))
        runs = self.runs()
        starts, ends = runs["start_time"].dropna(), runs["end_time"].dropna()
        moments = pd.concat([starts, ends])
        return SweepState(
            self.spec.name,
            self.parent_run_id,
            self.grid,
            results.trials_frame(runs),
            first_start_s=float(starts.min()) / 1000 if len(starts) else None,
            last_activity_s=float(moments.max()) / 1000 if len(moments) else None,
            n_outside_grid=self.n_outside_grid(),
            n_deleted=self.n_deleted(),
            n_duplicates=self.n_duplicates(),
            driver=self.driver(),
        )

    def driver(self) -> str | None:
        """The live driver that holds the sweep's lease, described (host, pid, heartbeat), or None."""
        lease = Lease(self.store.client, self.parent_run_id)
        live = lease.holder_if_live()
        return describe(*live, int(time.time() * 1000)) if live else None

    def n_duplicates(self) -> int:
        """Extra FINISHED runs of trials of the grid that already have one, as of the last read."""
        runs = self.reader.runs(refresh=False)
        finished = runs[~runs["deleted"] & (runs["run_status"] == "FINISHED")]
        keys = schema.trial_keys(finished)
        return int(keys[keys.isin(self.grid["trial_key"])].duplicated().sum())

    def fit(
        self,
        n_boot: int = 1000,
        log: bool = True,
        metric: str | None = None,
        train_tol: float = DEFAULT_TRAIN_TOL,
        min_rise: float = DEFAULT_MIN_RISE,
        epoch_wise: bool = True,
        envelope: Sequence[str] | None = None,
        n_params: str | None = None,
        split_by: Sequence[str] | None = None,
    ) -> SweepFits:
        """Every applicable fit of the sweep's finished trials; logs them as fits/fits.json to its parent run.

        Per-axis power laws, the joint L(N, D), IsoFLOP profiles, held-out extrapolation and double-descent
        verdicts per curve (see `orchestrator.fit.fit_trials`). metric: default the workload's fit_metric.
        envelope: axes to take the best setting of per size ('lr'...); split_by: axes to fit apart, a
        law and a curve per value ('weight_decay'...); n_params: 'non_embedding' or 'with_embeddings';
        all three default to the spec's `fit:` section. Raises SpecError for an option the
        sweep cannot take (before reading MLflow), FitError when nothing can be fitted.
        """
        metric = metric or self.workload.fit_metric
        envelope = tuple(self.spec.fit.envelope if envelope is None else envelope)
        n_params = n_params or self.spec.fit.n_params
        split_by = tuple(self.spec.fit.split_by if split_by is None else split_by)
        check_fit_options(self.spec, self.workload, self.trials, envelope, n_params, split_by)
        runs = self.runs()
        trials = self.results(runs)
        history = self.history(trials, (metric, "train_error")) if epoch_wise and not trials.empty else None
        from orchestrator.fit.sweep_fits import SweepColumns, fit_trials

        columns = SweepColumns.of(self.workload, list(self.spec.axes))
        fits = fit_trials(
            trials, history, metric=metric, n_boot=n_boot, train_tol=train_tol, min_rise=min_rise, columns=columns, envelope=envelope, n_params=n_params,
            split_by=split_by,
        )
        diverged = sorted(schema.trial_keys(runs[schema.trial_statuses(runs) == "diverged"]))
        notes = list(fits.notes)
        if diverged:
            notes.append(f"left out {len(diverged)} diverged trial(s): {', '.join(diverged)}")
        fits = replace(fits, notes=tuple(notes + self.left_out()))
        if log:
            self.log_fits(fits)
        return fits

    def log_fits(self, fits: SweepFits) -> None:
        """Store the fits as fits/fits.json on the sweep's parent run; ArtifactUploadFailed if the store refuses."""
        self.store.log_json(self.parent_run_id, fits.to_dict(), "fits/fits.json")

    def report(
        self,
        out_dir: str | Path,
        n_boot: int = 200,
        formats: tuple[str, ...] = ("png",),
        fits: SweepFits | None = None,
        upload: bool = True,
        **fit_options,
    ) -> list[Path]:
        """Write the report files to out_dir and (with `upload`) log them under 'report/' on the sweep's parent run.

        The pictures draw `fits` and the finished trials and their per-epoch history; the report does
        no analysis of its own. Without `fits` it computes them (`self.fit(n_boot, **fit_options)`)
        and, with `upload`, logs them as fits/fits.json beside the files: only once every file is
        written, so a report that fails halfway leaves the sweep's run as it was.
        """
        from dashboards import Labels, write_report

        computed = fits is None
        if computed:
            fits = self.fit(n_boot=n_boot, log=False, **fit_options)
        trials = self.results()
        history = self.history(trials, tuple(dict.fromkeys(("train_error", fits.metric))))
        labels = Labels.of(self.workload, fits)
        written = write_report(trials, fits, out_dir, title=self.spec.name, history=history, labels=labels, formats=formats)
        if upload:
            if computed:
                self.log_fits(fits)
            self.upload_report(out_dir)
        return written

    def upload_report(self, out_dir: str | Path) -> None:
        """Log the report files in out_dir under 'report/' on the parent run; ArtifactUploadFailed if the store refuses."""
        self.store.log_artifacts(self.parent_run_id, out_dir, "report")


def check_fit_options(
    spec: SweepSpec, workload, trials: list[Trial], envelope: Sequence[str], n_params: str, split_by: Sequence[str] = ()
) -> None:
    """Fit options this sweep cannot take are bad input, found before MLflow is read."""
    for option, axes in (("envelope", envelope), ("split-by", split_by)):
        unknown = [a for a in axes if a not in spec.axes]
        if unknown:
            raise SpecError(f"{option}: {unknown[0]!r} is not an axis of this sweep (axes: {', '.join(spec.axes)})")
    sizes = {"seed"} | {getattr(workload, name, None) for name in ("model_size_param", "data_size_param")}
    bad = [a for a in split_by if a in sizes or a in envelope]
    if bad:
        why = "is also enveloped" if bad[0] in envelope else "is a size or the seed, which every fit already spans"
        raise SpecError(f"split-by: {bad[0]!r} {why}; split by another axis (weight_decay, lr...)")
    if n_params == "with_embeddings" and trials and trials[0].size.n_params_with_embeddings is None:
        raise SpecError(f"n_params: with_embeddings needs a parameter count with embeddings, which workload {spec.workload!r} does not report")


# -- the same as functions of a spec ------------------------------------------------------------------


def plan_sweep(spec: SweepSpec, offline: bool = False, confirmed: bool = False) -> SweepPlan:
    return Sweep(spec).plan(offline=offline, confirmed=confirmed)


def run_sweep(spec: SweepSpec, **options) -> SweepOutcome:
    """Sweep(spec).run(**options): address, num_cpus, confirmed, progress."""
    return Sweep(spec).run(**options)


def sweep_status(spec: SweepSpec) -> SweepState:
    return Sweep(spec).status()


def fit_sweep(spec: SweepSpec, **options) -> SweepFits:
    """Sweep(spec).fit(**options): n_boot, log, metric, train_tol, min_rise, epoch_wise, envelope, split_by, n_params."""
    return Sweep(spec).fit(**options)


def report_sweep(spec: SweepSpec, out_dir: str | Path, **options) -> list[Path]:
    """Sweep(spec).report(out_dir, **options): n_boot, formats, fits, and the fit's options."""
    return Sweep(spec).report(out_dir, **options)
