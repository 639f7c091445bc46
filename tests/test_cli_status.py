"""`status` reads a sweep from MLflow alone while another process runs it; `run` ends with a table;
`ui` serves the tracking store on 127.0.0.1 and prints the URL of the sweep's run."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time

import requests
import yaml
from rich.console import Console
from typer.testing import CliRunner

from orchestrator import load_spec
from orchestrator.cli import app
from orchestrator.progress import SweepProgress
from orchestrator.sweep import Sweep, sweep_status
from tests.conftest import REPO, free_port

SLEEP_S = 1.0  # per epoch: a toy trial takes 3 s, long enough to be seen running


def subprocess_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "160"}


def scalesweep(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **popen,
    )


def test_status_reads_a_running_sweep_from_mlflow_alone(ray_local, write_spec, toy_spec):
    body = {**toy_spec, "name": "slow-toy", "axes": {"n": [10, 100, 1000], "d": [100, 1000]}}
    body["params"] = {"epochs": 3, "sleep_s": SLEEP_S}
    spec_path = write_spec(body)
    runner = CliRunner()
    before = runner.invoke(app, ["status", str(spec_path)])
    assert before.exit_code == 0, before.output
    assert "not started (6 trials in the grid)" in before.output

    # Another process runs the sweep on the same Ray cluster; this one only reads MLflow.
    address = ray_local.get_runtime_context().gcs_address
    driver = scalesweep("run", str(spec_path), "--address", address, "--no-progress")
    try:
        seen_running = None
        deadline = time.time() + 120
        while time.time() < deadline and driver.poll() is None:
            state = sweep_status(load_spec(spec_path))
            if state.counts["running"] >= 1:
                seen_running = runner.invoke(app, ["status", str(spec_path)])
                break
            time.sleep(0.3)
        assert seen_running is not None, "never saw a trial running"
        assert seen_running.exit_code == 0, seen_running.output
        counts = re.search(r"6 trials: (.*), (\d+) pending", seen_running.output)
        assert counts, seen_running.output
        assert "running" in counts.group(1)
        assert "first trial started" in seen_running.output and "last activity" in seen_running.output
        # The grid table marks running cells and cells not started yet.
        assert "…" in seen_running.output
        output, _ = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGTERM)
            driver.wait(timeout=30)
    assert driver.returncode == 0, output
    assert "6 submitted (6 finished)" in output
    # run's final table: counts per status and the data size x model size grid of the final error.
    assert re.search(r"finished\s*┃\s*pending", output), output
    assert "final test_error (seed mean)" in output
    grid_rows = [line for line in output.splitlines() if re.match(r"│\s+(100|1k)\s+│", line)]
    assert len(grid_rows) == 2, output
    assert all(len(re.findall(r"\d\.\d{3}", line)) == 3 for line in grid_rows), grid_rows

    after = runner.invoke(app, ["status", str(spec_path), "--trials"])
    assert after.exit_code == 0, after.output
    assert "6 trials: 6 finished, 0 pending" in after.output
    # --trials lists every trial, one row each.
    keys = sweep_status(load_spec(spec_path)).trials["trial_key"]
    assert all(f"│ {key[:6]}" in after.output for key in keys), after.output


def test_status_counts_failed_and_pending_trials(ray_local, write_spec, toy_spec):
    body = {**toy_spec, "name": "failing-toy", "params": {"epochs": 2, "fail_on_n": 100}}
    spec_path = write_spec(body)
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(spec_path), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "✗" in result.output  # the failed cells are marked in the final grid
    # The grid grows: the new trials are pending, the failed ones stay failed.
    spec = yaml.safe_load(spec_path.read_text())
    spec["axes"]["d"] = [100, 1000, 10000]
    spec_path.write_text(yaml.safe_dump(spec))
    status = runner.invoke(app, ["status", str(spec_path)])
    assert status.exit_code == 0, status.output
    assert "9 trials: 2 failed, 4 finished, 3 pending" in status.output


def test_ui_serves_the_store_and_prints_the_sweep_run_url(tmp_path):
    db = tmp_path / "ui.db"
    spec_path = tmp_path / "spec.yaml"
    body = {
        "name": "ui-sweep",
        "workload": "tests.toy_workloads:PowerLawToy",
        "axes": {"n": [10, 100], "d": [100]},
        "tracking": {"uri": f"sqlite:///{db}", "experiment": "ui-test"},
    }
    spec_path.write_text(yaml.safe_dump(body))
    spec = load_spec(spec_path)
    store = Sweep(spec).store
    parent = store.open_sweep(spec.name, spec.model_dump(mode="json"), 2)

    port = free_port()
    ui = scalesweep("ui", str(spec_path), "--port", str(port))
    try:
        first = ui.stdout.readline()
        expected = f"http://127.0.0.1:{port}/#/experiments/{store.experiment_id}/runs/{parent}"
        assert first.strip() == f"sweep ui-sweep: {expected}"
        deadline = time.time() + 120
        while True:
            assert ui.poll() is None, ui.stdout.read()
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.time() < deadline, "the MLflow UI did not answer"
            time.sleep(0.5)
        page = requests.get(expected.split("#")[0], timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        # The run the URL names is the sweep's parent run, in the experiment the URL names.
        run = requests.get(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get", params={"run_id": parent}, timeout=10).json()["run"]
        assert run["info"]["experiment_id"] == store.experiment_id
        assert {"key": "sweep", "value": "ui-sweep"} in run["data"]["tags"]
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def test_ui_with_a_tracking_server_prints_its_run_url(write_spec, toy_spec, mlflow_server):
    spec_path = write_spec({**toy_spec, "name": "remote-ui"})
    spec = load_spec(spec_path)
    store = Sweep(spec).store
    parent = store.open_sweep(spec.name, spec.model_dump(mode="json"), 6)
    result = CliRunner().invoke(app, ["ui", str(spec_path)])
    assert result.exit_code == 0, result.output
    url = f"{mlflow_server.url}/#/experiments/{store.experiment_id}/runs/{parent}"
    assert url in result.output
    assert requests.get(url.split("#")[0], timeout=10).status_code == 200


def test_progress_bar_shows_done_running_failed_and_eta():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=140, color_system=None)
    with SweepProgress(4, "toy", console=console) as bar:
        bar.started(2)
        bar.finished("finished")
        bar.finished("failed")
        bar.started(1)
        bar._progress.refresh()
        assert (bar.counts["finished"], bar.counts["failed"], bar.running) == (1, 1, 1)
    last = [line for line in screen.getvalue().splitlines() if "toy" in line][-1]
    assert re.search(r"2/4 .*done 1\s+running 1\s+failed 1 .*ETA", last), last


def test_status_after_the_driver_died_shows_what_mlflow_holds(write_spec, toy_spec):
    """A driver killed mid-sweep leaves its parent and some trials RUNNING; status reads just that."""
    from orchestrator.grid import expand_grid
    from orchestrator.scheduler import TrialResult

    spec_path = write_spec({**toy_spec, "name": "crashed-toy"})
    spec = load_spec(spec_path)
    store = Sweep(spec).store
    trials = expand_grid(spec)
    parent = store.open_sweep(spec.name, spec.model_dump(mode="json"), len(trials))
    run_ids = store.start_trials(parent, trials[:3])
    history = [{"epoch": 1, "train_error": 0.25, "test_error": 0.3}]
    store.finish_trial(run_ids[trials[0].key], TrialResult(trials[0].key, "finished", history))
    # ... and here the driver died: trials[1:3] stay RUNNING, the parent is never closed.

    result = CliRunner().invoke(app, ["status", str(spec_path)])
    assert result.exit_code == 0, result.output
    assert "6 trials: 1 finished, 2 running, 3 pending" in result.output
    assert "last activity" in result.output
    assert "0.300" in result.output  # the finished trial's final test error, in its grid cell


def test_grid_table_leaves_pairs_an_isoflop_grid_never_plans_blank():
    """Two budgets on two diagonals of a 3 x 3 (N, D) grid: unplanned cells are blank, not 'not started'."""
    import pandas as pd
    from rich.console import Console

    from orchestrator.progress import grid_table

    pairs = [(1e3, 1e6), (1e4, 1e5), (1e4, 1e6), (1e5, 1e5)]
    grid = pd.DataFrame({"trial_key": list("abcd"), "n_params": [n for n, _ in pairs], "n_samples": [d for _, d in pairs]})
    trials = pd.DataFrame({"trial_key": ["a", "b"], "status": ["finished", "running"], "test_loss": [2.5, None]})
    console = Console(record=True, width=120)
    console.print(grid_table(grid, trials, "test_loss", "budgets"))
    text = console.export_text()
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in text.splitlines() if line.startswith("│")}
    assert rows == {"100k": ["", "…", "·"], "1M": ["2.500", "·", ""]}
    assert "blank: no trial" in text  # the caption says so (wrapped to the table width)
