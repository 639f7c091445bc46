"""How a trial's record is written and read back: MLflow's batch limits, params logged once, SQLite's
mode, and bulk reads through a cache that is never stale."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing

import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag

from orchestrator import load_spec
from orchestrator.grid import expand_grid
from orchestrator.pack import TrialResult
from orchestrator.sweep import Sweep
from orchestrator.tracking import SweepStore, TrialRecorder
from orchestrator.tracking.store import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    MAX_TAGS_PER_BATCH,
    _log_batches,
)


def test_log_batches_keep_every_entity_within_mlflow_limits_params_first_tags_last():
    params = [Param(f"p{i}", "1") for i in range(150)]
    metrics = [Metric("loss", 1.0, 0, step) for step in range(2100)]
    tags = [RunTag("status", "finished"), RunTag("attempts", "1")]

    batches = _log_batches(params, metrics, tags)

    for batch in batches:
        assert len(batch["params"]) <= MAX_PARAMS_PER_BATCH
        assert len(batch["metrics"]) <= MAX_METRICS_PER_BATCH
        assert len(batch["tags"]) <= MAX_TAGS_PER_BATCH
        assert sum(map(len, batch.values())) <= MAX_ENTITIES_PER_BATCH
    assert [p for b in batches for p in b["params"]] == params
    assert [m for b in batches for m in b["metrics"]] == metrics
    assert batches[-1]["tags"] == tags and not any(b["tags"] for b in batches[:-1])
    assert len(batches) == 3  # 2250 entities: the fewest calls the 1000-entity limit allows
    assert _log_batches([], [], [tags[0]]) == [{"params": [], "metrics": [], "tags": [tags[0]]}]


def test_recorder_logs_each_trials_params_once_whether_its_end_comes_with_its_start_or_later(write_spec, toy_spec):
    spec = load_spec(write_spec(toy_spec))
    trials = expand_grid(spec)
    sweep = Sweep(spec)
    store = sweep.store
    parent = store.open_sweep(spec.name, spec.model_dump(mode="json"), len(trials))
    history = [{"epoch": 1, "test_loss": 0.5}]

    # Long trials: started, recorded with their params (visible while they run), then ended.
    recorder = TrialRecorder(store, parent)
    recorder.started(trials[:3])
    deadline = time.monotonic() + 60
    while not (len(running := sweep.runs()) == 3 and running.filter(like="params.").notna().all().all()):
        assert time.monotonic() < deadline, f"started trials not recorded with params: {running}"
        time.sleep(0.2)
    for trial in trials[:3]:
        recorder.finished(trial, TrialResult(trial.key, "finished", history))
    # Short trials: start and end queued together, params ride with the metrics.
    recorder.started(trials[3:])
    for trial in trials[3:]:
        recorder.finished(trial, TrialResult(trial.key, "finished", history))
    recorder.close()

    records = sweep.runs().set_index("tags.trial_key")
    assert len(records) == len(trials)
    for trial in trials:
        record = records.loc[trial.key]
        assert record["run_status"] == "FINISHED" and record["metrics.test_loss"] == 0.5
        params = {k.removeprefix("params."): v for k, v in record.items() if k.startswith("params.")}
        assert params == {k: v if isinstance(v, str) else json.dumps(v) for k, v in trial.config.items()}
        assert record["metrics.n_params"] == trial.size.n_params  # sizes ride with the params, as numbers


def test_a_sqlite_store_is_put_in_write_ahead_log_mode(tmp_path):
    db = tmp_path / "mlflow.db"
    SweepStore(f"sqlite:///{db}", "wal").experiment_id  # opens (creates) the store
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


class SlowStore:
    """Stands in for SweepStore to observe how the recorder groups its calls (each call sleeps, as
    a busy tracking store would); MLflow itself is exercised by the tests above."""

    def __init__(self, seconds_per_trial: float):
        self.seconds_per_trial = seconds_per_trial
        self.params_logged: list[str] = []
        self.finish_batches: list[list[str]] = []

    def start_trials(self, parent_run_id, trials, reusable, log_params):
        time.sleep(self.seconds_per_trial * len(trials))
        if log_params:
            self.params_logged += [t.key for t in trials]
        return {t.key: f"run-{t.key}" for t in trials}

    def finish_trials(self, finished, parent_run_id=None):
        time.sleep(self.seconds_per_trial * len(finished))
        self.finish_batches.append([run_id for run_id, *_ in finished])
        self.params_logged += [run_id.removeprefix("run-") for run_id, _, params, _ in finished if params]


def test_recorder_behind_a_stream_of_short_trials_ends_runs_as_it_goes_and_logs_params_once(toy_spec):
    from orchestrator import parse_spec

    trials = expand_grid(parse_spec({**toy_spec, "name": "stream", "axes": {"n": list(range(1, 2001)), "d": [100]}}))
    store = SlowStore(seconds_per_trial=0.002)
    recorder = TrialRecorder(store, "parent", window_s=0.05)
    fed = []
    # One-trial packs that end at once, a little faster than they are recorded, fed until three
    # rounds have ended: a recorder that gathered while its queue kept filling would end none before
    # the stream ran dry, however slow or busy the machine.
    for trial in trials:
        recorder.started([trial])
        recorder.finished(trial, TrialResult(trial.key, "finished", [{"epoch": 1, "test_loss": 1.0}]))
        fed.append(trial)
        if len(store.finish_batches) >= 3:
            break
        time.sleep(0.002)
    recorder.close()

    assert len(fed) < len(trials), "no runs were ended while trials kept arriving"
    ended = [run_id for batch in store.finish_batches for run_id in batch]
    assert sorted(ended) == sorted(f"run-{t.key}" for t in fed)  # each exactly once
    assert sorted(store.params_logged) == sorted(t.key for t in fed)


# -- reading a sweep back ---------------------------------------------------------------------------


def open_toy_sweep(tmp_path, toy_spec, n_values=(10, 100, 1000, 10000)):
    from orchestrator import parse_spec

    body = {**toy_spec, "name": "reads", "axes": {"n": list(n_values), "d": [100]}}
    body["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    sweep = Sweep(parse_spec(body))
    parent = sweep.store.open_sweep("reads", sweep.spec.model_dump(mode="json"), len(sweep.trials))
    return sweep, parent


def toy_result(trial, epochs=3):
    history = [{"epoch": e, "test_error": trial.config["n"] / (1000.0 * e), "train_error": 0.5 / e} for e in range(1, epochs + 1)]
    return TrialResult(trial.key, "finished", history)


def state_of(table):
    return {(r.run_id, r.run_status, r.deleted) for r in table[["run_id", "run_status", "deleted"]].itertuples()}


def test_cached_reads_see_every_change_a_resume_a_rerun_or_the_mlflow_ui_makes(tmp_path, toy_spec, monkeypatch):
    from orchestrator.tracking import SweepReader

    monkeypatch.setenv("SCALESWEEP_CACHE", str(tmp_path / "cache"))
    sweep, parent = open_toy_sweep(tmp_path, toy_spec)
    store, (a, b, c, d) = sweep.store, sweep.trials
    ids = store.start_trials(parent, [a, b, c])
    store.finish_trials([(ids[a.key], toy_result(a), [], []), (ids[b.key], toy_result(b), [], [])], parent)

    def cached():  # a new process's reader: only the cache on disk carries over
        return SweepReader(store, parent).runs()

    def from_scratch():
        return SweepReader(store, parent, cache_dir=tmp_path / f"fresh-{time.monotonic_ns()}").runs()

    first = cached()
    assert len(first) == 3 and set(first["run_status"]) == {"FINISHED", "RUNNING"}
    # What can happen between two reads: a running trial ends, a new one starts and ends, a run is
    # deleted in the UI, another is marked KILLED (a duplicate), and a deleted one comes back.
    store.finish_trials([(ids[c.key], toy_result(c), [], [])], parent)
    ids.update(store.start_trials(parent, [d]))
    store.finish_trials([(ids[d.key], toy_result(d), [], [])], parent)
    store.client.delete_run(ids[a.key])
    store.client.set_terminated(ids[b.key], status="KILLED")
    assert state_of(cached()) == state_of(from_scratch())
    store.client.restore_run(ids[a.key])
    after = cached()
    assert state_of(after) == state_of(from_scratch())
    assert dict(zip(after["run_id"], after["run_status"])) == {
        ids[a.key]: "FINISHED", ids[b.key]: "KILLED", ids[c.key]: "FINISHED", ids[d.key]: "FINISHED"
    }
    assert not after["deleted"].any()


def test_histories_come_from_the_compact_files_and_from_the_runs_alike(tmp_path, toy_spec, monkeypatch):
    from orchestrator.tracking import SweepReader
    from orchestrator.tracking.store import HISTORY_ARTIFACT_DIR

    monkeypatch.setenv("SCALESWEEP_CACHE", str(tmp_path / "cache"))
    sweep, parent = open_toy_sweep(tmp_path, toy_spec)
    store, trials = sweep.store, sweep.trials
    ids = store.start_trials(parent, trials)
    # Two trials end with a compact file on the parent run; two as an older scalesweep left them, without.
    store.finish_trials([(ids[t.key], toy_result(t), [], []) for t in trials[:2]], parent)
    store.finish_trials([(ids[t.key], toy_result(t), [], []) for t in trials[2:]])
    assert len(store.list_artifacts(parent, HISTORY_ARTIFACT_DIR)) == 1

    history = SweepReader(store, parent).histories(list(ids.values()), ["test_error", "train_error"])
    assert len(history) == 4 * 3
    for trial in trials:
        rows = history[history["run_id"] == ids[trial.key]].sort_values("epoch")
        assert list(rows["epoch"]) == [1, 2, 3]
        assert list(rows["test_error"]) == pytest.approx([trial.config["n"] / (1000.0 * e) for e in (1, 2, 3)])
    # The same points through MLflow's own per-run API.
    for trial in trials[2:]:
        points = store.client.get_metric_history(ids[trial.key], "test_error")
        assert sorted((p.step, p.value) for p in points) == sorted(
            zip(history.loc[history["run_id"] == ids[trial.key], "epoch"], history.loc[history["run_id"] == ids[trial.key], "test_error"])
        )


def test_bulk_history_route_of_a_tracking_server_returns_every_point(mlflow_server):
    from orchestrator.tracking.client import open_client

    client = open_client(mlflow_server.url)
    experiment = client.create_experiment(f"bulk-{time.monotonic_ns()}")
    runs = [client.create_run(experiment).info.run_id for _ in range(5)]
    for i, run_id in enumerate(runs):
        client.log_batch(run_id, metrics=[Metric("loss", i + step / 100, 0, step) for step in range(300)])
    # 1500 points: asked 100 runs at a time, the route would answer in one call; ask in calls of two runs.
    points = pd.concat(
        [pd.DataFrame(p, columns=["run_id", "key", "step", "value"]) for _, p in client._server_bulk_history(client.backend, runs, "loss", 2)]
    )
    assert len(points) == 5 * 300
    assert set(points["run_id"]) == set(runs)
    frame = client.metric_histories(runs, ["loss"])
    assert sorted(frame.itertuples(index=False)) == sorted(points.itertuples(index=False))


def test_reading_a_sweep_that_never_ran_writes_nothing(write_spec, toy_spec, mlflow_server):
    from mlflow.tracking import MlflowClient

    spec = load_spec(write_spec({**toy_spec, "name": "never-ran"}))
    state = Sweep(spec).status()
    assert state.parent_run_id is None and state.pending == len(state.grid)
    assert Sweep(spec).plan().finished == set()
    assert MlflowClient(mlflow_server.url).get_experiment_by_name(spec.experiment) is None  # not even the experiment
