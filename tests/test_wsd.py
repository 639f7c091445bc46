"""Warmup-stable-decay sweeps end to end: one trunk per model size, a cooldown branch per data size,
each (N, D) its own MLflow run, real Ray, a real MLflow server, real training."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from orchestrator import load_spec, run_sweep
from orchestrator.cli import app
from orchestrator.grid import expand_grid
from orchestrator.sweep import fit_sweep
from tests.conftest import REPO
from tests.sweep_helpers import trial_runs, wait_for
from workloads.api import Reporter, WSDPart
from workloads.tiny_lm import CHECKPOINT_FILE, TinyLM

STEP = 16 * 32  # tokens per optimizer step
LM = {"n_layers": 1, "head_dim": 8, "context_len": 32, "batch_size": 16, "lr": 1e-2, "n_evals": 2,
      "eval_tokens": 2048, "corpus_max_bytes": 1_000_000}  # fmt: skip
SCHEDULE = {"kind": "wsd", "warmup": 4 * STEP, "cooldown_fraction": 0.2, "cooldown_shape": "1-sqrt"}


def wsd_body(tmp_path: Path, **overrides) -> dict:
    body = {
        "name": "wsd",
        "workload": "tiny_lm",
        "axes": {"d_model": [8, 16], "n_tokens": [20 * STEP, 40 * STEP, 80 * STEP]},
        "params": dict(LM),
        "schedule": SCHEDULE,
        "resources_per_trial": {"cpu": 1},
        "execution": {"checkpoint_dir": str(tmp_path / "checkpoints")},
    }
    body.update(overrides)
    return body


def runs_by_key(spec) -> dict[str, list]:
    return dict(trial_runs(spec.tracking.uri, spec.experiment))


def assert_one_finished_run_per_point_and_per_trunk(spec) -> dict:
    trials = {t.key: t for t in expand_grid(spec)}
    runs = runs_by_key(spec)
    assert set(runs) == set(trials)
    assert {key: [r.info.status for r in rs] for key, rs in runs.items()} == {key: ["FINISHED"] for key in trials}
    return {key: rs[0] for key, rs in runs.items()}


@pytest.mark.slow
def test_a_wsd_sweep_records_each_point_as_its_own_run_tagged_with_its_trunk(ray_local, write_spec, tmp_path):
    path = write_spec(wsd_body(tmp_path))
    runner = CliRunner()
    planned = runner.invoke(app, ["plan", str(path), "--offline"], terminal_width=250)
    assert planned.exit_code == 0, planned.output
    assert "2 trunks, 6 branches" in planned.output and "1.52x less" in planned.output

    result = runner.invoke(app, ["run", str(path), "--no-progress"], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "32.8k" not in result.output  # the trunks' D (64 steps) is no row of the grid table

    spec = load_spec(path)
    trials = {t.key: t for t in expand_grid(spec)}
    runs = assert_one_finished_run_per_point_and_per_trunk(spec)
    trunks = {key for key, t in trials.items() if t.is_trunk}
    client = MlflowClient(spec.tracking.uri)
    for key, run in runs.items():
        tags, sizes, trial = run.data.tags, run.data.metrics, trials[key]
        if key in trunks:
            assert tags["wsd_part"] == "trunk" and "spent_flops" not in sizes
            continue
        assert tags["wsd_part"] == "branch" and tags["trunk_key"] == trial.depends_on
        assert sizes["branch_step"] == trial.config["n_tokens"] * 4 // 5
        assert sizes["train_flops"] == pytest.approx(6 * trial.size.n_params * trial.config["n_tokens"])
        assert sizes["spent_flops"] == pytest.approx(trial.spent_flops) and sizes["spent_flops"] < sizes["train_flops"]
        assert sizes["cooldown_flops"] == pytest.approx(6 * trial.size.n_params * trial.config["n_tokens"] / 5)
        resumed = client.get_metric_history(run.info.run_id, "resumed_from_step")
        assert max(m.value for m in resumed) == sizes["branch_step"] // STEP  # it trained its cooldown only
    parent = client.get_run(runs[next(iter(trunks))].data.tags["mlflow.parentRunId"])
    spent = sum(t.run_flops for t in trials.values())
    assert parent.data.metrics["spent_flops"] == pytest.approx(spent)
    assert parent.data.metrics["from_scratch_flops"] == pytest.approx(sum(t.size.train_flops for t in trials.values() if not t.is_trunk))
    assert sum(r.data.metrics.get("spent_flops", 0) for r in runs.values()) == pytest.approx(spent)

    # The largest branch of the wider model ends where a whole WSD run of its length ends, in-process.
    (point,) = [t for t in trials.values() if not t.is_trunk and t.config["d_model"] == 16 and t.config["n_tokens"] == 80 * STEP]
    whole = Reporter()
    TinyLM().train_wsd(TinyLM().validate_config(point.config), whole, WSDPart("scratch", point.wsd.part.schedule))
    recorded = client.get_metric_history(runs[point.key].info.run_id, "test_loss")
    assert sorted(m.step for m in recorded) == [1, 2]
    assert max(recorded, key=lambda m: m.step).value == pytest.approx(whole.history[-1]["test_loss"], rel=1e-5)

    fits = fit_sweep(spec, n_boot=20, metric="test_loss", epoch_wise=False)
    assert any("left out 2 WSD trunk run(s)" in note for note in fits.notes), fits.notes


@pytest.mark.slow
def test_a_trunk_whose_worker_died_resumes_from_its_checkpoint_and_its_branches_wait_for_it(ray_local, write_spec, tmp_path):
    # One model size; the trunk long enough to be killed after its first branch point.
    body = wsd_body(tmp_path, axes={"d_model": [16], "n_tokens": [20 * STEP, 500 * STEP]})
    path = write_spec(body)
    spec = load_spec(path)
    trunk = next(t for t in expand_grid(spec) if t.is_trunk)
    killed: dict = {}

    def kill_the_trunk_after_its_first_branch_point() -> bool:
        # The trunk's own checkpoint, written at each branch point right after the branch's.
        checkpoint = Path(trunk.checkpoint.directory) / CHECKPOINT_FILE
        if checkpoint.exists() and "pid" not in killed:
            state = torch.load(checkpoint, weights_only=False)
            if not state.get("finished"):
                killed.update(pid=state["writer_pid"], step=state["step"])
                os.kill(state["writer_pid"], signal.SIGKILL)
        return "pid" in killed

    import threading

    killer = threading.Thread(target=lambda: wait_for(kill_the_trunk_after_its_first_branch_point, 300, "the first branch point"), daemon=True)
    killer.start()
    outcome = run_sweep(spec, progress=False)
    killer.join(timeout=5)
    assert "pid" in killed and outcome.ok, outcome.counts
    runs = assert_one_finished_run_per_point_and_per_trunk(spec)
    assert runs[trunk.key].data.tags["attempts"] == "2"
    client = MlflowClient(spec.tracking.uri)
    resumed = client.get_metric_history(runs[trunk.key].info.run_id, "resumed_from_step")
    assert max(m.value for m in resumed) >= killed["step"] >= 16  # the retry started from its own checkpoint, not step 0


@pytest.mark.slow
def test_a_driver_killed_mid_sweep_and_rerun_ends_with_one_finished_run_per_point_and_per_trunk(mlflow_server, tmp_path):
    body = wsd_body(tmp_path, axes={"d_model": [8], "n_tokens": [20 * STEP, 300 * STEP]})
    body["tracking"] = {"uri": mlflow_server.url, "experiment": f"wsd-driver-{tmp_path.name}"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(body))
    spec = load_spec(path)
    branch_points = [Path(t.wsd.start_checkpoint) for t in expand_grid(spec) if not t.is_trunk]
    command = [sys.executable, "-m", "orchestrator.cli", "run", str(path), "--num-cpus", "2", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "token"}
    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: any(p.is_dir() for p in branch_points) or driver.poll() is not None, 300, "a first branch point", every_s=0.2)
            assert driver.poll() is None, (tmp_path / "first.log").read_text()
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started, mid-trunk
        finally:
            driver.wait(timeout=60)
    time.sleep(1)
    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    runs = assert_one_finished_run_per_point_and_per_trunk(spec)
    assert len(runs) == 3  # two points and their trunk


def test_bad_wsd_input_exits_2_naming_the_field_and_launches_nothing(write_spec, tmp_path):
    cases = {
        "schedule: a WSD schedule branches": {"axes": {"d_model": [8, 16]}, "params": {**LM, "n_tokens": 40 * STEP}},
        "schedule.cooldown_fraction": {"schedule": {**SCHEDULE, "cooldown_fraction": 1.2}},
        "axes.n_tokens: n_tokens=10240 is shorter than schedule.warmup": {"schedule": {**SCHEDULE, "warmup": 18 * STEP}},
        "schedule: workload 'tests.toy_workloads:PowerLawToy' cannot start from a checkpoint": {
            "workload": "tests.toy_workloads:PowerLawToy", "axes": {"n": [10, 100], "d": [100, 1000]}, "params": {"epochs": 1}},
    }  # fmt: skip
    for i, (message, overrides) in enumerate(cases.items()):
        path = write_spec(wsd_body(tmp_path, **overrides), name=f"bad{i}.yaml")
        result = CliRunner().invoke(app, ["run", str(path), "--no-progress"], terminal_width=250)
        assert result.exit_code == 2, (message, result.output)
        assert message in " ".join(result.output.split()), result.output
        tracking = yaml.safe_load(path.read_text())["tracking"]
        assert not trial_runs(tracking["uri"], tracking["experiment"])  # nothing launched, nothing recorded
        assert not (tmp_path / "checkpoints").exists()


def can_unshare_mounts() -> bool:
    """Whether this machine lets a process mount a file system of its own (root, CAP_SYS_ADMIN)."""
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.slow
def test_on_a_cluster_branches_read_their_trunk_from_the_shared_folder_and_a_node_that_cannot_see_it_is_refused(
    write_spec, tmp_path
):
    from tests.ray_cluster_harness import ClusterHarness

    body = wsd_body(tmp_path, axes={"d_model": [8], "n_tokens": [20 * STEP, 300 * STEP]})
    path = write_spec(body)
    with ClusterHarness(tmp_path / "cluster.log", n_nodes=2) as cluster:  # two nodes of one CPU each
        cluster.start_driver(path, tmp_path / "driver.log")
        cluster.wait_driver(timeout_s=300)
        runs = assert_one_finished_run_per_point_and_per_trunk(load_spec(path))
        node = {key: run.data.tags["worker"].split(":")[0] for key, run in runs.items()}
        trials = expand_grid(load_spec(path))
        trunk = next(t for t in trials if t.is_trunk)
        short = next(t for t in trials if not t.is_trunk and t.config["n_tokens"] == 20 * STEP)
        assert node[short.key] != node[trunk.key]  # it started on the other node while the trunk trained

        if not can_unshare_mounts():
            pytest.skip("no mount namespaces here: the unshared-folder half needs root")
        # A third node whose checkpoint folder is a file system of its own, as on a node without the NFS mount.
        ray_bin = Path(sys.executable).parent / "ray"
        joined = f"mount -t tmpfs tmpfs {tmp_path / 'checkpoints'} && exec {ray_bin} start --address {cluster.info['address']} --num-cpus 1 --block"
        node_log = tmp_path / "private-node.log"
        private = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", joined], stdout=open(node_log, "w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for(lambda: "block forever" in node_log.read_text() or private.poll() is not None, 120, "the private node", every_s=0.5)
            assert private.poll() is None, node_log.read_text()
            second = write_spec(body, name="second.yaml")
            cluster.start_driver(second, tmp_path / "second.log")
            cluster.driver.wait(timeout=300)
            output = (tmp_path / "second.log").read_text()
            assert cluster.driver.returncode == 2, output
            assert "execution.checkpoint_dir" in output and "is not shared" in output, output
            spec = load_spec(second)
            assert not trial_runs(spec.tracking.uri, spec.experiment)  # nothing launched
        finally:
            os.killpg(private.pid, signal.SIGTERM)
            private.wait(timeout=90)


@pytest.mark.slow
def test_the_wsd_benchmark_smoke_run_compares_both_sides():
    done = subprocess.run(
        [sys.executable, "bench/wsd.py", "--smoke", "--num-cpus", "2"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=500,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    ratio = next(line for line in out.splitlines() if line.startswith("scratch / WSD"))
    assert float(ratio.split()[3].rstrip("x")) == pytest.approx(15 / 9.4, rel=0.01)  # D = 1, 2, 4, 8 x D0, 20% cooldowns
    assert out.count(" / ") >= 12  # a loss from each side for every point
    # The joint law of each side: its exponents with CIs, or why this small a grid cannot carry them.
    law_rows = [line for line in out.splitlines() if line.startswith(("scratch ", "wsd ")) and ("[" in line or "not identified" in line)]
    assert len(law_rows) == 2, out
    assert ("CIs overlap:" in out) == all("not identified" not in line for line in law_rows)
