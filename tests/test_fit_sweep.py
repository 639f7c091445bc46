"""`scalesweep fit` on a sweep whose trials all failed: a clear error and exit code 1, no numbers."""

from __future__ import annotations

from typer.testing import CliRunner

from orchestrator.cli import EXIT_TRIALS_FAILED, app


def test_fit_of_a_sweep_whose_trials_all_failed_is_a_clear_error(ray_local, write_spec):
    spec_path = write_spec(
        {
            "name": "all-fail",
            "workload": "tests.toy_workloads:PowerLawToy",
            "axes": {"n": [10], "d": [100, 1000], "seed": [0]},
            "params": {"epochs": 1, "fail_on_n": 10},
            "resources_per_trial": {"cpu": 1},
            "execution": {"max_retries": 0},
        }
    )
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(spec_path), "--no-progress"])
    assert result.exit_code == EXIT_TRIALS_FAILED, result.output
    assert "2 failed" in result.output

    result = runner.invoke(app, ["fit", str(spec_path), "--n-boot", "10"])
    assert result.exit_code == EXIT_TRIALS_FAILED
    assert "no finished trials" in result.output
    assert "E + A" not in result.output  # no fit table printed
