"""MLflow, the only record of a sweep: one parent run per sweep, one child run per trial.

Only this module imports mlflow. It passes run ids explicitly through `MlflowClient` (never the
fluent API's active-run stack) and writes each trial's metrics with `log_batch`, never one call
per value. `finished_trial_keys` is what makes `run` resumable: a trial with a FINISHED child run
is never submitted again, and a trial's unfinished run is reused rather than duplicated.

Every client call goes through `RetryingClient`: while a tracking server is down the call waits
with exponential backoff (holding the results it was logging, so they arrive once the server is
back) up to `max_outage_s`, then raises `TrackingUnavailable` and the sweep stops, resumable.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import urlparse

import requests
from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

# Calls in flight at once against a tracking server (MLflow's HTTP pool keeps 10 connections).
SERVER_CONCURRENCY = 8

# MLflow's per-call limits for log_batch.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_TAG_CHARS = 5000

# MLflow's own HTTP retries default to 7 with a factor-2 backoff (minutes) and a 120 s timeout;
# RetryingClient owns the waiting instead, so an outage is bounded by tracking.max_outage_s.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}

# A sweep's results are nobody else's business: MLflow's usage telemetry stays off unless asked for.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
ROLE_TAG = "scalesweep.role"  # "sweep" on the parent, "trial" on children
WSD_PART_TAG = "wsd_part"  # "trunk" or "branch" on the children of a WSD sweep


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached or opened."""


@dataclass(frozen=True)
class TrialRecord:
    """A trial's child run as stored: enough to resume, report status or load results."""

    run_id: str
    trial_key: str
    run_status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED
    status: str  # ours: running, finished, failed, diverged
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    start_time: int | None
    end_time: int | None


def with_sqlite_busy_timeout(uri: str, seconds: int = 60) -> str:
    """SQLite locks the whole file per write; wait for a reader or writer instead of failing."""
    if uri.startswith("sqlite:///") and "timeout=" not in uri:
        return f"{uri}{'&' if '?' in uri else '?'}timeout={seconds}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def use_write_ahead_log(db: Path) -> None:
    """Put a SQLite store in WAL mode (kept in the file): readers such as the MLflow UI or
    `scalesweep status` no longer block the sweep's writes, and each commit costs about half."""
    try:
        with closing(sqlite3.connect(db, timeout=10)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as err:  # a store another process holds locked keeps its mode; still usable
        log.debug("could not switch %s to WAL mode: %s", db, err)


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any trial launches, when a tracking server does not answer."""
    if urlparse(uri).scheme not in ("http", "https"):
        return
    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except requests.RequestException as err:
        raise TrackingUnavailable(f"MLflow tracking server {uri} is unreachable: {err.__class__.__name__}") from None
    if response.status_code != 200:
        raise TrackingUnavailable(f"MLflow tracking server {uri} answered /health with HTTP {response.status_code}")


def is_transient(err: BaseException) -> bool:
    """True for errors a tracking server outage causes: refused or dropped connections, timeouts, 502-504."""
    if isinstance(err, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    if isinstance(err, MlflowException):
        # mlflow.utils.rest_utils wraps connection-level failures as "... failed with exception ...".
        return "failed with exception" in err.message or err.get_http_status_code() in (502, 503, 504)
    return False


class RetryingClient:
    """An MlflowClient whose calls wait out a tracking server outage with exponential backoff.

    A call that fails with a transient error is retried after 0.5 s, 1 s, 2 s ... (at most
    `max_delay_s` apart) until it succeeds or `max_outage_s` seconds have passed since its first
    failure; then it raises TrackingUnavailable. Other errors (a bad request, a missing run) are
    raised at once. The caller keeps what it was logging until the call returns, which is what
    buffers a trial's metrics across an outage.
    """

    def __init__(self, client: MlflowClient, max_outage_s: float = 300.0, first_delay_s: float = 0.5, max_delay_s: float = 8.0):
        self.raw = client
        self.max_outage_s = max_outage_s
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s

    def __getattr__(self, name: str):
        attr = getattr(self.raw, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            return self.call(attr, *args, **kwargs)

        return call

    def call(self, fn, *args, **kwargs):
        delay, deadline = self.first_delay_s, None
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if not is_transient(err):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.max_outage_s
                    log.warning("MLflow at %s did not answer (%s); retrying for up to %.0f s", self.raw.tracking_uri, _short(err), self.max_outage_s)
                if now >= deadline:
                    raise TrackingUnavailable(
                        f"MLflow tracking server {self.raw.tracking_uri} has not answered for {self.max_outage_s:g} s "
                        f"(tracking.max_outage_s): {_short(err)}. The sweep stopped; run the same command again "
                        "once the server is back to resume it"
                    ) from None
                time.sleep(min(delay, deadline - now))
                delay = min(2 * delay, self.max_delay_s)


def _short(err: BaseException) -> str:
    text = getattr(err, "message", None) or str(err)
    return f"{err.__class__.__name__}: {text[:300]}"


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


def _result_entities(result) -> tuple[list[Metric], list[RunTag]]:
    """A trial result's per-epoch metrics and final tags."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(name, value, now, int(row["epoch"])) for row in result.history for name, value in row.items() if name != "epoch"
    ]
    metrics.append(Metric("duration_s", result.duration_s, now, 0))
    tags = [RunTag("status", result.status), RunTag("attempts", str(result.attempts))]
    tags.append(RunTag("pack_size", str(getattr(result, "pack_size", 1))))
    if result.error:
        tags.append(RunTag("error", _tag_value(result.error)))
    if result.worker:
        tags.append(RunTag("worker", result.worker))
    return metrics, tags


def wsd_tags(trial) -> dict[str, str]:
    """A WSD trial's place and honest compute: `wsd_part` (trunk or branch); a branch's `trunk_key`,
    `branch_step` (its trunk's data size where it branched, data units), `cooldown_flops` (what it
    trained itself) and `spent_flops` (that plus its share of the trunk), in FLOPs. A trunk's compute
    is its branches'; fits leave trunks out. Nothing for a trial trained from scratch."""
    if trial.wsd is None:
        return {}
    tags = {WSD_PART_TAG: trial.wsd.part.kind}
    if not trial.is_trunk:
        tags.update(
            trunk_key=trial.depends_on,
            branch_step=str(trial.wsd.branch_start),
            cooldown_flops=f"{trial.wsd.cooldown_flops:.6g}",
            spent_flops=f"{trial.spent_flops:.6g}",
        )
    return tags


def trial_params(trial) -> list[Param]:
    """A trial's config as MLflow params."""
    return [Param(k, _tag_value(v)) for k, v in sorted(trial.config.items())]


def _tag_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:MAX_TAG_CHARS]


class SweepStore:
    """A sweep's MLflow experiment: open the parent run, record trials, read them back."""

    def __init__(
        self, tracking_uri: str, experiment: str, artifact_location: str | None = None, max_outage_s: float = 300.0
    ):
        self.tracking_uri = with_sqlite_busy_timeout(tracking_uri)
        self.experiment_name = experiment
        self._artifact_location = artifact_location
        check_reachable(tracking_uri)
        db = sqlite_path(tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            use_write_ahead_log(db)
            if artifact_location is None:
                self._artifact_location = (db.resolve().parent / "mlartifacts").as_uri()
        self.remote = urlparse(tracking_uri).scheme in ("http", "https")
        if self.remote:
            for name, value in MLFLOW_HTTP_DEFAULTS.items():
                os.environ.setdefault(name, value)
        self.client = RetryingClient(MlflowClient(tracking_uri=self.tracking_uri), max_outage_s)
        self._pool: ThreadPoolExecutor | None = None
        self._experiment_id: str | None = None

    # -- experiment and parent run -------------------------------------------------------------

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            try:
                experiment = self.client.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment_name, artifact_location=self._artifact_location
                    )
                else:
                    if experiment.lifecycle_stage == "deleted":
                        self.client.restore_experiment(experiment.experiment_id)
                    self._experiment_id = experiment.experiment_id
            except Exception as err:  # any store failure here means nothing can be recorded
                raise TrackingUnavailable(f"cannot open MLflow experiment at {self.tracking_uri}: {err}") from err
        return self._experiment_id

    def find_sweep(self, name: str) -> str | None:
        """The parent run id of sweep `name`, or None if it never ran."""
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            return None
        runs = self.client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = 'sweep' and tags.sweep = '{name}'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def open_sweep(self, name: str, spec: dict[str, Any], n_trials: int) -> str:
        """The sweep's parent run, created on first use and marked RUNNING again on resume."""
        run_id = self.find_sweep(name)
        tags = {ROLE_TAG: "sweep", "sweep": name, "workload": spec["workload"], "n_trials": str(n_trials)}
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
            run_id = run.info.run_id
            params = [Param("workload", spec["workload"]), Param("axes", ",".join(spec["axes"]))]
            params += [Param(f"param.{k}", _tag_value(v)[:6000]) for k, v in spec.get("params", {}).items()]
            for chunk in _chunks(params, MAX_PARAMS_PER_BATCH):
                self.client.log_batch(run_id, params=chunk)
        else:
            self.client.update_run(run_id, status="RUNNING")
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.log_dict(run_id, spec, "spec.json")
        return run_id

    def log_sweep_compute(self, run_id: str, flops: dict[str, float]) -> None:
        """The sweep's compute totals (FLOPs) as metrics of its parent run, e.g. spent_flops."""
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(name, float(value), now, 0) for name, value in flops.items()])

    def close_sweep(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)

    # -- trials ------------------------------------------------------------------------------

    def trial_records(self, parent_run_id: str) -> list[TrialRecord]:
        """Every child run of a sweep, oldest first."""
        records, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                run_view_type=ViewType.ACTIVE_ONLY,
                order_by=["attributes.start_time ASC"],
                max_results=1000,
                page_token=token,
            )
            for run in page:
                tags = run.data.tags
                records.append(
                    TrialRecord(
                        run_id=run.info.run_id,
                        trial_key=tags.get("trial_key", ""),
                        run_status=run.info.status,
                        status=tags.get("status", run.info.status.lower()),
                        tags=dict(tags),
                        params=dict(run.data.params),
                        metrics=dict(run.data.metrics),
                        start_time=run.info.start_time,
                        end_time=run.info.end_time,
                    )
                )
            token = page.token
            if not token:
                return records

    def finished_trial_keys(self, parent_run_id: str) -> set[str]:
        return {r.trial_key for r in self.trial_records(parent_run_id) if r.run_status == "FINISHED"}

    def start_trials(
        self, parent_run_id: str, trials: Iterable, existing: list[TrialRecord] | None = None, log_params: bool = True
    ) -> dict[str, str]:
        """Child run ids by trial key, RUNNING: a trial's unfinished run is reused, never duplicated.

        With `log_params=False` a new run gets its tags only, and the caller passes the trial's
        params to `finish_trials` instead: one MLflow call fewer for a trial whose result is
        already at hand."""
        existing = self.trial_records(parent_run_id) if existing is None else existing
        reusable = {r.trial_key: r.run_id for r in existing if r.run_status != "FINISHED"}

        def start(trial) -> str:
            tags = {
                PARENT_TAG: parent_run_id,
                ROLE_TAG: "trial",
                "trial_key": trial.key,
                "workload": trial.workload,
                "n_params": str(trial.size.n_params),
                "n_samples": str(trial.size.n_samples),
                "train_flops": f"{trial.size.train_flops:.6g}",
                "seed": str(trial.config.get("seed", "")),
                "status": "running",
            }
            optional = {
                "n_params_with_embeddings": trial.size.n_params_with_embeddings,
                "train_flops_with_attention": trial.size.train_flops_with_attention,
                "compute_budget": trial.compute_budget,
            }
            tags.update({name: str(value) for name, value in optional.items() if value is not None})
            tags.update(wsd_tags(trial))
            params = trial_params(trial) if log_params else []
            run_id = reusable.get(trial.key)
            if run_id is None:
                run_id = self._create_trial_run(parent_run_id, trial, tags)
                status_tags = []  # created with them
            else:
                self.client.update_run(run_id, status="RUNNING")
                # Its params may never have been logged (the run was opened to take them at its end).
                status_tags = [RunTag("status", "running")]
            if params or status_tags:
                for batch in _log_batches(params, [], status_tags):
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

    def _create_trial_run(self, parent_run_id: str, trial, tags: dict[str, str]) -> str:
        """Create a trial's child run once, even when a create that is retried had reached the server."""
        attempts = 0

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
            filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.trial_key = '{trial_key}'",
            order_by=["attributes.start_time ASC"],
        )
        return [run.info.run_id for run in runs]

    def prepare_resume(self, records: list[TrialRecord]) -> list[TrialRecord]:
        """Settle what a dead driver left behind before submitting again; return the records still in use.

        A run left RUNNING is marked KILLED (tag status=killed) and reused when its trial is
        submitted again, so the trial keeps one record. An unfinished run that already holds
        per-epoch metrics (its driver died while logging) cannot be reused without mixing two
        attempts' histories: it is deleted (MLflow's trash, tag status=superseded) and the trial
        starts over in a fresh run. No other driver may be running this sweep meanwhile.
        """
        kept = []
        for record in records:
            if record.run_status == "FINISHED":
                kept.append(record)
            elif set(record.metrics) - {"duration_s"}:
                self.client.log_batch(record.run_id, tags=[RunTag("status", "superseded")])
                self.client.delete_run(record.run_id)
            else:
                if record.run_status == "RUNNING":
                    self.client.log_batch(record.run_id, tags=[RunTag("status", "killed")])
                    self.client.set_terminated(record.run_id, status="KILLED")
                kept.append(record)
        return kept

    def finish_trial(self, run_id: str, result, params: Sequence[Param] = ()) -> None:
        """Log a trial's whole per-epoch history and final tags, then end its run."""
        self.finish_trials([(run_id, result, params)])

    def finish_trials(self, finished: Sequence[tuple[str, Any, Sequence[Param]]]) -> None:
        """End many trials' runs: each run's history, tags and any params not yet logged (logging
        a param again with its value is a no-op) in as few log_batch calls as MLflow allows, all
        runs' batches in flight at once on a tracking server (MLflow's async logging; an in-process
        SQLite store is faster called directly), every one waited for and checked before any run is
        marked terminated, so a FINISHED run always has its metrics."""
        pending = []
        for run_id, result, params in finished:
            for batch in _log_batches(list(params), *_result_entities(result)):
                operation = self.client.log_batch(run_id, **batch, synchronous=not self.remote)
                if operation is not None:
                    pending.append(operation)
        for operation in pending:
            operation.wait()  # raises the MlflowException of a batch that failed
        self._map(
            lambda item: self.client.set_terminated(item[0], status="FINISHED" if item[1].status == "finished" else "FAILED"),
            list(finished),
        )

    def metric_history(self, run_id: str, keys: Iterable[str]) -> list[dict[str, float]]:
        """Per-epoch rows {'epoch': e, metric: value, ...} of one run."""
        rows: dict[int, dict[str, float]] = {}
        for key in keys:
            for metric in self.client.get_metric_history(run_id, key):
                rows.setdefault(metric.step, {"epoch": metric.step})[key] = metric.value
        return [rows[step] for step in sorted(rows)]

    # -- artifacts -----------------------------------------------------------------------------

    def log_artifacts(self, run_id: str, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def log_json(self, run_id: str, data: Any, artifact_file: str) -> None:
        self.client.log_dict(run_id, data, artifact_file)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        return [f.path for f in self.client.list_artifacts(run_id, path)]

    def run_url(self, ui_base: str, run_id: str) -> str:
        return f"{ui_base.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"


def is_terminal(run_status: str) -> bool:
    return RunStatus.is_terminated(RunStatus.from_string(run_status))


# Trials whose runs a recorder creates between looks at its queue for trials that have already
# ended, and how many ended trials it holds before recording them while more keep arriving.
START_CHUNK = 32


def _ending_keys(items: list[tuple[str, Any]]) -> set[str]:
    return {payload[0].key for kind, payload in items if kind == "finish"}


class TrialRecorder:
    """Records trials off the scheduler's hot path: one background thread starts and ends runs.

    `started(pack)` and `finished(trial, result)` only enqueue and return at once; the thread takes
    whatever queues up within `window_s` of the first item, in order (a trial's start always
    precedes its end), and records it with `start_trials` and one `finish_trials` call for all
    results that arrived meanwhile; a trial that ends within the window costs one call less. `close()`
    drains the queue and raises the first error the thread met; `error` lets the caller stop early.
    `busy_s` is the wall time spent in MLflow calls (seconds), to see where time goes.
    """

    def __init__(
        self, store: SweepStore, parent_run_id: str, existing: list[TrialRecord] | None = None, window_s: float = 0.25
    ):
        import queue
        import threading

        self.store = store
        self.parent_run_id = parent_run_id
        self.existing = existing
        self.run_ids: dict[str, str] = {}
        self._params_pending: dict[str, bool] = {}  # trial key -> params still to log at its end
        self.error: BaseException | None = None
        self.busy_s = 0.0
        self.window_s = window_s
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="scalesweep-recorder", daemon=True)
        self._thread.start()

    def started(self, trials: Sequence) -> None:
        self._queue.put(("start", list(trials)))

    def finished(self, trial, result) -> None:
        self._queue.put(("finish", (trial, result)))

    def close(self, timeout_s: float | None = None, raise_error: bool = True) -> None:
        """Wait until everything queued is recorded; raise the recorder's error if it met one."""
        if self._thread.is_alive():
            self._queue.put(("stop", None))
            self._thread.join(timeout_s)
        if raise_error and self.error is not None:
            raise self.error

    def _take_queued(self, items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """Move what has queued up onto the end of `items` (a big pack's ends can arrive while its
        starts are still being recorded); return what was moved."""
        import queue

        taken = []
        while True:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                items.extend(taken)
                return taken

    def _loop(self) -> None:
        import queue

        stop = False
        while not stop:
            # Take what arrives within a short window: a short trial's end then comes with its start.
            items = [self._queue.get()]
            window_end = time.monotonic() + self.window_s
            while items[-1][0] != "stop":
                try:
                    items.append(self._queue.get(timeout=max(window_end - time.monotonic(), 0)))
                except queue.Empty:
                    break
            if self.error is None:
                started = time.perf_counter()
                try:
                    self._record(items)
                except Exception as err:  # kept for close(); the driver checks it between packs
                    self.error = err
                self.busy_s += time.perf_counter() - started
            stop = any(kind == "stop" for kind, _ in items)

    def _record(self, items: list[tuple[str, Any]]) -> None:
        """Record `items`, and whatever queues up meanwhile (it joins `items`), one round at a time:
        every start of a round first (a trial's end is queued after its start, never before), so
        their runs are created together, then its ends."""
        # A trial whose start and end arrive together (short trials, a recorder behind) gets its
        # params with its metrics: three MLflow calls instead of four.
        ending = _ending_keys(items)
        finished: list[tuple[str, Any, list[Param]]] = []
        done = 0
        while done < len(items):
            round_, done = items[done:], len(items)
            # A pack retried after its worker died keeps the runs its first dispatch opened.
            fresh = {t.key: t for kind, payload in round_ if kind == "start" for t in payload if t.key not in self.run_ids}
            for chunk in _chunks(list(fresh.values()), START_CHUNK):
                ending |= _ending_keys(self._take_queued(items))  # a big pack's ends may be in already
                for log_params in (True, False):
                    group = [trial for trial in chunk if (trial.key in ending) != log_params]
                    if group:
                        self.run_ids.update(self.store.start_trials(self.parent_run_id, group, self.existing, log_params))
                        self._params_pending.update((trial.key, not log_params) for trial in group)
            for kind, payload in round_:
                if kind == "finish":
                    trial, result = payload
                    params = trial_params(trial) if self._params_pending.pop(trial.key, False) else []
                    finished.append((self.run_ids[trial.key], result, params))
            if len(finished) >= START_CHUNK:  # while trials keep coming, end runs as we go
                self.store.finish_trials(finished)
                finished = []
        if finished:
            self.store.finish_trials(finished)
