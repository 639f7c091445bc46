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


def two_noise_trials() -> pd.DataFrame:
    """double_descent_trials at two label-noise levels, 3 seeds: the bump scales with the noise
    (absent without it), so the curves' peaks and verdicts differ by level."""
    rng = np.random.default_rng(2)
    rows = []
    for noise in (0.0, 0.2):
        for d in DATA_SIZES:
            for n in SIZES:
                for seed in range(3):
                    clean = 0.12 + 0.3 * (n / 250) ** -0.3 * (1000 / d) ** 0.2
                    bump = _test_error(n, d) - clean
                    rows.append(
                        {
                            "trial_key": f"{n}-{d}-{seed}-{noise}",
                            "n_params": n,
                            "n_samples": d,
                            "seed": seed,
                            "label_noise": noise,
                            "train_flops": 6.0 * n * d * EPOCHS,
                            "train_error": _train_error(n, d) * (1 + noise),
                            "test_error": (clean + bump * noise / 0.2) * (1 + 0.01 * rng.normal()),
                        }
                    )
    return pd.DataFrame(rows)


# -- laws that a fit must refuse, and one it must recover ------------------------------------------
GRID_N = np.geomspace(1e6, 1e9, 6)  # parameters
GRID_D = np.geomspace(1e8, 1e11, 6)  # tokens


def law_trials(loss, n_sizes=GRID_N, d_sizes=GRID_D, seeds=(0, 1), noise: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """One row per (N, D, seed) of an N x D grid with test_loss = loss(N, D) x exp(noise x normal)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in n_sizes:
        for d in d_sizes:
            for s in seeds:
                value = float(loss(n, d)) * float(np.exp(noise * rng.normal()))
                rows.append({"trial_key": f"{n:.3g}-{d:.3g}-{s}", "n_params": n, "n_samples": d, "seed": s, "train_flops": 6 * n * d, "test_loss": value})
    return pd.DataFrame(rows)


def degenerate_sweeps() -> dict[str, pd.DataFrame]:
    """Sweeps whose losses contradict L(N, D): what a broken sweep (an untuned learning rate, a bug
    that ignores the data) produces. No compute-optimal allocation may come out of any of them."""
    rising = law_trials(lambda n, d: 2.0 + 0.01 * n**0.2 + B / d**BETA)  # bigger models do worse
    nan = law_trials(chinchilla_loss)
    nan.loc[nan["n_params"] > GRID_N[1], "test_loss"] = np.nan  # all but the two smallest sizes diverged
    return {
        "constant loss": law_trials(lambda n, d: np.full_like(np.asarray(n, float), 2.5)),
        "loss rising with N": rising,
        "no D dependence": law_trials(lambda n, d: E + A / n**ALPHA + 0.0 * d),
        "two sizes only": law_trials(chinchilla_loss, n_sizes=GRID_N[:2]),
        "NaN": nan,
    }


def lr_trials(noise: float = 0.005) -> pd.DataFrame:
    """chinchilla_loss times a penalty for a learning rate off its optimum, an optimum that moves
    with model size: log10 lr*(N) = -1 - 0.5 log10(N / 1e7), so lr* = 0.1 at N = 1e7 and 1e-3 at
    N = 1e11; the grid of lr is 10^-4 ... 10^-1 in half decades, so lr* is on it at every N (and at
    its top edge for the smallest model)."""
    rng = np.random.default_rng(4)
    rows = []
    for n in LR_SIZES:
        for d in GRID_D:
            for lr in LR_GRID:
                for s in (0, 1):
                    off = np.log10(lr) - best_log_lr(n)
                    value = float(chinchilla_loss(n, d)) * (1 + 0.08 * off**2) * float(np.exp(noise * rng.normal()))
                    rows.append({"trial_key": f"{n:.3g}-{d:.3g}-{lr:.3g}-{s}", "n_params": n, "n_samples": d, "lr": lr, "seed": s, "train_flops": 6 * n * d, "test_loss": value})
    return pd.DataFrame(rows)


LR_SIZES = np.array([1e7, 1e8, 1e9, 1e10, 1e11])
LR_GRID = 10.0 ** np.arange(-4.0, -0.99, 0.5)


def best_log_lr(n: float) -> float:
    return -1.0 - 0.5 * np.log10(n / 1e7)


def tiny_lm_isoflop_shape(budgets=(1e10, 3e10, 1e11), offset: float = 0.0) -> pd.DataFrame:
    """An IsoFLOP design in miniature (7 sizes per budget, D = C / 6N) with the grid shifted by
    `offset` decades of N from the optimum: 0 centres it, 1 puts every optimum past the small end."""
    from orchestrator.fit.allocation import allocation_from_joint

    a, n_coef, _, _ = allocation_from_joint(E, A, ALPHA, B, BETA)
    rows = []
    for budget in budgets:
        n_opt = n_coef * budget**a
        for n in n_opt * np.geomspace(1 / 4, 4, 7) * 10**offset:
            d = budget / (6 * n)
            rows.append({"n_params": n, "n_samples": d, "train_flops": budget, "compute_budget": budget, "seed": 0, "test_loss": float(chinchilla_loss(n, d))})
    return pd.DataFrame(rows)
