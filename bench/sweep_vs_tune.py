"""The same MNIST-1D grid trained twice in one process: Ray Tune, then scalesweep.

(a) Ray Tune: `tune.grid_search` over the axes, `reuse_actors=True`, 1 CPU and (when the cluster
    has GPUs) 1/8 GPU per trial, `MLflowLoggerCallback` recording every reported epoch.
(b) scalesweep: `run_sweep` on the same axes and params, in packs (execution.mode 'pack', so
    also on a CPU, where 'auto' would not pack), recording to the same kind of MLflow store.

Both train with `MNIST1DMLP.train`'s recipe, so the mean final test error must agree within noise
(a vmapped member matches training alone to float32 rounding). Prints wall time, trials per second,
the speed ratio and the mean final test error of both.

    PYTHONPATH=. python bench/sweep_vs_tune.py              # the CPU grid (a few minutes on 2 cores)
    PYTHONPATH=. python bench/sweep_vs_tune.py --gpu-grid   # 256 trials, the size meant for one GPU
    PYTHONPATH=. python bench/sweep_vs_tune.py --smoke      # seconds: 4 tiny trials, checks it runs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._tracking import bench_tracking_uri, ray_gpus  # noqa: E402

GRIDS = {
    # 4 trials, 1 epoch: checks both paths end to end in seconds.
    "smoke": ({"width": [8, 16], "n_train": [200], "seed": [0, 1]}, {"epochs": 1, "label_noise": 0.1}),
    # 24 trials on 2 CPU cores.
    "cpu": ({"width": [16, 64, 256], "n_train": [1000, 4000], "seed": [0, 1, 2, 3]}, {"epochs": 10, "label_noise": 0.15}),
    # 256 trials: 8 widths x 2 data sizes x 16 seeds, the grid of the GPU target.
    "gpu": (
        {"width": [8, 16, 32, 64, 128, 256, 512, 1024], "n_train": [1000, 4000], "seed": list(range(16))},
        {"epochs": 20, "label_noise": 0.15},
    ),
}
COMMON_PARAMS = {"batch_size": 128, "lr": 0.003}


@dataclass
class Measured:
    name: str
    n_trials: int
    wall_s: float
    test_errors: dict[tuple, float]  # final test error by (width, n_train, seed)

    @property
    def trials_per_s(self) -> float:
        return self.n_trials / self.wall_s

    @property
    def mean_test_error(self) -> float:
        return statistics.fmean(self.test_errors.values())


def tune_trial(config: dict) -> None:
    """One Tune trial: MNIST1DMLP.train, each epoch reported to Tune."""
    from ray import tune

    from workloads.api import Reporter
    from workloads.mnist1d_mlp import MNIST1DMLP

    class TuneReporter(Reporter):
        def report(self, epoch: int, **metrics: float) -> None:
            super().report(epoch, **metrics)
            tune.report({"epoch": epoch, **metrics})

    workload = MNIST1DMLP()
    workload.train(workload.validate_config(config), TuneReporter())


def run_tune(axes: dict, params: dict, tracking_uri: str, storage: str) -> Measured:
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    gpu = 1 / 8 if ray_gpus() > 0 else 0
    trainable = tune.with_resources(tune_trial, {"cpu": 1, "gpu": gpu})
    space = {**{k: tune.grid_search(v) for k, v in axes.items()}, **params}
    experiment = f"tune-{uuid.uuid4().hex[:8]}"
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=storage,
            verbose=0,
            callbacks=[MLflowLoggerCallback(tracking_uri=tracking_uri, experiment_name=experiment, save_artifact=False)],
        ),
    )
    started = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - started
    frame = results.get_dataframe()
    errors = {
        (row["config/width"], row["config/n_train"], row["config/seed"]): row["test_error"] for _, row in frame.iterrows()
    }
    failed = [r for r in results if r.error]
    if failed:
        raise RuntimeError(f"{len(failed)} Tune trials failed, first: {failed[0].error}")
    return Measured("ray tune", len(frame), wall, errors)


def run_scalesweep(axes: dict, params: dict, tracking_uri: str, mode: str = "auto") -> Measured:
    from orchestrator import parse_spec, run_sweep
    from orchestrator.sweep import Sweep

    spec = parse_spec(
        {
            "name": f"bench-{uuid.uuid4().hex[:8]}",
            "workload": "mnist1d_mlp",
            "axes": axes,
            "params": params,
            "resources_per_trial": {"cpu": 1},
            "tracking": {"uri": tracking_uri},
            "execution": {"mode": mode},
        }
    )
    started = time.perf_counter()
    outcome = run_sweep(spec, progress=False)
    wall = time.perf_counter() - started
    if not outcome.ok:
        raise RuntimeError(f"scalesweep trials failed: {dict(outcome.counts)}")
    trials = Sweep(spec).results()
    errors = {(row["width"], row["n_train"], row["seed"]): row["test_error"] for _, row in trials.iterrows()}
    label = "scalesweep" if mode == "pack" else f"scalesweep ({mode})"
    print(f"  {label}: {outcome.n_submitted} trials in {outcome.n_packs} packs; {outcome.recording_s:.1f} s in MLflow calls")
    return Measured(label, outcome.n_submitted, wall, errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="4 tiny trials: checks both paths run, in seconds")
    size.add_argument("--gpu-grid", action="store_true", help="the 256-trial grid (default when Ray has a GPU)")
    parser.add_argument("--tracking-uri", help="MLflow store for both (default: a new SQLite file)")
    parser.add_argument("--num-cpus", type=int, help="CPUs for the local Ray (default: all)")
    parser.add_argument("--also-single", action="store_true", help="also run scalesweep with execution.mode single")
    args = parser.parse_args(argv)

    from ray import tune  # noqa: F401  (imported before timing starts, as a user's script would)

    from orchestrator.scheduler import connect
    from workloads.mnist1d_mlp import load_mnist1d

    load_mnist1d()  # generate the data set once, outside both timings
    connect(num_cpus=args.num_cpus)
    grid = "smoke" if args.smoke else "gpu" if args.gpu_grid or ray_gpus() > 0 else "cpu"
    axes, params = GRIDS[grid]
    params = {**COMMON_PARAMS, **params}
    tracking_uri = bench_tracking_uri(args.tracking_uri)
    storage = str(Path(tracking_uri.removeprefix("sqlite:///")).parent / "tune") if tracking_uri.startswith("sqlite") else None
    print(f"grid {grid}: {axes} params {params}; tracking {tracking_uri}; GPUs {ray_gpus():g}")

    tune_run = run_tune(axes, params, tracking_uri, storage or "/tmp/scalesweep-bench-tune")
    runs = [tune_run, run_scalesweep(axes, params, tracking_uri, mode="pack")]
    if args.also_single:
        runs.append(run_scalesweep(axes, params, tracking_uri, mode="single"))

    print(f"{'':22}{'trials':>8}{'wall s':>10}{'trials/s':>10}{'mean test err':>15}")
    for run in runs:
        print(f"{run.name:22}{run.n_trials:>8}{run.wall_s:>10.1f}{run.trials_per_s:>10.2f}{run.mean_test_error:>15.4f}")
    for run in runs[1:]:
        shared = tune_run.test_errors.keys() & run.test_errors.keys()
        worst = max(abs(tune_run.test_errors[k] - run.test_errors[k]) for k in shared)
        print(
            f"{run.name} vs ray tune: {tune_run.wall_s / run.wall_s:.2f}x faster; mean test error differs by "
            f"{run.mean_test_error - tune_run.mean_test_error:+.4f} (largest per-trial difference {worst:.4f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
