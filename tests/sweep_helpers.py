"""What tests of whole sweeps share: waiting, reading pids and runs back, driving a CLI process.

`assert_each_trial_finished_once` is the promise every fault and concurrency test checks: one
FINISHED child run per trial_key, nothing else recorded, every epoch logged once.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil
import yaml
from mlflow.tracking import MlflowClient

from orchestrator import load_spec
from orchestrator.grid import expand_grid
from workloads.api import STANDARD_METRICS

TOY = "tests.toy_workloads:PowerLawToy"


def wait_for(predicate, timeout_s: float, what: str, every_s: float = 0.05):
    """Poll until `predicate()` is truthy and return its value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def read_pids(pid_dir: Path) -> dict[str, int]:
    """Worker pids by trial ('n10-d100-s0'), as the toy workload writes them when a trial starts."""
    pids = {}
    for path in pid_dir.glob("*.pid"):
        text = path.read_text().strip()
        if text:
            pids[path.stem] = int(text)
    return pids


def trial_runs(uri: str, experiment: str) -> dict[str, list]:
    """Every child run of the experiment (not those in MLflow's trash), by trial_key."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    runs = defaultdict(list)
    for run in client.search_runs([found.experiment_id], max_results=1000):
        if run.data.tags.get("scalesweep.role") == "trial":
            runs[run.data.tags["trial_key"]].append(run)
    return runs


def assert_each_trial_finished_once(spec_path: Path, epochs: int) -> dict[str, object]:
    """One FINISHED run per trial of the spec, nothing else recorded, every epoch logged once, every
    config value logged as a param."""
    spec = load_spec(spec_path)
    configs = {t.key: t.config for t in expand_grid(spec)}
    keys = set(configs)
    runs = trial_runs(spec.tracking.uri, spec.experiment)
    assert set(runs) == keys
    duplicated = {key: [r.info.status for r in rs] for key, rs in runs.items() if len(rs) != 1}
    assert not duplicated, f"trials with more than one run: {duplicated}"
    client = MlflowClient(spec.tracking.uri)
    for key, (run,) in runs.items():
        assert (run.info.status, run.data.tags["status"]) == ("FINISHED", "finished"), key
        assert run.data.params == {k: v if isinstance(v, str) else json.dumps(v) for k, v in configs[key].items()}, key
        for metric in STANDARD_METRICS:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert sorted(steps) == list(range(1, epochs + 1)), (key, metric, steps)
    return {key: rs[0] for key, rs in runs.items()}


def run_in_thread(target) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def body():
        try:
            box["result"] = target()
        except BaseException as err:  # surfaced by the test's assertions
            box["error"] = err

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, box


def joined(thread: threading.Thread, box: dict, timeout_s: float):
    thread.join(timeout_s)
    assert not thread.is_alive(), f"still running after {timeout_s} s"
    if "error" in box:
        raise box["error"]
    return box["result"]


def write_yaml(path: Path, body: dict) -> Path:
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def toy_body(pid_dir: Path, n: list[int], epochs: int, sleep_s: float, **params) -> dict:
    return {
        "name": "faults",
        "workload": TOY,
        "axes": {"n": n, "d": [100]},
        "params": {"epochs": epochs, "sleep_s": sleep_s, "pid_dir": str(pid_dir), **params},
        "resources_per_trial": {"cpu": 1},
    }


def session_processes(sid: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == sid:
                found.append(process)
        except (ProcessLookupError, PermissionError):
            pass
    return found


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", *args]
