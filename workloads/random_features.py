"""Random-features regression solved in closed form: the textbook model of double descent.

A fixed linear teacher f*(x) = <beta, x> on Gaussian inputs x ~ N(0, I_d), noisy labels
y = f*(x) + noise_std * eps. The student is linear in p random features and is fitted by the
minimum-norm least-squares solution (numpy's SVD-based lstsq), i.e. gradient descent from zero run to
convergence, with no regulariser. Model size N = p features (the fitted weights), data size D = n
samples. The test error peaks where p = n (the interpolation threshold) and falls again beyond it
(Belkin et al. 2019; Mei & Montanari 2019).

Two feature maps:
- 'relu': phi(x) = max(W x, 0) with W_ij ~ N(0, 1/d), d = input_dim fixed across the sweep.
- 'gaussian': the isotropic linear model of Hastie, Montanari, Rosset & Tibshirani (2019): the
  features are the p Gaussian inputs themselves and the teacher has p coefficients of norm
  `signal`. Its risk has the closed form `isotropic_ridgeless_risk`, which tests check against.

Metrics (regression, one report at "epoch" 1): train_loss = train_error = mean squared error on the
noisy training labels; test_loss = test_error = mean squared error against the noise-free teacher on
fresh inputs, i.e. the excess risk E[(f_hat(x) - f*(x))^2] (the noise floor noise_std^2 is left out).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from workloads.api import Reporter, TrialSize, Workload

TEACHER_SEED = 12345  # the teacher is the same in every trial; seeds change data, features and noise


class RandomFeaturesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_features: int = Field(gt=0, le=200_000, description="random features p = fitted weights N")
    n_train: int = Field(gt=0, le=200_000, description="training samples n = D")
    features: Literal["relu", "gaussian"] = "relu"
    input_dim: int = Field(default=20, gt=0, le=10_000, description="input dimension d of the relu model")
    noise_std: float = Field(default=0.5, ge=0, description="std of the label noise")
    signal: float = Field(default=1.0, gt=0, description="norm of the teacher's coefficients")
    n_test: int = Field(default=2000, gt=0, le=1_000_000, description="fresh inputs for the test error")
    seed: int = Field(default=0, ge=0)


def isotropic_ridgeless_risk(gamma, signal: float = 1.0, noise_std: float = 0.5) -> np.ndarray:
    """Limiting excess risk of min-norm least squares in the isotropic model, gamma = p / n.

    Hastie, Montanari, Rosset, Tibshirani (2019), Theorem 1: sigma^2 gamma / (1 - gamma) for gamma < 1,
    and r^2 (1 - 1/gamma) + sigma^2 / (gamma - 1) for gamma > 1 (r = signal, sigma = noise_std);
    infinite at gamma = 1.
    """
    gamma = np.asarray(gamma, dtype=float)
    s2, r2 = noise_std**2, signal**2
    with np.errstate(divide="ignore", invalid="ignore"):
        under = s2 * gamma / (1 - gamma)
        over = r2 * (1 - 1 / gamma) + s2 / (gamma - 1)
    return np.where(gamma < 1, under, np.where(gamma > 1, over, np.inf))


def teacher(dim: int, signal: float) -> np.ndarray:
    """The fixed teacher coefficients: a direction uniform on the sphere, scaled to norm `signal`."""
    beta = np.random.default_rng(TEACHER_SEED).standard_normal(dim)
    return signal * beta / np.linalg.norm(beta)


def fit_and_score(config: RandomFeaturesConfig) -> dict[str, float]:
    """Draw data and features, fit min-norm least squares, return train and test mean squared errors."""
    rng = np.random.default_rng([config.seed, config.n_features, config.n_train])
    p, n = config.n_features, config.n_train
    dim = p if config.features == "gaussian" else config.input_dim
    beta = teacher(dim, config.signal)
    x_train = rng.standard_normal((n, dim))
    x_test = rng.standard_normal((config.n_test, dim))
    if config.features == "gaussian":
        phi_train, phi_test = x_train, x_test
    else:
        w = rng.standard_normal((dim, p)) / np.sqrt(dim)
        phi_train, phi_test = np.maximum(x_train @ w, 0.0), np.maximum(x_test @ w, 0.0)
    y_train = x_train @ beta + config.noise_std * rng.standard_normal(n)
    weights = np.linalg.lstsq(phi_train, y_train, rcond=None)[0]  # minimum-norm solution when p > n
    train_mse = float(np.mean((phi_train @ weights - y_train) ** 2))
    test_mse = float(np.mean((phi_test @ weights - x_test @ beta) ** 2))
    return {"train_loss": train_mse, "train_error": train_mse, "test_loss": test_mse, "test_error": test_mse}


class RandomFeatures(Workload):
    """Min-norm least squares on random ReLU (or Gaussian) features; N = features, D = samples."""

    Config = RandomFeaturesConfig
    model_size_param = "n_features"
    data_size_param = "n_train"
    noise_columns = ("noise_std",)
    metric_units = dict.fromkeys(("test_loss", "train_loss", "test_error", "train_error"), "mean squared error")

    def size(self, config: RandomFeaturesConfig) -> TrialSize:
        p, n = config.n_features, config.n_train
        dim = p if config.features == "gaussian" else config.input_dim
        # Features: 2 n d p multiply-adds; SVD-based least squares: about 4 n p min(n, p) FLOPs (LAPACK gelsd).
        flops = 2.0 * n * dim * p * (config.features == "relu") + 4.0 * n * p * min(n, p)
        return TrialSize(n_params=p, n_samples=n, train_flops=flops)

    def train(self, config: RandomFeaturesConfig, reporter: Reporter) -> None:
        reporter.report(1, **fit_and_score(config))
