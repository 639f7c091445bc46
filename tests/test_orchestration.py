"""Scheduling and recording with the toy workload: failures, divergence, partial resume."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from orchestrator import load_spec, run_sweep
from orchestrator.cli import app
from orchestrator.results import trials_frame
from orchestrator.sweep import Sweep
from tests.toy_workloads import toy_loss


def test_failed_and_diverged_trials_are_recorded_and_exit_1(ray_local, write_spec, toy_spec):
    toy_spec["params"].update({"fail_on_n": 10, "diverge_on_n": 100})
    path = write_spec(toy_spec)
    result = CliRunner().invoke(app, ["run", str(path), "--no-progress"])
    assert result.exit_code == 1, result.output
    spec = load_spec(path)
    trials = trials_frame(Sweep(spec).runs()).set_index("n")
    assert set(trials.loc[10, "status"]) == {"failed"}
    assert set(trials.loc[100, "status"]) == {"diverged"}
    assert set(trials.loc[1000, "status"]) == {"finished"}
    assert "toy failure for n=10" in trials.loc[10, "error"].iloc[0]
    assert set(trials.loc[10, "run_status"]) == {"FAILED"}


def test_rerun_submits_only_unfinished_trials_and_reuses_their_runs(ray_local, write_spec, toy_spec, tmp_path):
    outage = tmp_path / "outage"
    outage.touch()
    toy_spec["params"].update({"fail_on_n": 1000, "fail_while_exists": str(outage)})
    spec = load_spec(write_spec(toy_spec))
    first = run_sweep(spec, progress=False)
    assert first.counts == {"finished": 4, "failed": 2}
    failed_runs = set(trials_frame(Sweep(spec).runs()).query("status == 'failed'")["run_id"])

    outage.unlink()  # the cause of the failures is gone
    second = run_sweep(spec, progress=False)
    assert (second.n_skipped, second.n_submitted, second.counts) == (4, 2, {"finished": 2})
    records = trials_frame(Sweep(spec).runs())
    assert len(records) == 6  # the failed trials' runs were reused, not duplicated
    assert failed_runs == set(records.loc[records["n"] == 1000, "run_id"])
    assert (records["run_status"] == "FINISHED").all()

    third = run_sweep(spec, progress=False)
    assert third.n_submitted == 0


def test_final_losses_follow_the_toy_law(ray_local, write_spec, toy_spec):
    path = write_spec(toy_spec)
    spec = load_spec(path)
    outcome = run_sweep(spec, progress=False)
    assert outcome.ok
    trials = Sweep(spec).results()
    for _, row in trials.iterrows():
        assert row["test_loss"] == pytest.approx(toy_loss(row["n"], row["d"]))


def test_runs_deleted_in_the_mlflow_ui_are_counted_left_out_and_trained_again(ray_local, write_spec, toy_spec):
    spec = load_spec(write_spec(toy_spec))
    assert run_sweep(spec, progress=False).ok
    sweep = Sweep(spec)
    runs = sweep.runs()
    deleted = list(runs["run_id"][:2])
    for run_id in deleted:
        sweep.store.client.delete_run(run_id)  # what the UI's delete button does

    state = Sweep(spec).status()
    assert (state.n_deleted, state.pending, state.counts["finished"]) == (2, 2, 4)
    fits = Sweep(spec).fit(n_boot=10, log=False)
    assert any("2 trial(s) of the grid have only deleted runs" in note for note in fits.notes)
    assert len(Sweep(spec).results()) == 4

    again = run_sweep(spec, progress=False)
    assert (again.n_skipped, again.n_submitted) == (4, 2)
    after = Sweep(spec).runs()
    assert len(after) == 6 and (after["run_status"] == "FINISHED").all()
    assert not set(deleted) & set(after["run_id"])  # fresh runs; the deleted ones stay in the trash
