"""Workloads for tests: a known law instead of training, so orchestration tests take seconds.

They also show the plugin API: a spec names them as 'tests.toy_workloads:PowerLawToy'.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from workloads.api import Reporter, TrialSize, Workload

# The law the toy reports: L(N, D) = E + A / N^alpha + B / D^beta.
E, A, ALPHA, B, BETA = 0.5, 8.0, 0.5, 30.0, 0.4


class ToyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(gt=0, description="model size (parameters)")
    d: int = Field(gt=0, description="data size (samples)")
    seed: int = 0
    epochs: int = Field(default=3, gt=0)
    noise: float = Field(default=0.0, ge=0)
    sleep_s: float = Field(default=0.0, ge=0, description="wall time per epoch, to keep a trial running")
    fail_on_n: int | None = Field(default=None, description="raise inside the trial when n equals this")
    diverge_on_n: int | None = Field(default=None, description="report a NaN loss when n equals this")
    fail_while_exists: str | None = Field(default=None, description="with fail_on_n: fail only while this file exists")
    diverge_at_epoch: int | None = Field(default=None, description="with diverge_on_n: the epoch that diverges (default: last)")
    diverge_with: Literal["nan", "inf"] = "nan"
    pid_dir: str | None = Field(default=None, description="write the worker's pid to <pid_dir>/n<n>-d<d>-s<seed>.pid")
    hold_while_exists: str | None = Field(default=None, description="before the first epoch, wait (up to 120 s) while this file exists")


def toy_loss(n: float, d: float) -> float:
    return E + A / n**ALPHA + B / d**BETA


class PowerLawToy(Workload):
    """Reports a loss that follows a known scaling law, reached over `epochs`."""

    Config = ToyConfig
    model_size_param = "n"
    data_size_param = "d"

    def size(self, config: ToyConfig) -> TrialSize:
        return TrialSize(n_params=config.n, n_samples=config.d, train_flops=6.0 * config.n * config.d * config.epochs)

    def train(self, config: ToyConfig, reporter: Reporter) -> None:
        transient = config.fail_while_exists is None or Path(config.fail_while_exists).exists()
        if config.fail_on_n == config.n and transient:
            raise RuntimeError(f"toy failure for n={config.n}")
        if config.pid_dir:
            pid_file = Path(config.pid_dir) / f"n{config.n}-d{config.d}-s{config.seed}.pid"
            pid_file.write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while config.hold_while_exists and Path(config.hold_while_exists).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        rng = np.random.default_rng(config.seed)
        final = toy_loss(config.n, config.d) * float(np.exp(config.noise * rng.normal()))
        for epoch in range(1, config.epochs + 1):
            time.sleep(config.sleep_s)
            loss = final * (1 + 1.0 / epoch - 1.0 / config.epochs)
            if config.diverge_on_n == config.n and epoch == (config.diverge_at_epoch or config.epochs):
                loss = float(config.diverge_with)
            error = min(loss / 10, 1.0)
            reporter.report(epoch, train_loss=loss, train_error=error, test_loss=loss, test_error=error)
