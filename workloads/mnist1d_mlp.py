"""MLPs on MNIST-1D: the classic small-scale setting for model-wise double descent.

MNIST-1D (Greydanus 2020) is generated offline by the `mnist1d` package: 40-dimensional signals,
10 classes. Model size N is set by the hidden width, data size D by the number of training samples
taken (nested: a larger D contains every smaller one). Label noise flips a fraction of training
labels to another class, which makes the double-descent peak visible (Nakkiran et al. 2019).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.compute import train_flops
from workloads.api import Reporter, TrialSize, Workload

INPUT_DIM = 40
N_CLASSES = 10
TRAIN_POOL = 10_000  # training samples generated; n_train takes a prefix of them
TEST_SAMPLES = 2_000
DATA_SEED = 42


def cache_dir() -> Path:
    path = Path(os.environ.get("SCALESWEEP_CACHE", Path.home() / ".cache" / "scalesweep"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.lru_cache(maxsize=1)
def load_mnist1d() -> dict[str, np.ndarray]:
    """The MNIST-1D arrays (x, y, x_test, y_test), generated once and cached on disk (about 5 s)."""
    path = cache_dir() / f"mnist1d_{TRAIN_POOL}_{TEST_SAMPLES}_{DATA_SEED}.npz"
    if path.exists():
        with np.load(path) as arrays:
            return {key: arrays[key] for key in arrays.files}
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = TRAIN_POOL + TEST_SAMPLES
    args.train_split = TRAIN_POOL / args.num_samples
    args.seed = DATA_SEED
    data = make_dataset(args)
    arrays = {
        "x": data["x"].astype(np.float32),
        "y": data["y"].astype(np.int64),
        "x_test": data["x_test"].astype(np.float32),
        "y_test": data["y_test"].astype(np.int64),
    }
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: concurrent workers never read a half-written file
    return arrays


def noisy_labels(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Replace a `fraction` of labels with a different class chosen uniformly at random."""
    rng = np.random.default_rng(seed)
    labels = labels.copy()
    flip = rng.random(len(labels)) < fraction
    labels[flip] = (labels[flip] + rng.integers(1, N_CLASSES, flip.sum())) % N_CLASSES
    return labels


class MLPConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int = Field(gt=0, le=1_000_000, description="hidden units per layer")
    depth: int = Field(default=1, ge=1, le=16, description="hidden layers")
    n_train: int = Field(gt=0, le=TRAIN_POOL, description="training samples D")
    label_noise: float = Field(default=0.0, ge=0.0, lt=1.0, description="fraction of training labels flipped")
    seed: int = Field(default=0, ge=0)
    epochs: int = Field(default=50, gt=0)
    batch_size: int = Field(default=128, gt=0)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    optimizer: Literal["adam", "sgd"] = "adam"

    @model_validator(mode="after")
    def _batch_fits(self) -> MLPConfig:
        if self.batch_size > self.n_train:
            object.__setattr__(self, "batch_size", self.n_train)  # full-batch on tiny sets
        return self


def mlp_param_count(width: int, depth: int) -> int:
    """Parameters of the MLP (weights and biases), in parameters."""
    dims = [INPUT_DIM] + [width] * depth + [N_CLASSES]
    return sum(d_in * d_out + d_out for d_in, d_out in zip(dims[:-1], dims[1:]))


def build_mlp(width: int, depth: int):
    import torch.nn as nn

    layers: list[nn.Module] = []
    d_in = INPUT_DIM
    for _ in range(depth):
        layers += [nn.Linear(d_in, width), nn.ReLU()]
        d_in = width
    layers.append(nn.Linear(d_in, N_CLASSES))
    return nn.Sequential(*layers)


class MNIST1DMLP(Workload):
    """MLP classifiers on MNIST-1D; N = parameters, D = training samples."""

    Config = MLPConfig
    model_size_param = "width"
    data_size_param = "n_train"

    def size(self, config: MLPConfig) -> TrialSize:
        n_params = mlp_param_count(config.width, config.depth)
        flops = train_flops(n_params, config.n_train * config.epochs)  # every sample once per epoch
        return TrialSize(n_params=n_params, n_samples=config.n_train, train_flops=flops)

    def train(self, config: MLPConfig, reporter: Reporter) -> None:
        import torch
        import torch.nn.functional as F

        data = load_mnist1d()
        torch.manual_seed(config.seed)
        x = torch.from_numpy(data["x"][: config.n_train])
        y = torch.from_numpy(noisy_labels(data["y"][: config.n_train], config.label_noise, config.seed))
        x_test, y_test = torch.from_numpy(data["x_test"]), torch.from_numpy(data["y_test"])

        model = build_mlp(config.width, config.depth)
        opt_cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.SGD
        optimizer = opt_cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(config.seed)

        def evaluate(inputs, labels) -> tuple[float, float]:
            with torch.no_grad():
                logits = model(inputs)
                loss = F.cross_entropy(logits, labels).item()
                error = (logits.argmax(1) != labels).float().mean().item()
            return loss, error

        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(config.n_train, generator=generator)
            for start in range(0, config.n_train, config.batch_size):
                batch = order[start : start + config.batch_size]
                loss = F.cross_entropy(model(x[batch]), y[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            train_loss, train_error = evaluate(x, y)
            test_loss, test_error = evaluate(x_test, y_test)
            reporter.report(
                epoch, train_loss=train_loss, train_error=train_error, test_loss=test_loss, test_error=test_error
            )
