"""Per-trial orchestration and logging overhead: trials that do nothing but report one epoch.

Runs N no-op trials (each reports the four standard metrics once), and again N/10, and prints
the marginal milliseconds per trial, (wall(N) - wall(N/10)) / (N - N/10), so that the fixed start
(worker processes, the MLflow experiment) is not counted as per-trial overhead, for:
  scheduler only      Ray workers and the queue, no MLflow (orchestration alone; its figure is
                      the steady state from the first result to the last)
  scalesweep single   run_sweep, one trial per Ray call, every run recorded in MLflow
  scalesweep pack     run_sweep, trials in packs (the no-op workload can pack)
  ray tune            function trainables, reuse_actors=True, MLflowLoggerCallback (fewer trials:
                      at about 0.3 s each, 1000 would take minutes; the per-trial figure compares)
and, for the run_sweep rows, the time the recorder spent in MLflow calls per trial: where it goes.

    PYTHONPATH=. python bench/noop_overhead.py            # 1000 trials (Tune: 200)
    PYTHONPATH=. python bench/noop_overhead.py --smoke    # 10 trials (Tune: 3), seconds
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Hashable, Sequence

from pydantic import BaseModel, ConfigDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._tracking import bench_tracking_uri  # noqa: E402
from workloads.api import Reporter, TrialSize, Workload  # noqa: E402

NOOP_WORKLOAD = "bench.noop_overhead:NoOpWorkload"
NOOP_METRICS = {"train_loss": 0.0, "train_error": 0.0, "test_loss": 0.0, "test_error": 0.0}


class NoOpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    i: int = 0
    epochs: int = 1


class NoOpWorkload(Workload):
    """Trains nothing: reports the standard metrics once. All trials share one pack key."""

    Config = NoOpConfig
    model_size_param = "i"
    data_size_param = "i"

    def size(self, config: NoOpConfig) -> TrialSize:
        return TrialSize(n_params=1, n_samples=1, train_flops=1.0)

    def train(self, config: NoOpConfig, reporter: Reporter) -> None:
        reporter.report(1, **NOOP_METRICS)

    def pack_key(self, config: NoOpConfig) -> Hashable:
        return "noop"

    def train_pack(self, configs: Sequence[NoOpConfig], reporters: Sequence[Reporter]) -> None:
        for reporter in reporters:
            reporter.report(1, **NOOP_METRICS)


def noop_spec(n: int, tracking_uri: str, mode: str):
    from orchestrator import parse_spec

    return parse_spec(
        {
            "name": f"noop-{uuid.uuid4().hex[:8]}",
            "workload": NOOP_WORKLOAD,
            "axes": {"i": list(range(n))},
            "resources_per_trial": {"cpu": 1},
            "tracking": {"uri": tracking_uri},
            "execution": {"mode": mode},
        }
    )


def scheduler_only(n: int) -> tuple[float, float]:
    """(seconds, steady-state ms per trial) to run n single-trial packs through the scheduler with
    no recording; the steady state is first result to last, so worker start-up is left out."""
    from orchestrator.grid import expand_grid
    from orchestrator.scheduler import Scheduler

    spec = noop_spec(n, "sqlite:///unused.db", "single")
    trials = expand_grid(spec)
    arrived: list[float] = []
    started = time.perf_counter()
    scheduler = Scheduler(spec.workload, spec.resources_per_trial, spec.execution)
    results = scheduler.run([[t] for t in trials], on_result=lambda trial, result: arrived.append(time.perf_counter()))
    assert len(results) == n and all(r.status == "finished" for r in results)
    return time.perf_counter() - started, 1e3 * (arrived[-1] - arrived[0]) / max(n - 1, 1)


def through_scalesweep(n: int, tracking_uri: str, mode: str) -> tuple[float, float, int]:
    """(seconds, seconds in MLflow calls, packs) for n trials through run_sweep."""
    from orchestrator import run_sweep

    started = time.perf_counter()
    outcome = run_sweep(noop_spec(n, tracking_uri, mode), progress=False)
    assert outcome.counts == {"finished": n}, outcome.counts
    return time.perf_counter() - started, outcome.recording_s, outcome.n_packs


def noop_tune_trial(config: dict) -> None:
    from ray import tune

    tune.report(dict(NOOP_METRICS))


def through_tune(n: int, tracking_uri: str) -> float:
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    experiment = f"tune-noop-{uuid.uuid4().hex[:8]}"
    storage = Path(tracking_uri.removeprefix("sqlite:///")).parent / "tune" if tracking_uri.startswith("sqlite") else None
    tuner = tune.Tuner(
        tune.with_resources(noop_tune_trial, {"cpu": 1}),
        param_space={"i": tune.grid_search(list(range(n)))},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=str(storage or "/tmp/scalesweep-bench-tune"),
            verbose=0,
            callbacks=[MLflowLoggerCallback(tracking_uri=tracking_uri, experiment_name=experiment)],
        ),
    )
    started = time.perf_counter()
    results = tuner.fit()
    assert len(results) == n and not results.errors, results.errors
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="10 trials (Tune: 3): checks it runs, in seconds")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--tune-trials", type=int, default=200)
    parser.add_argument("--tracking-uri", help="MLflow store (default: a new SQLite file)")
    parser.add_argument("--num-cpus", type=int, help="CPUs for the local Ray (default: all)")
    args = parser.parse_args(argv)
    n, n_tune = (10, 3) if args.smoke else (args.trials, args.tune_trials)

    from orchestrator.scheduler import connect

    connect(num_cpus=args.num_cpus)
    tracking_uri = bench_tracking_uri(args.tracking_uri)
    print(f"{n} no-op trials (Tune: {n_tune}); tracking {tracking_uri}")

    def marginal_ms(run, count: int) -> tuple[float, float, tuple]:
        """(marginal ms per trial, wall s of the large run, what the large run returned).

        The smoke run skips the small run: its ms/trial then includes the fixed start."""
        large = run(count)
        if args.smoke:
            return 1e3 * large[0] / count, large[0], large
        small = max(count // 10, 1)
        return 1e3 * (large[0] - run(small)[0]) / (count - small), large[0], large

    wall, ms = scheduler_only(n)
    rows = [("scheduler only", n, n, wall, ms, "-")]
    for mode in ("single", "pack"):
        ms, wall, (_, recording, packs) = marginal_ms(lambda k: through_scalesweep(k, tracking_uri, mode), n)
        rows.append((f"scalesweep {mode}", n, packs, wall, ms, f"{1e3 * recording / n:.1f}"))
    ms, wall, _ = marginal_ms(lambda k: (through_tune(k, tracking_uri),), n_tune)
    rows.append(("ray tune", n_tune, n_tune, wall, ms, "-"))

    print(f"{'':20}{'trials':>8}{'Ray calls':>10}{'wall s':>9}{'ms/trial':>10}{'MLflow ms/trial':>17}")
    for name, count, calls, wall, ms, mlflow_ms in rows:
        print(f"{name:20}{count:>8}{calls:>10}{wall:>9.2f}{ms:>10.1f}{mlflow_ms:>17}")
    tune_ms = rows[-1][4]
    for name, _, _, _, ms, _ in rows[1:3]:
        if ms > 0 and tune_ms > 0:  # a noisy machine can make a marginal cost come out negative
            print(f"{name}: {tune_ms / ms:.1f}x less overhead per trial than ray tune")
    return 0


if __name__ == "__main__":
    sys.exit(main())
