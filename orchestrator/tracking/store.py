"""A sweep's MLflow experiment: its parent run, its trials' child runs, and the artifacts beside them.

Run ids are passed explicitly through the client (never the fluent API's active-run stack), and a
trial's metrics go in with `log_batch`, never one call per value. `run` is resumable because a
trial with a FINISHED child run is never submitted again, and a trial's unfinished run is reused
rather than duplicated.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pandas as pd
from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException

from orchestrator.tracking import schema
from orchestrator.tracking.client import (
    ArtifactUploadFailed,
    TrackingUnavailable,
    first_line,
    is_remote,
    open_client,
    shown,
    sqlite_path,
)

# Calls in flight at once against a tracking server (MLflow's HTTP pool keeps 10 connections).
SERVER_CONCURRENCY = 8

# MLflow's per-call limits for log_batch, and search_runs' largest page.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_SEARCH_PAGE = 50_000

# Where each recorder round leaves its trials' per-epoch metrics, one Parquet file, on the parent run.
HISTORY_ARTIFACT_DIR = "histories"
# How long a driver that created a parent run waits before it looks for others created at the same time.
PARENT_SETTLE_S = 2.0
# Why a parent run ended FAILED or KILLED, in words.
END_REASON_TAG = "scalesweep.end_reason"

log = logging.getLogger(__name__)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _log_batches(params: list[Param], metrics: list[Metric], tags: list[RunTag]) -> list[dict[str, list]]:
    """Keyword arguments for as few log_batch calls as MLflow's limits allow, in order: params
    first, tags (a trial's final status) only once every param and metric has its call."""
    batches = []
    while True:
        batch = {"params": params[:MAX_PARAMS_PER_BATCH]}
        room = MAX_ENTITIES_PER_BATCH - len(batch["params"])
        batch["metrics"] = metrics[: min(MAX_METRICS_PER_BATCH, room)]
        params, metrics = params[len(batch["params"]) :], metrics[len(batch["metrics"]) :]
        room -= len(batch["metrics"])
        batch["tags"] = [] if params or metrics else tags[: min(MAX_TAGS_PER_BATCH, room)]
        tags = tags[len(batch["tags"]) :]
        batches.append(batch)
        if not (params or metrics or tags):
            return batches


def is_terminal(run_status: str) -> bool:
    return RunStatus.is_terminated(RunStatus.from_string(run_status))


class SweepStore:
    """A sweep's MLflow experiment: open the parent run, record trials, read them back."""

    def __init__(
        self, tracking_uri: str, experiment: str, artifact_location: str | None = None, max_outage_s: float = 300.0
    ):
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment
        self._artifact_location = artifact_location
        db = sqlite_path(tracking_uri)
        if db is not None and artifact_location is None:
            self._artifact_location = (db.resolve().parent / "mlartifacts").as_uri()
        self.remote = is_remote(tracking_uri)
        self.client = open_client(tracking_uri, max_outage_s)
        self._pool: ThreadPoolExecutor | None = None
        self._experiment_id: str | None = None

    # -- experiment and parent run -------------------------------------------------------------

    def find_experiment_id(self) -> str | None:
        """The experiment's id, or None when it does not exist; never creates it (reads change nothing)."""
        if self._experiment_id is None:
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            if experiment is not None and experiment.lifecycle_stage != "deleted":
                self._experiment_id = experiment.experiment_id
        return self._experiment_id

    @property
    def experiment_id(self) -> str:
        """The experiment's id, created (or restored from MLflow's trash) on first use."""
        if self._experiment_id is None:
            try:
                experiment = self.client.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    try:
                        self._experiment_id = self.client.create_experiment(
                            self.experiment_name, artifact_location=self._artifact_location
                        )
                    except MlflowException as err:
                        if err.error_code != "RESOURCE_ALREADY_EXISTS":
                            raise
                        # Another driver created it a moment ago.
                        self._experiment_id = self.client.get_experiment_by_name(self.experiment_name).experiment_id
                else:
                    if experiment.lifecycle_stage == "deleted":
                        self.client.restore_experiment(experiment.experiment_id)
                    self._experiment_id = experiment.experiment_id
            except TrackingUnavailable:
                raise
            except Exception as err:  # any store failure here means nothing can be recorded
                raise TrackingUnavailable(f"cannot open MLflow experiment at {shown(self.tracking_uri)}: {first_line(err)}") from err
        return self._experiment_id

    def find_sweeps(self, name: str) -> list[str]:
        """Parent run ids of sweep `name`, oldest first (more than one only where two first runs raced)."""
        experiment_id = self.find_experiment_id()
        if experiment_id is None:
            return []
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{schema.ROLE_TAG}` = 'sweep' and tags.sweep = '{name}'",
            order_by=["attributes.start_time ASC"],
        )
        return [run.info.run_id for run in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))]

    def find_sweep(self, name: str) -> str | None:
        """The parent run id of sweep `name` (the oldest, should two first runs have raced), or None."""
        found = self.find_sweeps(name)
        return found[0] if found else None

    def open_sweep(self, name: str, spec: dict[str, Any], n_trials: int) -> str:
        """The sweep's parent run, created on first use. Two drivers that both create one keep the
        oldest: the other is deleted (MLflow's trash)."""
        found = self.find_sweeps(name)
        if found:
            return found[0]
        tags = {schema.ROLE_TAG: "sweep", "sweep": name, "workload": spec["workload"], "n_trials": str(n_trials)}
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        params = [Param("workload", spec["workload"]), Param("axes", ",".join(spec["axes"]))]
        params += [Param(f"param.{k}", schema.tag_value(v)[:6000]) for k, v in spec.get("params", {}).items()]
        for chunk in _chunks(params, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=chunk)
        # Another driver may be creating one at this moment, its start time taken before ours but
        # committed after: wait until both are visible, then both keep the same, oldest one.
        time.sleep(PARENT_SETTLE_S)
        winner = self.find_sweeps(name)[0]
        if winner != run_id:
            self.client.delete_run(run_id)
        return winner

    def sweep_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def start_sweep(self, run_id: str, spec: dict[str, Any], n_trials: int, tags: dict[str, str]) -> None:
        """Mark the parent run RUNNING for a driver that holds its lease; record the spec it runs."""
        self.client.update_run(run_id, status="RUNNING")
        tags = {**tags, "n_trials": str(n_trials), END_REASON_TAG: ""}
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        try:
            self.client.log_dict(run_id, spec, "spec.json")
        except TrackingUnavailable:
            raise
        except Exception as err:  # a read-only artifact store: the spec's identity is in the tags already
            log.warning("could not upload spec.json to the sweep's run (%s); the sweep goes on", err)

    def log_sweep_compute(self, run_id: str, flops: dict[str, float]) -> None:
        """The sweep's compute totals (FLOPs) as step-0 metrics of its parent run, e.g. spent_flops."""
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(name, float(value), now, 0) for name, value in flops.items()])

    def close_sweep(self, run_id: str, status: str, reason: str = "") -> None:
        """End the parent run: FINISHED, FAILED or KILLED, with the reason in a tag when it did not finish."""
        if reason:
            self.client.log_batch(run_id, tags=[RunTag(END_REASON_TAG, schema.tag_value(reason))])
        self.client.set_terminated(run_id, status=status)

    # -- reading child runs ----------------------------------------------------------------------

    def search_children(self, parent_run_id: str, where: str = "", view: int = ViewType.ACTIVE_ONLY) -> pd.DataFrame:
        """The sweep's child runs matching `where` (an MLflow filter, ANDed), as a schema.runs_table."""
        experiment_id = self.find_experiment_id()
        if experiment_id is None:
            return schema.runs_table([])
        filter_string = f"tags.`{schema.PARENT_TAG}` = '{parent_run_id}'" + (f" and {where}" if where else "")
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment_id], filter_string=filter_string, run_view_type=view,
                max_results=MAX_SEARCH_PAGE, page_token=token,
            )  # fmt: skip
            runs += page
            token = page.token
            if not token:
                return schema.runs_table(runs, deleted=view == ViewType.DELETED_ONLY)

    def runs_by_id(self, run_ids: Sequence[str]) -> pd.DataFrame:
        """The runs with these ids, active or deleted (`deleted` says which); ids no longer stored are absent."""
        experiment_id = self.find_experiment_id()
        frames = []
        for chunk in _chunks(list(run_ids), 500):
            ids = ", ".join(f"'{run_id}'" for run_id in chunk)
            for view in (ViewType.ACTIVE_ONLY, ViewType.DELETED_ONLY):
                runs = self.client.search_runs(
                    [experiment_id], filter_string=f"attributes.run_id IN ({ids})", run_view_type=view, max_results=len(chunk)
                )
                frames.append(schema.runs_table(runs, deleted=view == ViewType.DELETED_ONLY))
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else schema.runs_table([])

    def history_files(self, parent_run_id: str) -> list[str]:
        """Artifact paths of the parent run's compact per-epoch histories, oldest first."""
        return sorted(self.list_artifacts(parent_run_id, HISTORY_ARTIFACT_DIR))

    def download(self, run_id: str, paths: Sequence[str], dst: Path) -> list[Path]:
        """Download artifact files of a run into the folder dst, each by its base name (several at once
        against a server); their local paths."""
        dst.mkdir(parents=True, exist_ok=True)
        return self._map(lambda path: Path(self.client.download_artifacts(run_id, path, str(dst))), list(paths))

    # -- trials ------------------------------------------------------------------------------

    def start_trials(
        self, parent_run_id: str, trials: Iterable, reusable: dict[str, str] | None = None, log_params: bool = True
    ) -> dict[str, str]:
        """Child run ids by trial key, RUNNING: a trial's unfinished run (in `reusable`, by trial key)
        is reused, never duplicated.

        With `log_params=False` a new run gets its tags only, and the caller passes the trial's
        params and sizes to `finish_trials` instead: one MLflow call fewer for a trial whose result
        is already at hand."""
        reusable = reusable or {}

        def start(trial) -> str:
            entities = (schema.trial_params(trial), schema.size_metrics(trial)) if log_params else ([], [])
            run_id = reusable.get(trial.key)
            if run_id is None:
                run_id = self._create_trial_run(parent_run_id, trial)
                status_tags = []  # created with them
            else:
                self.client.update_run(run_id, status="RUNNING")
                # Its params may never have been logged (the run was opened to take them at its end).
                status_tags = [RunTag(schema.STATUS_TAG, "running")]
            if entities[0] or status_tags:
                for batch in _log_batches(*entities, status_tags):
                    self.client.log_batch(run_id, **batch)
            return run_id

        trials = list(trials)
        return dict(zip((trial.key for trial in trials), self._map(start, trials)))

    def _map(self, fn, items: list) -> list:
        """fn over items, results in order: concurrently against a tracking server, whose calls
        mostly wait on the network (and on a server's several workers); one at a time against an
        in-process store, whose calls hold the interpreter and SQLite's lock anyway."""
        if not self.remote or len(items) < 2:
            return [fn(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(SERVER_CONCURRENCY, thread_name_prefix="scalesweep-mlflow")
        return list(self._pool.map(fn, items))

    def _create_trial_run(self, parent_run_id: str, trial) -> str:
        """Create a trial's child run once, even when a create that is retried had reached the server."""
        attempts = 0
        tags = schema.trial_tags(trial, parent_run_id)

        def create() -> str:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                found = self._trial_run_ids(parent_run_id, trial.key)
                if found:
                    return found[0]
            return self.client.raw.create_run(self.experiment_id, run_name=trial.label[:250], tags=tags).info.run_id

        return self.client.call(create)

    def _trial_run_ids(self, parent_run_id: str, trial_key: str) -> list[str]:
        runs = self.client.raw.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{schema.PARENT_TAG}` = '{parent_run_id}' and tags.{schema.TRIAL_KEY_TAG} = '{trial_key}'",
            order_by=["attributes.start_time ASC"],
        )
        return [run.info.run_id for run in runs]

    def prepare_resume(self, runs: pd.DataFrame) -> pd.DataFrame:
        """Settle what a dead driver left behind before submitting again; return the runs still in use.

        A run left RUNNING is marked KILLED (tag status=killed) and reused when its trial is
        submitted again, so the trial keeps one record. An unfinished run that already holds
        per-epoch metrics (its driver died while logging) cannot be reused without mixing two
        attempts' histories: it is deleted (MLflow's trash, tag status=superseded) and the trial
        starts over in a fresh run. No other driver may be running this sweep meanwhile.
        """
        runs = runs[~runs["deleted"] & schema.column(runs, f"tags.{schema.DUPLICATE_OF_TAG}").isna()]  # marked extras stay as they are
        unfinished = runs[runs["run_status"] != "FINISHED"]
        epoch_metrics = [c for c in unfinished.columns if c.startswith("metrics.")]
        epoch_metrics = [c for c in epoch_metrics if c.removeprefix("metrics.") not in (*schema.SIZE_METRICS, "duration_s")]
        logged = unfinished[epoch_metrics].notna().any(axis=1) if epoch_metrics else pd.Series(False, index=unfinished.index)
        superseded = unfinished[logged]
        for run_id in superseded["run_id"]:
            self.client.log_batch(run_id, tags=[RunTag(schema.STATUS_TAG, "superseded")])
            self.client.delete_run(run_id)
        for run_id in unfinished.loc[~logged & (unfinished["run_status"] == "RUNNING"), "run_id"]:
            self.client.log_batch(run_id, tags=[RunTag(schema.STATUS_TAG, "killed")])
            self.client.set_terminated(run_id, status="KILLED")
        return runs[~runs["run_id"].isin(superseded["run_id"])]

    def mark_duplicates(self, runs: pd.DataFrame) -> int:
        """Where a trial has several FINISHED runs (two drivers at once, an older scalesweep), keep the
        one that finished first and mark the others: tag duplicate_of=<kept run>, status=duplicate, run
        KILLED, so nothing counts them again. Returns how many were marked."""
        finished = runs[~runs["deleted"] & (runs["run_status"] == "FINISHED")]
        finished = finished.assign(_key=schema.trial_keys(finished)).sort_values(["_key", "end_time", "run_id"])
        kept = finished.drop_duplicates("_key").set_index("_key")["run_id"]
        extra = finished[finished.duplicated("_key")]
        for run_id, key in zip(extra["run_id"], extra["_key"]):
            tags = [RunTag(schema.DUPLICATE_OF_TAG, kept[key]), RunTag(schema.STATUS_TAG, "duplicate")]
            self.client.log_batch(run_id, tags=tags)
            self.client.set_terminated(run_id, status="KILLED")
        return len(extra)

    def kill_runs(self, run_ids: Sequence[str]) -> None:
        """Mark runs whose trials were interrupted KILLED now (tag status=killed); the next run reuses them."""
        def kill(run_id: str) -> None:
            self.client.log_batch(run_id, tags=[RunTag(schema.STATUS_TAG, "killed")])
            self.client.set_terminated(run_id, status="KILLED")

        self._map(kill, list(run_ids))

    def finish_trial(self, run_id: str, result, params: Sequence[Param] = (), sizes: Sequence[Metric] = ()) -> None:
        """Log a trial's whole per-epoch history and final tags, then end its run."""
        self.finish_trials([(run_id, result, params, sizes)])

    def finish_trials(self, finished: Sequence[tuple[str, Any, Sequence[Param], Sequence[Metric]]], parent_run_id: str | None = None) -> None:
        """End many trials' runs: each run's history, tags and any params and sizes not yet logged
        (logging a param again with its value is a no-op) in as few log_batch calls as MLflow allows,
        all runs' batches in flight at once on a tracking server (MLflow's async logging; an in-process
        SQLite store is faster called directly), every one waited for and checked before any run is
        marked terminated, so a FINISHED run always has its metrics.

        With `parent_run_id`, the finished trials' per-epoch metrics also go to the parent run as one
        compact Parquet file (HISTORY_ARTIFACT_DIR), so that reading a sweep back costs a few calls
        instead of one per run and metric; should that upload fail, the runs still end and readers
        fall back to the runs' own metric histories.
        """
        pending = []
        for run_id, result, params, sizes in finished:
            metrics, tags = schema.result_entities(result)
            for batch in _log_batches(list(params), [*sizes, *metrics], tags):
                operation = self.client.log_batch(run_id, **batch, synchronous=not self.remote)
                if operation is not None:
                    pending.append(operation)
        for operation in pending:
            operation.wait()  # raises the MlflowException of a batch that failed
        if parent_run_id is not None:
            self._log_histories(parent_run_id, [(run_id, result) for run_id, result, *_ in finished if result.status == "finished"])
        self._map(
            lambda item: self.client.set_terminated(item[0], status="FINISHED" if item[1].status == "finished" else "FAILED"),
            list(finished),
        )

    def _log_histories(self, parent_run_id: str, finished: list[tuple[str, Any]]) -> None:
        table = schema.history_table(finished)
        if table.empty:
            return
        with tempfile.TemporaryDirectory(prefix="scalesweep-history-") as tmp:
            path = Path(tmp) / f"{uuid.uuid4().hex}.parquet"
            table.to_parquet(path, index=False)
            try:
                self.client.log_artifact(parent_run_id, str(path), HISTORY_ARTIFACT_DIR)
            except ArtifactUploadFailed as err:  # e.g. a read-only artifact store: the runs' metrics are the record
                log.warning("could not upload the compact history of %d trials (%s); reads will use their runs' metrics", len(finished), err)
            except TrackingUnavailable:
                raise
            except Exception as err:
                log.warning("could not upload the compact history of %d trials (%s); reads will use their runs' metrics", len(finished), err)

    # -- artifacts -----------------------------------------------------------------------------

    def log_artifacts(self, run_id: str, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def log_json(self, run_id: str, data: Any, artifact_file: str) -> None:
        self.client.log_dict(run_id, data, artifact_file)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        return [f.path for f in self.client.list_artifacts(run_id, path)]

    def run_url(self, ui_base: str, run_id: str) -> str:
        return f"{ui_base.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"
