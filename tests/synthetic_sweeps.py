"""Sweep results with a known shape, as the DataFrames orchestrator.results returns, for report tests.

`double_descent_*`: test error over model size N x data size D x epoch with a peak where the train
error first reaches zero (at N = THRESHOLD_PER_SAMPLE * D). `isoflop_trials`: a Chinchilla-style
L(N, D) sampled at fixed compute budgets, D = C / (6 N).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SIZES = [250, 500, 1000, 2000, 4000, 8000, 16000, 32000]  # parameters
DATA_SIZES = [1000, 4000]  # samples
SEEDS = [0, 1]
EPOCHS = 12
THRESHOLD_PER_SAMPLE = 2  # train error reaches 0 at N = 2 D: 2000 for D=1000, 8000 for D=4000
BUDGETS = [1e15, 1e16, 1e17, 1e18]  # FLOPs
E, A, ALPHA, B, BETA = 1.7, 400.0, 0.34, 410.0, 0.28


def _train_error(n: float, d: float) -> float:
    return max(0.0, 0.3 * (1 - np.log(n) / np.log(THRESHOLD_PER_SAMPLE * d)) * 4)


def _test_error(n: float, d: float, progress: float = 1.0) -> float:
    """Falls with N, with a bump (height 0.2 at convergence) centred on the interpolation threshold."""
    bump = 0.2 * progress * np.exp(-((np.log(n / (THRESHOLD_PER_SAMPLE * d))) ** 2) / 0.5)
    return 0.12 + 0.3 * (n / 250) ** -0.3 * (1000 / d) ** 0.2 + bump


def double_descent_trials() -> pd.DataFrame:
    """One row per trial: n_params, n_samples, seed, train_flops, status and final errors."""
    rng = np.random.default_rng(0)
    rows = []
    for d in DATA_SIZES:
        for n in SIZES:
            for seed in SEEDS:
                rows.append(
                    {
                        "trial_key": f"{n}-{d}-{seed}",
                        "status": "finished",
                        "n_params": n,
                        "n_samples": d,
                        "seed": seed,
                        "train_flops": 6.0 * n * d * EPOCHS,
                        "train_error": _train_error(n, d),
                        "test_error": _test_error(n, d) * (1 + 0.02 * rng.normal()),
                    }
                )
    return pd.DataFrame(rows)


def double_descent_history() -> pd.DataFrame:
    """One row per trial x epoch: the bump grows as training goes on (epoch-wise double descent)."""
    rows = []
    for trial in double_descent_trials().to_dict("records"):
        for epoch in range(1, EPOCHS + 1):
            progress = epoch / EPOCHS
            rows.append(
                {
                    **trial,
                    "epoch": epoch,
                    "train_error": trial["train_error"] + 0.4 * (1 - progress) ** 2,
                    "test_error": _test_error(trial["n_params"], trial["n_samples"], progress) + 0.2 * (1 - progress) ** 2,
                }
            )
    return pd.DataFrame(rows)


def chinchilla_loss(n, d):
    return E + A / np.asarray(n, float) ** ALPHA + B / np.asarray(d, float) ** BETA


def isoflop_trials() -> pd.DataFrame:
    """Per budget, 7 model sizes around the optimum; D = C / (6 N) tokens; loss from chinchilla_loss."""
    rows = []
    for budget in BUDGETS:
        n_center = 0.1 * budget**0.5
        for n in n_center * np.geomspace(1 / 8, 8, 7):
            d = budget / (6 * n)
            rows.append(
                {"n_params": n, "n_samples": d, "train_flops": budget, "compute_budget": budget, "test_loss": float(chinchilla_loss(n, d))}
            )
    return pd.DataFrame(rows)


def compute_optimal_inputs():
    """The report's IsoFLOP inputs as a fit would hand them over: a parabola in log N per budget
    through isoflop_trials, and power laws with bands for N_opt(C) and D_opt(C)."""
    from dashboards import ComputeOptimal
    from dashboards.curves import curve_from_callable

    iso = isoflop_trials()
    profiles = {}
    for budget, rows in iso.groupby("compute_budget"):
        coef = np.polyfit(np.log(rows["n_params"]), rows["test_loss"], 2)
        x = np.geomspace(rows["n_params"].min(), rows["n_params"].max(), 60)
        profiles[budget] = curve_from_callable(lambda n, c=coef: np.polyval(c, np.log(n)), x)
    budgets = np.geomspace(BUDGETS[0], BUDGETS[-1], 30)
    n_opt = curve_from_callable(lambda c: 0.1 * c**0.5, budgets, band=lambda c: (0.08 * c**0.5, 0.12 * c**0.5), label="N_opt ∝ C^0.50")
    d_opt = curve_from_callable(
        lambda c: c**0.5 / 0.6, budgets, band=lambda c: (0.8 * c**0.5 / 0.6, 1.2 * c**0.5 / 0.6), label="D_opt ∝ C^0.50"
    )
    return ComputeOptimal(iso, metric="test_loss", profiles=profiles, n_opt=n_opt, d_opt=d_opt)
