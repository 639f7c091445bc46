"""Whatever breaks, every trial ends exactly once as FINISHED in MLflow (or FAILED with its reason).

Each test breaks a real part (a Ray worker, a Ray node, the driver, the MLflow server) mid-sweep and
then checks the final MLflow state: one FINISHED child run per trial_key, no second record of any
trial, every epoch's metrics present exactly once.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from orchestrator import load_spec, run_sweep
from orchestrator.cli import app
from orchestrator.grid import expand_grid
from orchestrator.scheduler import run_trial
from orchestrator.spec import parse_spec
from tests.conftest import REPO, free_port, on_each_backend
from tests.ray_cluster_harness import ClusterHarness
from tests.sweep_helpers import (
    TOY,
    assert_each_trial_finished_once,
    cli_command,
    joined,
    read_pids,
    run_in_thread,
    session_processes,
    toy_body,
    trial_runs,
    wait_for,
    write_yaml,
)
from tests.toy_workloads import PowerLawToy


# -- a worker, a node, the driver dies ---------------------------------------------------------


def test_killed_worker_trial_is_retried_and_finishes_once(ray_local, write_spec, tmp_path):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    path = write_spec(toy_body(pid_dir, n=[10, 100], epochs=4, sleep_s=0.4))
    thread, box = run_in_thread(lambda: run_sweep(load_spec(path), progress=False))

    victim = wait_for(lambda: read_pids(pid_dir).get("n10-d100-s0"), 60, "the n=10 trial to start")
    os.kill(victim, signal.SIGKILL)
    outcome = joined(thread, box, 120)

    assert outcome.counts == {"finished": 2}
    runs = assert_each_trial_finished_once(path, epochs=4)
    attempts = {run.data.params["n"]: run.data.tags["attempts"] for run in runs.values()}
    assert attempts == {"10": "2", "100": "1"}
    assert read_pids(pid_dir)["n10-d100-s0"] != victim  # the second attempt ran in a new worker


def test_removed_node_trials_run_on_the_other_nodes(write_spec, tmp_path):
    """A 3-node cluster in a process of its own; the driver joins it with --address."""
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    hold = tmp_path / "hold"  # every trial waits at its start until the node is gone
    hold.touch()
    path = write_spec(toy_body(pid_dir, n=[10, 100, 1000], epochs=4, sleep_s=0.3, hold_while_exists=str(hold)))
    with ClusterHarness(tmp_path / "cluster.log") as cluster:
        assert len(cluster.info["nodes"]) == 3
        cluster.start_driver(path, tmp_path / "driver.log")
        pids = wait_for(lambda: len(read_pids(pid_dir)) == 3 and read_pids(pid_dir), 90, "3 trials on 3 nodes")
        removed = cluster.ask("remove " + " ".join(map(str, pids.values())))["removed"]
        assert removed is not None, "no trial was running on a worker node"
        hold.unlink()
        cluster.wait_driver(timeout_s=180)

    runs = assert_each_trial_finished_once(path, epochs=4)
    retried = [run for run in runs.values() if run.data.tags["attempts"] == "2"]
    assert len(retried) == 1, {run.data.params["n"]: run.data.tags["attempts"] for run in runs.values()}
    assert not retried[0].data.tags["worker"].startswith(removed[:8])  # finished on another node


@on_each_backend
def test_killed_driver_rerun_finishes_the_rest_without_duplicates(write_spec, tmp_path):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    path = write_spec(toy_body(pid_dir, n=[10, 100, 1000, 10000], epochs=4, sleep_s=0.5))
    spec = load_spec(path)
    command = cli_command("run", str(path), "--num-cpus", "2", "--no-progress")
    log = open(tmp_path / "driver.log", "w")
    # Its own session, so everything the driver started can be found (and cleaned up) after it dies.
    driver = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def statuses() -> list[str]:
        return [r.info.status for rs in trial_runs(spec.tracking.uri, spec.experiment).values() for r in rs]

    wait_for(lambda: {"FINISHED", "RUNNING"} <= set(statuses()), 120, "one trial finished, one running", every_s=0.3)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)

    running = {r.info.run_id for rs in trial_runs(spec.tracking.uri, spec.experiment).values() for r in rs if r.info.status == "RUNNING"}
    assert running, "the driver died with no trial in flight; the test needs one"

    # The local Ray the driver started goes with it: its reaper kills GCS, raylet, Ray's agents and
    # the workers still training. None may be left behind, and the rerun takes the dead driver's lease.
    try:
        wait_for(lambda: not session_processes(driver.pid), 20, "the dead driver's local Ray to stop", every_s=0.5)
        rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
    finally:
        leftovers = session_processes(driver.pid)
        names = [p.name() for p in leftovers]
        for process in leftovers:
            process.kill()
    assert not leftovers, f"the dead driver left {names} running"
    assert "took the sweep over from a driver that is gone" in rerun.stdout, rerun.stdout + rerun.stderr

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "already finished" in rerun.stdout
    runs = assert_each_trial_finished_once(path, epochs=4)
    # The dead driver's runs were reused, unless it died while logging one (then that one was replaced).
    reused = running & {run.info.run_id for run in runs.values()}
    assert reused, (running, runs)


# -- the tracking server goes away -------------------------------------------------------------


def test_mlflow_outage_retries_then_stops_cleanly_and_resumes(ray_local, own_mlflow_server, tmp_path, caplog):
    server = own_mlflow_server
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    body = toy_body(pid_dir, n=[10, 100, 1000], epochs=4, sleep_s=0.4)
    body["tracking"] = {"uri": server.url, "experiment": "outage", "max_outage_s": 2}
    path = write_yaml(tmp_path / "spec.yaml", body)
    invoke = lambda: CliRunner().invoke(app, ["run", str(path), "--no-progress"])  # noqa: E731

    # 1. Down for longer than tracking.max_outage_s: a clear message, exit 3, nothing half-written.
    thread, box = run_in_thread(invoke)
    wait_for(lambda: read_pids(pid_dir), 120, "a first trial to start")
    server.stop()
    stopped = joined(thread, box, 120)
    assert stopped.exit_code == 3, stopped.output
    assert "has not answered for 2 s (tracking.max_outage_s)" in stopped.output
    assert "run the same command again" in stopped.output
    server.start()

    # 2. Down for a few seconds, within the limit: calls retry with backoff, results arrive late.
    body["tracking"]["max_outage_s"] = 120
    write_yaml(path, body)
    for pid_file in pid_dir.glob("*.pid"):
        pid_file.unlink()
    caplog.clear()
    thread, box = run_in_thread(invoke)
    wait_for(lambda: read_pids(pid_dir), 120, "the resumed sweep's first trial")
    server.stop()
    time.sleep(3)
    server.start()
    resumed = joined(thread, box, 180)
    assert resumed.exit_code == 0, resumed.output
    assert any("did not answer" in r.getMessage() for r in caplog.records)
    assert_each_trial_finished_once(path, epochs=4)


def test_reads_retry_through_an_outage_and_stop_with_exit_3_past_the_limit(ray_local, own_mlflow_server, tmp_path, monkeypatch):
    from orchestrator.sweep import Sweep

    server = own_mlflow_server
    monkeypatch.setenv("SCALESWEEP_CACHE", str(tmp_path / "cache"))
    body = toy_body(tmp_path, n=[10, 100, 1000], epochs=2, sleep_s=0)
    body["tracking"] = {"uri": server.url, "experiment": "read-outage", "max_outage_s": 120}
    path = write_yaml(tmp_path / "spec.yaml", body)
    assert run_sweep(load_spec(path), progress=False).ok
    sweep = Sweep(load_spec(path))
    sweep.status()  # the store is open and the cache warm: the next read goes to the server mid-way

    # Down for a few seconds within tracking.max_outage_s: the read waits and then answers in full.
    server.stop()
    thread, box = run_in_thread(lambda: (sweep.status(), sweep.fit(n_boot=20, log=False)))
    time.sleep(3)
    assert thread.is_alive()  # still waiting for the server
    server.start()
    state, fits = joined(thread, box, 180)
    assert state.counts == {"finished": 3} and len(fits.power_laws) >= 1

    # Down for longer than the limit: the read stops with one clear reason, which the CLI makes exit 3.
    from orchestrator.tracking import TrackingUnavailable

    body["tracking"]["max_outage_s"] = 2
    write_yaml(path, body)
    short = Sweep(load_spec(path))
    short.status()
    server.stop()
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=r"has not answered for 2 s \(tracking.max_outage_s\)"):
        short.status()
    assert time.monotonic() - started < 60
    result = CliRunner().invoke(app, ["status", str(path)])
    assert result.exit_code == 3 and "is unreachable" in result.output, result.output


def test_unreachable_tracking_server_exits_3_before_any_trial(write_spec, monkeypatch):
    import orchestrator.scheduler

    launched = []
    monkeypatch.setattr(orchestrator.scheduler, "connect", lambda *a, **k: launched.append("ray"))
    body = toy_body(Path("."), n=[10], epochs=1, sleep_s=0)
    body["tracking"] = {"uri": f"http://127.0.0.1:{free_port()}"}
    path = write_spec(body)
    for command in ("run", "status", "plan"):
        result = CliRunner().invoke(app, [command, str(path)])
        assert result.exit_code == 3, result.output
        assert f"MLflow tracking server {body['tracking']['uri']} is unreachable" in result.output
    assert not launched


# -- a trial diverges --------------------------------------------------------------------------


def test_diverged_trial_is_stopped_marked_and_left_out_of_fits(ray_local, write_spec, tmp_path):
    body = toy_body(tmp_path, n=[10, 100, 1000, 10000, 100000], epochs=4, sleep_s=0, diverge_on_n=100, diverge_at_epoch=2)
    path = write_spec(body)
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(path), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "(1 diverged, 4 finished)" in result.output

    spec = load_spec(path)
    runs = trial_runs(spec.tracking.uri, spec.experiment)
    assert len(runs) == 5 and all(len(rs) == 1 for rs in runs.values())
    by_n = {rs[0].data.params["n"]: rs[0] for rs in runs.values()}
    diverged = by_n.pop("100")
    assert (diverged.info.status, diverged.data.tags["status"]) == ("FAILED", "diverged")
    assert "epoch 2: non-finite" in diverged.data.tags["error"]
    history = MlflowClient(spec.tracking.uri).get_metric_history(diverged.info.run_id, "test_loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2]  # stopped at the bad epoch
    assert math.isnan(max(history, key=lambda m: m.step).value)
    assert all(run.info.status == "FINISHED" for run in by_n.values())

    fitted = runner.invoke(app, ["fit", str(path), "--n-boot", "20"])
    assert fitted.exit_code == 0, fitted.output
    assert f"left out 1 diverged trial(s): {diverged.data.tags['trial_key']}" in fitted.output
    assert "n_samples=100" in fitted.output  # the other four trials were fitted


def test_infinite_loss_stops_the_trial_as_diverged():
    spec = parse_spec(
        {
            "name": "inf",
            "workload": TOY,
            "axes": {"n": [10], "d": [100]},
            "params": {"epochs": 5, "diverge_on_n": 10, "diverge_at_epoch": 3, "diverge_with": "inf"},
        }
    )
    (trial,) = expand_grid(spec)
    result = run_trial(PowerLawToy(), trial)
    assert result.status == "diverged"
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert "epoch 3: non-finite" in result.error and "inf" in result.error


@on_each_backend
def test_resume_reuses_a_dead_drivers_empty_runs_and_replaces_half_logged_ones(ray_local, write_spec, tmp_path):
    """What a driver killed mid-trial leaves: a RUNNING run with no metrics, and one it died logging."""
    from mlflow.entities import Metric

    from orchestrator.sweep import Sweep

    path = write_spec(toy_body(tmp_path, n=[10, 100], epochs=3, sleep_s=0))
    spec = load_spec(path)
    trials = {t.config["n"]: t for t in expand_grid(spec)}
    store = Sweep(spec).store
    parent = store.open_sweep(spec.name, spec.model_dump(mode="json"), len(trials))
    # Opened to take their params with their results at the end, which the dead driver never reached.
    left = store.start_trials(parent, trials.values(), log_params=False)
    empty, half_logged = left[trials[10].key], left[trials[100].key]
    store.client.log_batch(half_logged, metrics=[Metric("test_loss", 1.0, 0, 1)])

    outcome = run_sweep(spec, progress=False)

    assert outcome.counts == {"finished": 2}
    runs = assert_each_trial_finished_once(path, epochs=3)
    assert runs[trials[10].key].info.run_id == empty  # reused: still one record
    assert runs[trials[100].key].info.run_id != half_logged  # two attempts' histories never mix
    replaced = MlflowClient(spec.tracking.uri).get_run(half_logged)
    assert (replaced.info.lifecycle_stage, replaced.data.tags["status"]) == ("deleted", "superseded")
