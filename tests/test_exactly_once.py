"""Exactly once, whatever runs at the same time: one driver per sweep, a sweep's identity tied to its
spec, duplicates never counted twice, and a parent run that always ends in a true state."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest
from mlflow.entities import RunTag
from typer.testing import CliRunner

from orchestrator import load_spec, run_sweep
from orchestrator.cli import app
from orchestrator.sweep import Sweep
from orchestrator.tracking.lease import DRIVER_TAG, HEARTBEAT_TAG
from orchestrator.tracking.store import END_REASON_TAG
from tests.conftest import REPO
from tests.sweep_helpers import assert_each_trial_finished_once, cli_command, session_processes, toy_body, trial_runs, wait_for, write_yaml


def start_driver(path, log_path, *args):
    log = open(log_path, "w")
    command = cli_command("run", str(path), "--num-cpus", "2", "--no-progress", *args)
    return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def output(log_path) -> str:
    return log_path.read_text()


def parent_run(spec):
    sweep = Sweep(spec)
    return sweep.store.client.get_run(sweep.parent_run_id)


@pytest.fixture(params=["sqlite-file", "server"])
def store_uri(request, tmp_path):
    """A SQLite file both drivers open in-process, or the tests' MLflow server."""
    if request.param == "server":
        return request.getfixturevalue("mlflow_server").url
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


# -- two drivers ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("stagger_s", [0, 4])
def test_two_drivers_on_one_sweep_leave_one_finished_run_per_trial(store_uri, tmp_path, stagger_s):
    body = toy_body(tmp_path, n=[10, 100, 1000], epochs=3, sleep_s=0.5)
    body["tracking"] = {"uri": store_uri, "experiment": f"two-drivers-{stagger_s}-{time.monotonic_ns()}"}
    path = write_yaml(tmp_path / "spec.yaml", body)
    first = start_driver(path, tmp_path / "first.log")
    time.sleep(stagger_s)
    second = start_driver(path, tmp_path / "second.log")
    codes = sorted([first.wait(timeout=300), second.wait(timeout=300)])
    logs = output(tmp_path / "first.log") + output(tmp_path / "second.log")
    assert codes == [0, 2], logs
    refused = next(p for p in (tmp_path / "first.log", tmp_path / "second.log") if "another driver" in output(p))
    message = output(refused)
    assert f"host {socket.gethostname()}, pid " in message and ("heartbeat" in message), message
    assert "Traceback" not in message
    assert_each_trial_finished_once(path, epochs=3)
    assert len(Sweep(load_spec(path)).store.find_sweeps("faults")) == 1


def test_a_lease_is_refused_while_live_taken_over_when_stale_and_forced_when_asked(ray_local, write_spec, tmp_path):
    path = write_spec(toy_body(tmp_path, n=[10, 100], epochs=2, sleep_s=0))
    spec = load_spec(path)
    assert run_sweep(spec, progress=False).ok
    client, parent = Sweep(spec).store.client, Sweep(spec).parent_run_id

    def plant(host, beat_ms):
        holder = json.dumps({"host": host, "pid": 4242, "nonce": "n", "started_ms": beat_ms})
        client.log_batch(parent, tags=[RunTag(DRIVER_TAG, holder), RunTag(HEARTBEAT_TAG, str(beat_ms))])

    now = int(time.time() * 1000)
    plant("elsewhere", now)  # a driver on another machine, beating just now
    live = CliRunner().invoke(app, ["run", str(path), "--no-progress"])
    assert live.exit_code == 2, live.output
    assert "another driver is running this sweep (host elsewhere, pid 4242, last heartbeat" in live.output
    assert "--force-takeover" in live.output
    status = CliRunner().invoke(app, ["status", str(path)])
    assert "driver: host elsewhere, pid 4242" in status.output

    forced = CliRunner().invoke(app, ["run", str(path), "--no-progress", "--force-takeover"])
    assert forced.exit_code == 0, forced.output
    assert "took the sweep over from a driver that is gone (host elsewhere" in forced.output

    plant("elsewhere", int(time.time() * 1000) - 10 * 60 * 1000)  # silent for ten minutes: stale
    stale = CliRunner().invoke(app, ["run", str(path), "--no-progress"])
    assert stale.exit_code == 0, stale.output
    assert re.search(r"took the sweep over from a driver that is gone \(host elsewhere, pid 4242, last heartbeat 6\d\d s ago\)", stale.output)
    assert_each_trial_finished_once(path, epochs=2)


# -- a sweep's identity --------------------------------------------------------------------------


def test_a_changed_spec_is_refused_then_extends_the_sweep_and_fits_count_only_its_grid(ray_local, write_spec, tmp_path):
    body = toy_body(tmp_path, n=[10, 100, 1000], epochs=2, sleep_s=0)
    path = write_spec(body)
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(path), "--no-progress"]).exit_code == 0

    body["params"]["epochs"] = 3
    body["axes"]["n"] = [10, 100, 1000, 10000]
    write_yaml(path, {**body, "tracking": load_spec(path).tracking.model_dump()})
    refused = runner.invoke(app, ["run", str(path), "--no-progress"])
    assert refused.exit_code == 2, refused.output
    assert "params.epochs: 2 -> 3" in refused.output and "axes.n: [10, 100, 1000] -> [10, 100, 1000, 10000]" in refused.output
    assert "--extend" in refused.output

    extended = runner.invoke(app, ["run", str(path), "--no-progress", "--extend"])
    assert extended.exit_code == 0, extended.output
    assert "4 submitted (4 finished)" in extended.output
    status = runner.invoke(app, ["status", str(path)])
    assert "4 trials: 4 finished, 0 pending" in status.output and "left out 3 run(s)" in status.output
    fits = Sweep(load_spec(path)).fit(n_boot=10, log=False)
    assert any(f.label == "n_samples=100" and len(f.x) == 4 for f in fits.power_laws)  # the 4 new trials only
    assert any("left out 3 run(s)" in note for note in fits.notes)

    other = {**body, "workload": "tests.toy_pack_workloads:PackedPowerLawToy", "tracking": load_spec(path).tracking.model_dump()}
    write_yaml(path, other)
    again = runner.invoke(app, ["run", str(path), "--no-progress", "--extend"])
    assert again.exit_code == 2 and "another workload is another sweep" in again.output, again.output


def test_the_fit_section_is_no_part_of_a_sweeps_identity(ray_local, write_spec, tmp_path):
    """How a sweep is analysed changes no trial: a new fit: section, or a sweep recorded while the
    section still counted (another hash, the section inside its recorded identity), is the same sweep."""
    from orchestrator.sweep import SPEC_HASH_TAG, SPEC_IDENTITY_TAG, spec_identity

    body = toy_body(tmp_path, n=[10, 100, 1000], epochs=2, sleep_s=0)
    body["axes"]["noise"] = [0.0, 0.01]
    path = write_spec(body)
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(path), "--no-progress"]).exit_code == 0
    write_yaml(path, {**body, "fit": {"split_by": ["noise"]}, "tracking": load_spec(path).tracking.model_dump()})
    spec = load_spec(path)
    sweep = Sweep(spec)
    older = {**spec_identity(spec), "fit": {"envelope": [], "n_params": "non_embedding"}}
    sweep.store.client.log_batch(
        sweep.parent_run_id, tags=[RunTag(SPEC_HASH_TAG, "0123456789abcdef"), RunTag(SPEC_IDENTITY_TAG, json.dumps(older))]
    )
    again = runner.invoke(app, ["run", str(path), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "recorded with another spec" not in again.output and "0 submitted" in again.output, again.output
    assert_each_trial_finished_once(path, epochs=2)


def test_an_in_memory_store_is_refused(tmp_path):
    for uri in ("sqlite:///", "sqlite:///:memory:"):
        path = write_yaml(tmp_path / "spec.yaml", {**toy_body(tmp_path, n=[10], epochs=1, sleep_s=0), "tracking": {"uri": uri}})
        result = CliRunner().invoke(app, ["run", str(path)])
        assert result.exit_code == 2 and "in-memory store" in result.output, result.output


# -- duplicates ----------------------------------------------------------------------------------


def test_planted_duplicates_are_reported_counted_once_and_marked_by_run(ray_local, write_spec, tmp_path):
    from orchestrator.pack import TrialResult

    path = write_spec(toy_body(tmp_path, n=[10, 100, 1000], epochs=1, sleep_s=0))
    spec = load_spec(path)
    sweep = Sweep(spec)
    store, trials = sweep.store, sweep.trials
    parent = store.open_sweep(spec.name, spec.model_dump(mode="json"), len(trials))
    history = [{"epoch": 1, "train_loss": 1.0, "train_error": 0.1, "test_loss": 1.0, "test_error": 0.1}]
    for _ in range(2):  # what two racing drivers of an older scalesweep left: two FINISHED runs of trials[0]
        ids = store.start_trials(parent, trials[:1])
        store.finish_trials([(ids[trials[0].key], TrialResult(trials[0].key, "finished", history), [], [])])

    status = CliRunner().invoke(app, ["status", str(path)])
    assert "1 extra finished run(s)" in status.output and "3 trials: 1 finished, 2 pending" in status.output

    assert CliRunner().invoke(app, ["run", str(path), "--no-progress"]).exit_code == 0
    runs = trial_runs(spec.tracking.uri, spec.experiment)[trials[0].key]
    marked = [r for r in runs if r.info.status == "KILLED"]
    kept = [r for r in runs if r.info.status == "FINISHED"]
    assert len(marked) == 1 and len(kept) == 1
    assert marked[0].data.tags["duplicate_of"] == kept[0].info.run_id and marked[0].data.tags["status"] == "duplicate"
    state = Sweep(spec).status()
    assert state.n_duplicates == 0 and state.counts == {"finished": 3}


# -- every way out ends the parent run in a true state -------------------------------------------


def test_driver_errors_and_ctrl_c_end_the_parent_failed_or_killed_with_the_reason(ray_local, write_spec, tmp_path, monkeypatch):
    import orchestrator.pack

    path = write_spec(toy_body(tmp_path, n=[10, 100], epochs=1, sleep_s=0))
    spec = load_spec(path)

    def broken(*args, **kwargs):
        raise RuntimeError("the packer broke")

    monkeypatch.setattr(orchestrator.pack, "make_packs", broken)
    with pytest.raises(RuntimeError):
        run_sweep(spec, progress=False)
    run = parent_run(spec)
    assert run.info.status == "FAILED" and "RuntimeError: the packer broke" in run.data.tags[END_REASON_TAG]
    assert run.data.tags[HEARTBEAT_TAG] == "0"  # released

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(orchestrator.pack, "make_packs", interrupted)
    result = CliRunner().invoke(app, ["run", str(path), "--no-progress"])
    assert result.exit_code == 130 and "interrupted" in result.output, result.output
    run = parent_run(spec)
    assert run.info.status == "KILLED" and run.data.tags[END_REASON_TAG] == "interrupted (SIGINT)"


def test_bad_cpus_and_an_unreachable_address_exit_fast_and_leave_no_running_parent(write_spec, tmp_path):
    path = write_spec(toy_body(tmp_path, n=[10], epochs=1, sleep_s=0))
    started = time.monotonic()
    zero = CliRunner().invoke(app, ["run", str(path), "--num-cpus", "0"])
    assert zero.exit_code == 2 and "--num-cpus" in zero.output, zero.output
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = CliRunner().invoke(app, ["run", str(path), "--address", f"127.0.0.1:{port}"])
    assert unreachable.exit_code == 3 and f"nothing answers at 127.0.0.1:{port}" in unreachable.output, unreachable.output
    assert time.monotonic() - started < 30
    assert Sweep(load_spec(path)).parent_run_id is None  # nothing was opened


@pytest.mark.slow
@pytest.mark.parametrize("signals", [["SIGTERM"], ["SIGINT", "SIGINT"], ["SIGINT", "SIGINT at exit"], ["SIGKILL"]])
def test_a_signalled_driver_leaves_no_ray_process_and_a_true_parent_run(write_spec, tmp_path, signals):
    """'SIGINT at exit': the second Ctrl-C once the driver has said it was interrupted, while the
    process shuts its local Ray down on the way out."""
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    path = write_spec(toy_body(pid_dir, n=[10, 100, 1000, 10000], epochs=20, sleep_s=0.5))
    spec = load_spec(path)
    driver = start_driver(path, tmp_path / "driver.log")
    wait_for(lambda: len(list(pid_dir.glob("*.pid"))) >= 2, 120, "two trials training", every_s=0.3)
    for name in signals:
        if name == "SIGINT at exit":
            said = lambda: "interrupted:" in output(tmp_path / "driver.log") or driver.poll() is not None  # noqa: E731
            wait_for(said, 60, "the driver to say it was interrupted", every_s=0.05)
            name = "SIGINT"
        with contextlib.suppress(ProcessLookupError):
            os.kill(driver.pid, getattr(signal, name))
        time.sleep(0.3)
    code = driver.wait(timeout=120)
    log = output(tmp_path / "driver.log")
    wait_for(lambda: not session_processes(driver.pid), 20, "the local Ray to stop", every_s=0.5)
    assert not session_processes(driver.pid)

    run = parent_run(spec)
    children = [r for rs in trial_runs(spec.tracking.uri, spec.experiment).values() for r in rs]
    if signals == ["SIGTERM"]:
        assert code == 143 and "Traceback" not in log, log
        assert run.info.status == "KILLED" and run.data.tags[END_REASON_TAG] == "terminated (SIGTERM)"
        assert children and all(r.info.status == "KILLED" for r in children)  # marked at once
    elif signals[0] == "SIGINT":
        assert code == 130 and "Traceback" not in log, log
    else:
        assert code == -9
    assert Sweep(spec).status().driver is None  # whatever it left RUNNING, no live driver claims it
