"""A workload for fit tests: a loss with a known shape and a learning rate whose best value moves
with model size, reported at once (no training), so a sweep of it through Ray and MLflow takes seconds.

shape 'law': L = toy_loss(N, D) (1 + 0.08 (log10 lr - log10 lr*(N))^2), lr*(N) = 0.1 (N / 100)^-0.5;
'rising': bigger models do worse (as with one untuned learning rate); 'constant': L ignores N and D.
N leaves out an embedding of EMBEDDING parameters; n_params_with_embeddings counts it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tests.toy_workloads import B, BETA, toy_loss
from workloads.api import Reporter, TrialSize, Workload

EMBEDDING = 1000


def best_log_lr(n: float) -> float:
    return -1.0 - 0.5 * np.log10(n / 100)


class TunedLawConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(gt=0, description="model size (parameters, without the embedding)")
    d: int = Field(gt=0, description="data size (samples)")
    lr: float = Field(default=0.1, gt=0)
    seed: int = 0
    noise: float = Field(default=0.005, ge=0, description="relative noise of the reported loss")
    shape: Literal["law", "rising", "constant"] = "law"


class TunedLawToy(Workload):
    Config = TunedLawConfig
    model_size_param = "n"
    data_size_param = "d"
    n_params_meaning = "non-embedding parameters"
    fit_metric = "test_loss"

    def size(self, config: TunedLawConfig) -> TrialSize:
        return TrialSize(
            n_params=config.n, n_samples=config.d, train_flops=6.0 * config.n * config.d, n_params_with_embeddings=config.n + EMBEDDING
        )

    def train(self, config: TunedLawConfig, reporter: Reporter) -> None:
        n, d = config.n, config.d
        if config.shape == "law":
            loss = toy_loss(n, d) * (1 + 0.08 * (np.log10(config.lr) - best_log_lr(n)) ** 2)
        elif config.shape == "rising":
            loss = 2.0 + 0.05 * n**0.2 + B / d**BETA
        else:
            loss = 2.5
        rng = np.random.default_rng([config.seed, n, d, int(round(config.lr * 1e9))])
        loss *= float(np.exp(config.noise * rng.normal()))
        reporter.report(1, train_loss=loss, train_error=loss / 10, test_loss=loss, test_error=loss / 10)
