"""Sweeps of thousands of trials: run, status, fit, report and rerun, timed with their peak memory.

Generates sweeps of N no-op trials of a known law (L = E + A/N^alpha + B/D^beta plus 1% noise,
reached over 20 epochs, 4 metrics per epoch; packed one model size a pack, so Ray's share is small) and times each step
as a user runs it, one `scalesweep` process per step (interpreter start included), with that
process's peak RSS, for:
  sqlite      a SQLite file, MLflow in-process
  postgresql  an `mlflow server` (MLflow's default 4 workers) on a real PostgreSQL
Steps: run; status while it runs (the slowest of the calls made during the run); status, fit
(default 1000 bootstrap resamples), report and rerun (nothing to do) after it; status and fit again
with an empty local cache (a machine that never read the sweep). Beside them, what a user would
otherwise write: `mlflow.search_runs` plus `MlflowClient.get_metric_history` per run for the two
metrics a fit reads (up to --plain-max trials: it takes minutes beyond).

    PYTHONPATH=. python bench/scale.py                        # N = 1000, 5000, 10000 on both stores
    PYTHONPATH=. python bench/scale.py --sizes 1000 --stores sqlite
    PYTHONPATH=. python bench/scale.py --smoke                # 40 trials on SQLite, the steps after run: for CI
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from workloads.api import Reporter, TrialSize, Workload  # noqa: E402

LAW = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28}
GRIDS = {40: (4, 5, 2), 1000: (10, 10, 10), 5000: (25, 20, 10), 10000: (25, 40, 10)}  # (sizes N, sizes D, seeds)


class KnownLawConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(gt=0, description="model size (parameters)")
    d: int = Field(gt=0, description="data size (samples)")
    seed: int = 0
    epochs: int = Field(default=20, gt=0)
    noise: float = Field(default=0.01, ge=0, description="relative noise of the final loss")


def known_law_history(config: KnownLawConfig) -> list[dict[str, float]]:
    final = LAW["E"] + LAW["A"] / config.n ** LAW["alpha"] + LAW["B"] / config.d ** LAW["beta"]
    final *= float(np.exp(config.noise * np.random.default_rng([config.n, config.d, config.seed]).normal()))
    rows = []
    for epoch in range(1, config.epochs + 1):
        loss = final * (1 + 1.0 / epoch - 1.0 / config.epochs)
        rows.append({"epoch": epoch, "train_loss": 0.9 * loss, "train_error": min(0.09 * loss, 1.0), "test_loss": loss, "test_error": min(loss / 10, 1.0)})
    return rows


class KnownLaw(Workload):
    """Trains nothing: reports a known scaling law per epoch. The trials of one model size share a pack."""

    Config = KnownLawConfig
    fit_metric = "test_loss"  # the law itself; test_error is clipped at 1 where the loss passes 10
    model_size_param = "n"
    data_size_param = "d"

    def size(self, config: KnownLawConfig) -> TrialSize:
        return TrialSize(n_params=config.n, n_samples=config.d, train_flops=6.0 * config.n * config.d * config.epochs)

    def train(self, config: KnownLawConfig, reporter: Reporter) -> None:
        for row in known_law_history(config):
            reporter.report(**row)

    def pack_key(self, config: KnownLawConfig) -> Hashable:
        return config.n  # one model size per pack, as the real workloads pack one model shape

    def train_pack(self, configs: Sequence[KnownLawConfig], reporters: Sequence[Reporter]) -> None:
        for config, reporter in zip(configs, reporters):
            self.train(config, reporter)


def grid(n_trials: int) -> tuple[int, int, int]:
    if n_trials in GRIDS:
        return GRIDS[n_trials]
    side = max(2, round((n_trials / 10) ** 0.5))
    return side, max(2, n_trials // (10 * side)), 10


def write_spec(folder: Path, n_trials: int, uri: str, epochs: int) -> Path:
    n_sizes, d_sizes, seeds = grid(n_trials)
    body = {
        "name": f"scale-{n_trials}",
        "workload": "bench.scale:KnownLaw",
        "axes": {
            "n": sorted({int(v) for v in np.geomspace(1e3, 1e8, n_sizes)}),
            "d": sorted({int(v) for v in np.geomspace(1e4, 1e10, d_sizes)}),
            "seed": list(range(seeds)),
        },
        "params": {"epochs": epochs},
        "resources_per_trial": {"cpu": 1},
        "tracking": {"uri": uri, "experiment": f"scale-{uuid.uuid4().hex[:8]}"},
        "execution": {"mode": "pack", "max_trials": 100_000},
    }
    path = folder / f"scale-{n_trials}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def timed(command: list[str], env: dict) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MiB of the process itself, exit code, output tail) of one command."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    reader.join(timeout=10)
    process.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, process.returncode, "".join(output[-5:])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", *args]


def plain_mlflow_read(spec_path: Path) -> list[str]:
    """What a user would otherwise write to read a sweep: search_runs, then each run's history of two metrics."""
    code = f"""
import mlflow, yaml
from mlflow.tracking import MlflowClient
spec = yaml.safe_load(open({str(spec_path)!r}))
mlflow.set_tracking_uri(spec["tracking"]["uri"])
client = MlflowClient()
experiment = client.get_experiment_by_name(spec["tracking"]["experiment"])
runs = mlflow.search_runs([experiment.experiment_id], filter_string="tags.`scalesweep.role` = 'trial'", max_results=50000)
points = sum(len(client.get_metric_history(run_id, key)) for run_id in runs["run_id"] for key in ("test_error", "train_error"))
print(len(runs), "runs", points, "points")
"""
    return [sys.executable, "-c", code]


def bench_store(store: str, sizes: list[int], epochs: int, plain_max: int, num_cpus: int, smoke: bool = False) -> list[dict]:
    from tests.servers import MlflowServer, PostgresServer

    rows = []
    folder = Path(tempfile.mkdtemp(prefix=f"scalesweep-scale-{store}-"))
    servers = []
    if store == "postgresql":
        postgres = PostgresServer()
        postgres.start()
        servers.append(postgres)
        server = MlflowServer(folder, postgres.create_database("mlflow"), workers=4)
        server.start()
        servers.insert(0, server)
        uri = server.url
    else:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
    try:
        for n_trials in sizes:
            spec = write_spec(folder, n_trials, uri, epochs)
            cache = folder / f"cache-{n_trials}"
            env = {**os.environ, "PYTHONPATH": str(REPO), "SCALESWEEP_CACHE": str(cache), "COLUMNS": "160"}
            env.setdefault("RAY_AUTH_MODE", "token")

            def step(name: str, command: list[str], step_env: dict = env) -> None:
                wall, rss, code, tail = timed(command, step_env)
                rows.append({"store": store, "trials": n_trials, "step": name, "wall_s": wall, "rss_mib": rss, "exit": code})
                print(f"  {store:<10} {n_trials:>6} {name:<22} {wall:8.1f} s {rss:8.0f} MiB  exit {code}", flush=True)
                if code not in (0,):
                    print("    " + tail.replace("\n", "\n    "), flush=True)

            boot = ["--n-boot", "100"] if smoke else []
            # run, with status calls while it runs
            runner = subprocess.Popen(cli("run", str(spec), "--yes", "--no-progress", "--num-cpus", str(num_cpus)), env=env, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
            started, during = time.perf_counter(), []
            time.sleep(5)
            while runner.poll() is None and not smoke:
                wall, rss, code, _ = timed(cli("status", str(spec)), env)
                if runner.poll() is None and code == 0:
                    during.append((wall, rss))
                time.sleep(5)
            run_tail = runner.communicate()[0]
            run_wall = time.perf_counter() - started
            rows.append({"store": store, "trials": n_trials, "step": "run", "wall_s": run_wall, "rss_mib": float("nan"), "exit": runner.returncode})
            print(f"  {store:<10} {n_trials:>6} {'run':<22} {run_wall:8.1f} s  ({run_wall / n_trials * 1000:.0f} ms/trial)  exit {runner.returncode}", flush=True)
            if runner.returncode != 0:
                print("    " + run_tail[-2000:].replace("\n", "\n    "), flush=True)
            if during:
                wall, rss = max(during)
                rows.append({"store": store, "trials": n_trials, "step": f"status during run (max of {len(during)})", "wall_s": wall, "rss_mib": rss, "exit": 0})
                print(f"  {store:<10} {n_trials:>6} {'status during run':<22} {wall:8.1f} s {rss:8.0f} MiB  (max of {len(during)})", flush=True)
            step("status", cli("status", str(spec)))
            step("fit", cli("fit", str(spec), *boot))
            step("report", cli("report", str(spec), "--out", str(folder / f"report-{n_trials}"), *boot))
            step("rerun", cli("run", str(spec), "--yes", "--no-progress", "--num-cpus", str(num_cpus)))
            if smoke:
                continue
            cold = {**env, "SCALESWEEP_CACHE": str(folder / f"cold-{n_trials}-{uuid.uuid4().hex[:6]}")}
            step("status, empty cache", cli("status", str(spec)), cold)
            step("fit, empty cache", cli("fit", str(spec)), cold)
            if n_trials <= plain_max:
                step("plain MLflow read", plain_mlflow_read(spec))
    finally:
        for server in servers:
            server.stop()
    return rows


def print_table(rows: list[dict]) -> None:
    columns = sorted({(r["store"], r["trials"]) for r in rows}, key=lambda c: (c[0] != "sqlite", c[1]))
    steps = list(dict.fromkeys(r["step"] for r in rows))
    header = f"{'step':<30}" + "".join(f"{f'{s} {n}':>22}" for s, n in columns)
    print("\n" + header)
    print("-" * len(header))
    for step_name in steps:
        cells = []
        for column in columns:
            match = [r for r in rows if (r["store"], r["trials"]) == column and r["step"] == step_name]
            if not match:
                cells.append(f"{'-':>22}")
                continue
            r = match[0]
            rss = "" if np.isnan(r["rss_mib"]) else f" {r['rss_mib']:.0f} MiB"
            flag = "" if r["exit"] == 0 else f" exit {r['exit']}"
            text = f"{r['wall_s']:.1f} s{rss}{flag}"
            cells.append(f"{text:>22}")
        print(f"{step_name:<30}" + "".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000], help="trials per sweep")
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--plain-max", type=int, default=1000, help="largest sweep to read the plain MLflow way too")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="40 trials of 3 epochs on SQLite, fewer resamples, no cold reads: for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.stores, args.epochs, args.plain_max = [40], ["sqlite"], 3, 40
    rows = []
    for store in args.stores:
        rows += bench_store(store, args.sizes, args.epochs, args.plain_max, args.num_cpus, args.smoke)
    print_table(rows)
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
