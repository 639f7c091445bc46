"""Benchmark: a joint L(N, D) fit (Chinchilla approach 3) with 1000 bootstrap resamples on 250 points.

Target: <= 10 s on 2 CPU cores. Run from the repository root:

    python bench/bench_fit.py            # the full benchmark (about 3 runs)
    python bench/bench_fit.py --smoke    # seconds: 20 resamples, checks it runs
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from orchestrator.fit import fit_joint_law

TRUTH = (1.69, 406.4, 0.34, 410.7, 0.28)  # E, A, alpha, B, beta (Hoffmann et al. 2022)


def points(noise: float = 0.01, seed: int = 0):
    """250 points: 10 model sizes x 25 data sizes, multiplicative log-normal noise."""
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, 10), np.geomspace(1e9, 1e12, 25)))
    E, A, alpha, B, beta = TRUTH
    loss = (E + A / N**alpha + B / D**beta) * np.exp(noise * np.random.default_rng(seed).normal(size=N.size))
    return N, D, loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=2, help="processes for the bootstrap")
    parser.add_argument("--smoke", action="store_true", help="20 resamples, one repeat")
    parser.add_argument(
        "--full-grid", action="store_true", help="also run L-BFGS from all 4500 grid starts and compare with the screened 64"
    )
    args = parser.parse_args()
    n_boot, repeats = (20, 1) if args.smoke else (args.n_boot, args.repeats)
    N, D, loss = points()
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fit = fit_joint_law(N, D, loss, n_boot=n_boot, n_jobs=args.n_jobs)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"joint fit, {len(loss)} points, {n_boot} resamples, {args.n_jobs} processes: best {min(times):.2f} s, median {np.median(times):.2f} s over {repeats}")
    if args.n_jobs == 1:  # CPU time of this process: on a busy machine, a better guide than wall time
        print(f"CPU time of the fit: best {min(cpu):.2f} s")
    print(fit.summary())
    if args.full_grid:
        start = time.perf_counter()
        full = fit_joint_law(N, D, loss, n_boot=0, n_starts=None)
        worst = max(abs(full.params[k] / fit.params[k] - 1) for k in fit.params)
        print(
            f"all {full.n_starts} starts: {time.perf_counter() - start:.1f} s, objective {full.objective:.6g} "
            f"vs {fit.objective:.6g} from {fit.n_starts}; largest relative parameter difference {worst:.2e}"
        )


if __name__ == "__main__":
    main()
