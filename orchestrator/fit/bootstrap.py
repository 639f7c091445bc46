"""Bootstrap helpers shared by every fit: resampling weights and percentile intervals."""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

DEFAULT_N_BOOT = 1000
DEFAULT_CI_LEVEL = 0.95
# A bootstrap is split over processes once it refits at least this many points in all (points x
# resamples): below it, forking costs more than it saves. At most MAX_JOBS processes.
PARALLEL_MIN_WORK = 1_000_000
MAX_JOBS = 8


def resample_counts(n_points: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_points) counts of how often each point is drawn in each resample.

    Drawing n_points with replacement is a multinomial draw; as weights in a weighted loss it is
    the same fit as resampling the points themselves, and lets resamples share one data array.
    """
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_points, np.full(n_points, 1.0 / n_points), size=n_boot)


def bootstrap_jobs(n_points: int, n_boot: int) -> int:
    """How many processes a bootstrap of n_boot refits of n_points points is worth: 1 for a small one,
    else every CPU this process may use (up to MAX_JOBS)."""
    if n_points * n_boot < PARALLEL_MIN_WORK:
        return 1
    return max(1, min(MAX_JOBS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def percentile_ci(samples: np.ndarray, level: float = DEFAULT_CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along axis 0, ignoring resamples that failed (NaN rows)."""
    samples = np.asarray(samples, dtype=float)
    tail = (1 - level) / 2 * 100
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column of failed resamples only: NaN, said elsewhere
        lo, hi = np.nanpercentile(samples, [tail, 100 - tail], axis=0)
    return lo, hi


def ci_dict(names, samples: np.ndarray, level: float) -> dict[str, tuple[float, float]]:
    """{name: (lo, hi)} from a (n_boot, len(names)) sample array."""
    lo, hi = percentile_ci(samples, level)
    return {name: (float(a), float(b)) for name, a, b in zip(names, np.atleast_1d(lo), np.atleast_1d(hi))}


def format_table(title: str, params: dict[str, float], ci: dict[str, tuple[float, float]], level: float, footer: str = "") -> str:
    """The plain-text table every fit's summary() prints: one row per parameter with its CI."""
    pct = f"{level * 100:g}% CI"
    lines = [title, f"  {'param':<10} {'value':>12} {pct:>27}"]
    for name, value in params.items():
        lo, hi = ci.get(name, (float("nan"), float("nan")))
        lines.append(f"  {name:<10} {value:>12.5g} [{lo:>12.5g}, {hi:>12.5g}]")
    if footer:
        lines.append(f"  {footer}")
    return "\n".join(lines)


def single_threaded_blas(fn):
    """Run `fn` with BLAS limited to one thread.

    Optimisers on a handful of parameters make many tiny LAPACK calls; a multi-threaded BLAS spends
    far longer waking its threads than computing (L-BFGS-B ran ~70x slower on a busy 2-core machine).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper
