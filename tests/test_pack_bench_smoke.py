"""The benchmarks' smoke versions run end to end (CI's only run of bench/; no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def run_bench(script: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, f"bench/{script}", "--smoke", "--num-cpus", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_benchmark_smoke_runs_compare_scalesweep_with_ray_tune():
    out = run_bench("sweep_vs_tune.py")
    assert "scalesweep vs ray tune:" in out, out
    # the table's last column: both trained the same 4 trials, so the mean final test errors agree
    mean_error = {line[:22].strip(): float(line.split()[-1]) for line in out.splitlines() if line.startswith(("ray tune ", "scalesweep  "))}
    assert set(mean_error) == {"ray tune", "scalesweep"}, out
    assert abs(mean_error["ray tune"] - mean_error["scalesweep"]) < 0.01


def test_overhead_benchmark_smoke_run_times_each_way_of_running_trials():
    out = run_bench("noop_overhead.py")
    for row in ("scheduler only", "scalesweep single", "scalesweep pack", "ray tune"):
        assert row in out, out


def test_scale_benchmark_smoke_run_times_every_step_of_a_sweep():
    out = run_bench("scale.py")
    table = out[out.index("step ") :]
    for step in ("run", "status", "fit", "report", "rerun"):
        assert any(line.startswith(step) and " s" in line for line in table.splitlines()), table
    assert "exit" not in table, table  # every step exited 0
