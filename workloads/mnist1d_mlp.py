"""MLPs on MNIST-1D: the classic small-scale setting for model-wise double descent.

MNIST-1D (Greydanus 2020) is generated offline by the `mnist1d` package: 40-dimensional signals,
10 classes. Model size N is set by the hidden width (and depth), data size D by the number of
training samples taken from a fixed pool (nested: a larger D contains every smaller one, noisy
labels included). Label noise on the training labels makes the double-descent peak visible
(Nakkiran et al. 2019); the test labels stay clean.

The defaults of the data follow the reference experiment, greydanus/mnist1d
notebooks/deep-double-descent.ipynb (Greydanus & Kobak 2024): 16000 samples generated with the
package's default arguments (seed 42), the first 4000 for training, the other 12000 as the test set,
and label noise that resamples a training label uniformly over the 10 classes. Its model and
optimizer (two hidden layers, SGD lr 0.01 momentum 0.9, batch 100) are a spec away:
examples/mnist1d_double_descent.yaml.

The data's identity (pool and test-set sizes, generator seed, noise scheme, DATA_VERSION) is part
of every trial's config, so it is in the resolved config that `trial_key` hashes: a trial trained on
other data never counts as done for this data.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Hashable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from orchestrator.compute import train_flops
from workloads.api import Reporter, TrialSize, Workload

INPUT_DIM = 40
N_CLASSES = 10
TRAIN_POOL = 4_000  # training samples generated; n_train takes a prefix of them (reference: 4000)
TEST_SAMPLES = 12_000  # clean test samples (reference: 12000, which makes the curve smooth)
MAX_SAMPLES = 100_000  # cap on pool and test set; generating MNIST-1D costs about 0.3 ms of CPU a sample
DATA_SEED = 42  # mnist1d's default, as in the reference
# Bump when the same config would give other data or labels (generation, split or noise changed).
# 1: a 10000-sample pool and 2000 test samples, noise flipped to another class per n_train prefix.
# 2: pool and test size, generator seed and noise scheme in the config; noise drawn over the pool.
DATA_VERSION = 2
LabelNoise = Literal["resample", "flip"]


def cache_dir() -> Path:
    path = Path(os.environ.get("SCALESWEEP_CACHE", Path.home() / ".cache" / "scalesweep"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.lru_cache(maxsize=2)
def load_mnist1d(train_pool: int = TRAIN_POOL, test_samples: int = TEST_SAMPLES, data_seed: int = DATA_SEED) -> dict[str, np.ndarray]:
    """The MNIST-1D arrays x, y (train_pool samples) and x_test, y_test (test_samples), generated
    once and cached on disk (about 4 s of CPU for the default 16000 samples).

    One call of mnist1d's `make_dataset` with num_samples = train_pool + test_samples (a multiple
    of 10: it makes equally many samples per class), split at train_pool; with the defaults this is
    exactly the reference notebook's data set.
    """
    path = cache_dir() / f"mnist1d_v{DATA_VERSION}_{train_pool}_{test_samples}_{data_seed}.npz"
    if path.exists():
        with np.load(path) as arrays:
            return {key: arrays[key] for key in arrays.files}
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = train_pool + test_samples
    args.train_split = train_pool / args.num_samples
    args.seed = data_seed
    data = make_dataset(args)
    # Split by count, not by mnist1d's int(n * fraction), which can round one sample off.
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    arrays = {"x": x[:train_pool], "y": y[:train_pool], "x_test": x[train_pool:], "y_test": y[train_pool:]}
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: concurrent workers never read a half-written file
    return arrays


def noisy_labels(labels: np.ndarray, fraction: float, seed: int, scheme: LabelNoise = "resample") -> np.ndarray:
    """Labels with noise: each label is, with probability `fraction`, replaced by a random class.

    scheme 'resample': the new class is uniform over all 10, so about fraction x 9/10 of the labels
    end up wrong (the reference notebook's noise). 'flip': uniform over the 9 other classes, so
    about `fraction` of them end up wrong.
    Apply it to the whole pool and take a prefix: a smaller training set then holds exactly the
    noisy labels of the larger one.
    """
    rng = np.random.default_rng(seed)
    replaced = rng.random(len(labels)) < fraction
    if scheme == "resample":
        new = rng.integers(0, N_CLASSES, len(labels))
    else:
        new = (labels + rng.integers(1, N_CLASSES, len(labels))) % N_CLASSES
    return np.where(replaced, new, labels)


class MLPConfig(BaseModel):
    """One trial. Samples count MNIST-1D signals; lr is per step; epochs are passes over n_train."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(gt=0, le=1_000_000, description="hidden units per layer")
    depth: int = Field(default=1, ge=1, le=16, description="hidden layers")
    # the data's identity: fields that choose the data come before n_train, whose check reads them
    train_pool: int = Field(default=TRAIN_POOL, gt=0, le=MAX_SAMPLES, description="training samples generated")
    test_samples: int = Field(default=TEST_SAMPLES, gt=0, le=MAX_SAMPLES, description="clean test samples generated")
    data_seed: int = Field(default=DATA_SEED, ge=0, description="seed of the MNIST-1D generator")
    data_version: Literal[2] = Field(default=DATA_VERSION, description="how data and noise are made (DATA_VERSION)")
    n_train: int = Field(gt=0, le=MAX_SAMPLES, description="training samples D, a prefix of the pool")
    label_noise: float = Field(default=0.0, ge=0.0, lt=1.0, description="fraction of training labels replaced")
    label_noise_scheme: LabelNoise = Field(default="resample", description="'resample' over all classes or 'flip' to another")
    seed: int = Field(default=0, ge=0, description="initial weights, shuffling and which labels get noise")
    epochs: int = Field(default=50, gt=0)
    batch_size: int = Field(default=128, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0, description="SGD momentum (torch.optim.SGD's, no dampening)")
    weight_decay: float = Field(default=0.0, ge=0, description="L2 coefficient added to the gradient")

    @field_validator("test_samples")
    @classmethod
    def _whole_classes(cls, test_samples: int, info: ValidationInfo) -> int:
        pool = info.data.get("train_pool")
        if pool is not None and (pool + test_samples) % N_CLASSES:
            raise ValueError(
                f"train_pool + test_samples must be a multiple of {N_CLASSES} (MNIST-1D makes as many "
                f"samples of each class); train_pool is {pool}"
            )
        return test_samples

    @field_validator("n_train")
    @classmethod
    def _in_pool(cls, n_train: int, info: ValidationInfo) -> int:
        pool = info.data.get("train_pool")
        if pool is not None and n_train > pool:
            raise ValueError(f"{n_train} is more than the {pool} training samples generated; raise train_pool")
        return n_train

    @field_validator("momentum")
    @classmethod
    def _sgd_only(cls, momentum: float, info: ValidationInfo) -> float:
        if momentum and info.data.get("optimizer") == "adam":
            raise ValueError("momentum is for optimizer 'sgd'; Adam uses torch's betas (0.9, 0.999)")
        return momentum

    @model_validator(mode="after")
    def _batch_fits(self) -> MLPConfig:
        if self.batch_size > self.n_train:
            object.__setattr__(self, "batch_size", self.n_train)  # full-batch on tiny sets
        return self


def mlp_param_count(width: int, depth: int) -> int:
    """Parameters of the MLP (weights and biases), in parameters."""
    dims = [INPUT_DIM] + [width] * depth + [N_CLASSES]
    return sum(d_in * d_out + d_out for d_in, d_out in zip(dims[:-1], dims[1:]))


def torch_device():
    """The GPU Ray gave this worker when it has one, else the CPU."""
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def build_mlp(width: int, depth: int):
    """Linear(40, w)-ReLU-[Linear(w, w)-ReLU] x (depth - 1)-Linear(w, 10), torch's default init."""
    import torch.nn as nn

    layers: list[nn.Module] = []
    d_in = INPUT_DIM
    for _ in range(depth):
        layers += [nn.Linear(d_in, width), nn.ReLU()]
        d_in = width
    layers.append(nn.Linear(d_in, N_CLASSES))
    return nn.Sequential(*layers)


def training_data(config: MLPConfig) -> tuple[np.ndarray, np.ndarray]:
    """The trial's inputs and (noisy) labels: the first n_train samples of its pool."""
    data = load_mnist1d(config.train_pool, config.test_samples, config.data_seed)
    labels = noisy_labels(data["y"], config.label_noise, config.seed, config.label_noise_scheme)
    return data["x"][: config.n_train], labels[: config.n_train]


def make_optimizer(config: MLPConfig, parameters):
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


class MNIST1DMLP(Workload):
    """MLP classifiers on MNIST-1D; N = parameters, D = training samples."""

    Config = MLPConfig
    model_size_param = "width"
    data_size_param = "n_train"
    noise_columns = ("label_noise",)
    axis_labels = {"width": "hidden width (units)", "n_train": "training samples"}
    paired_seeds = True  # a seed fixes the noisy labels whatever the width

    def size(self, config: MLPConfig) -> TrialSize:
        n_params = mlp_param_count(config.width, config.depth)
        flops = train_flops(n_params, config.n_train * config.epochs)  # every sample once per epoch
        return TrialSize(n_params=n_params, n_samples=config.n_train, train_flops=flops)

    def train(self, config: MLPConfig, reporter: Reporter) -> None:
        """Cross-entropy minibatch training; after each epoch, loss and error on the (noisy) training
        labels and on the clean test set. The test error of the last epoch is the reference's metric."""
        import torch
        import torch.nn.functional as F

        device = torch_device()
        torch.manual_seed(config.seed)
        inputs, labels = training_data(config)
        x, y = torch.from_numpy(inputs).to(device), torch.from_numpy(labels).to(device)
        data = load_mnist1d(config.train_pool, config.test_samples, config.data_seed)
        x_test, y_test = torch.from_numpy(data["x_test"]).to(device), torch.from_numpy(data["y_test"]).to(device)

        model = build_mlp(config.width, config.depth).to(device)
        optimizer = make_optimizer(config, model.parameters())
        generator = torch.Generator().manual_seed(config.seed)

        def evaluate(inputs, labels) -> tuple[float, float]:
            with torch.no_grad():
                logits = model(inputs)
                loss = F.cross_entropy(logits, labels).item()
                error = (logits.argmax(1) != labels).float().mean().item()
            return loss, error

        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(config.n_train, generator=generator).to(device)
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

    # -- packs: trials of one shape trained together ----------------------------------------------

    def pack_key(self, config: MLPConfig) -> Hashable:
        """Trials with the same layers, epochs, optimizer and data set can share one vmapped model;
        seed, n_train, batch_size, label noise (fraction and scheme), lr, momentum and weight_decay
        may differ within a pack."""
        data = (config.train_pool, config.test_samples, config.data_seed, config.data_version)
        return ("mlp", config.width, config.depth, config.epochs, config.optimizer, data)

    def pack_member_bytes(self, config: MLPConfig) -> int:
        """Bytes one member needs: float32 params, grads, two optimizer buffers (Adam's moments; SGD
        uses one) and an update temporary, the activations of evaluating the whole train pool and
        test set, and the member's labels."""
        state = 4 * 5 * mlp_param_count(config.width, config.depth)
        samples = config.train_pool + config.test_samples + 3 * config.batch_size
        activations = 4 * 2 * config.width * config.depth * samples
        # (the batch term is this member's own batch size; a pack pads to its widest, close enough)
        return state + activations + 8 * config.train_pool

    def train_pack(self, configs: Sequence[MLPConfig], reporters: Sequence[Reporter]) -> None:
        train_mlp_pack(list(configs), list(reporters))


ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which `train` uses
ADAM_EPS = 1e-8


def train_mlp_pack(configs: list[MLPConfig], reporters: list[Reporter]) -> None:
    """Train MLPs of one shape together: one vmapped forward/backward per step for all members.

    Each member gets exactly what `train` would give it: parameters initialised under its own seed,
    its own n_train prefix, noisy labels, batch size and shuffling generator, and its own optimizer
    state. Batches are padded to the pack's widest with zero-weight rows; a member with fewer steps
    per epoch sits out the pack's remaining steps (no compute, no update, no Adam step count, no
    momentum decay). Adam and SGD are written out below, elementwise, so lr, momentum and weight
    decay can differ per member: torch.optim.Adam's update, and torch.optim.SGD's with dampening 0
    and nesterov off (buf = momentum * buf + g, the first step's buf = g; p -= lr * buf; weight
    decay added to g first). Results match `train` to float32 rounding, not bitwise: batched
    matmuls and vmapped gradients sum in another order than one model's kernels, and training
    amplifies those last-bit differences a little every step.
    """
    import copy

    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, stack_module_state, vmap

    from workloads.api import TrialDiverged

    first = configs[0]
    shape = MNIST1DMLP().pack_key(first)
    mismatched = [c for c in configs if MNIST1DMLP().pack_key(c) != shape]
    if mismatched:
        raise ValueError(f"a pack needs one model shape {shape}, got also {MNIST1DMLP().pack_key(mismatched[0])}")
    device = torch_device()
    data = load_mnist1d(first.train_pool, first.test_samples, first.data_seed)
    n_members = len(configs)
    n_train = torch.tensor([c.n_train for c in configs], device=device)
    n_max = int(n_train.max())
    x = torch.from_numpy(data["x"][:n_max]).to(device)
    y = torch.zeros(n_members, n_max, dtype=torch.int64)
    for i, c in enumerate(configs):
        y[i, : c.n_train] = torch.from_numpy(training_data(c)[1])
    y = y.to(device)
    in_train = (torch.arange(n_max, device=device)[None, :] < n_train[:, None]).float()
    x_test, y_test = torch.from_numpy(data["x_test"]).to(device), torch.from_numpy(data["y_test"]).to(device)

    models = []
    for c in configs:
        torch.manual_seed(c.seed)  # the same draws `train` makes for its initial weights
        models.append(build_mlp(c.width, c.depth))
    stacked, _ = stack_module_state(models)
    params = {name: p.detach().to(device) for name, p in stacked.items()}
    skeleton = copy.deepcopy(models[0]).to("meta")
    generators = [torch.Generator().manual_seed(c.seed) for c in configs]

    def member_shape(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, device=device, dtype=torch.float32)

    lr = member_shape([c.lr for c in configs])
    weight_decay = member_shape([c.weight_decay for c in configs])
    momentum = member_shape([c.momentum for c in configs])
    adam = first.optimizer == "adam"
    with_momentum = not adam and any(c.momentum for c in configs)
    # Adam's first and second moments; SGD's momentum buffer (zeros: buf = 0 * momentum + g on the first step)
    exp_avg = {k: torch.zeros_like(p) for k, p in params.items()} if adam or with_momentum else {}
    exp_avg_sq = {k: torch.zeros_like(p) for k, p in params.items()} if adam else {}
    steps_taken = torch.zeros(n_members, device=device, dtype=torch.float64)
    running = [True] * n_members  # on the host: which members step is known without a device sync

    def batch_loss(p, xb, yb, wb):
        logits = functional_call(skeleton, p, (xb,))
        return (F.cross_entropy(logits, yb, reduction="none") * wb).sum() / wb.sum().clamp_min(1.0)

    member_grads = vmap(grad(batch_loss))
    forward_shared_x = vmap(lambda p, inputs: functional_call(skeleton, p, (inputs,)), in_dims=(0, None))

    def per_member(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.view(-1, *([1] * (like.dim() - 1)))

    def step(members: list[int], batch_index: torch.Tensor, batch_weight: torch.Tensor) -> None:
        """One optimizer step of `members` (their indices); every other member is left untouched
        and costs nothing, so a member whose epoch is over does not slow the pack down."""
        sel = slice(None) if len(members) == n_members else torch.tensor(members, device=device)
        index, wb = batch_index[sel], batch_weight[sel]
        current = {name: p[sel] for name, p in params.items()}
        grads = member_grads(current, x[index], torch.gather(y[sel], 1, index), wb)
        steps_taken[sel] += 1
        if adam:
            beta1, beta2 = ADAM_BETAS
            count = steps_taken[sel]
            step_size = (lr[sel].double() / (1 - beta1**count)).float()
            bias2_sqrt = ((1 - beta2**count) ** 0.5).float()
        for name, p in current.items():
            g = grads[name] + per_member(weight_decay[sel], p) * p
            if adam:
                m = torch.lerp(exp_avg[name][sel], g, 1 - beta1)
                v = exp_avg_sq[name][sel] * beta2 + (1 - beta2) * g * g
                exp_avg[name][sel], exp_avg_sq[name][sel] = m, v
                update = per_member(step_size, p) * m / (v.sqrt() / per_member(bias2_sqrt, p) + ADAM_EPS)
            elif with_momentum:
                buf = exp_avg[name][sel] * per_member(momentum[sel], p) + g
                exp_avg[name][sel] = buf
                update = per_member(lr[sel], p) * buf
            else:
                update = per_member(lr[sel], p) * g
            params[name][sel] = p - update

    def evaluate(inputs, labels, weights, counts) -> tuple[torch.Tensor, torch.Tensor]:
        logits = forward_shared_x(params, inputs)  # [members, samples, classes]
        ce = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
        wrong = (logits.argmax(-1) != labels).float()
        return (ce * weights).sum(1) / counts, (wrong * weights).sum(1) / counts

    member_steps = [-(-c.n_train // c.batch_size) for c in configs]
    steps_per_epoch, widest_batch = max(member_steps), max(c.batch_size for c in configs)
    for epoch in range(1, first.epochs + 1):
        # Each member's shuffle from its own generator, cut into its own batches, padded to the
        # pack's longest epoch and widest batch with zero-weight rows.
        order = torch.zeros(n_members, steps_per_epoch, widest_batch, dtype=torch.int64)
        weight = torch.zeros(n_members, steps_per_epoch, widest_batch)
        for i, c in enumerate(configs):
            perm = torch.randperm(c.n_train, generator=generators[i])
            padded = torch.zeros(member_steps[i] * c.batch_size, dtype=torch.int64)
            padded[: c.n_train] = perm
            valid = torch.zeros(member_steps[i] * c.batch_size)
            valid[: c.n_train] = 1.0
            order[i, : member_steps[i], : c.batch_size] = padded.view(member_steps[i], c.batch_size)
            weight[i, : member_steps[i], : c.batch_size] = valid.view(member_steps[i], c.batch_size)
        order, weight = order.to(device), weight.to(device)
        for s in range(steps_per_epoch):
            stepping = [i for i in range(n_members) if running[i] and s < member_steps[i]]
            if stepping:  # none when every member still this long in its epoch has diverged
                step(stepping, order[:, s], weight[:, s])
        with torch.no_grad():
            train_loss, train_error = evaluate(x, y, in_train, n_train.float())
            test_weights = torch.ones(n_members, len(y_test), device=device)
            test_labels = y_test.expand(n_members, -1)
            test_loss, test_error = evaluate(x_test, test_labels, test_weights, float(len(y_test)))
        rows = torch.stack([train_loss, train_error, test_loss, test_error]).T.tolist()
        for i, (tr_loss, tr_err, te_loss, te_err) in enumerate(rows):
            if not running[i]:
                continue
            try:
                reporters[i].report(epoch, train_loss=tr_loss, train_error=tr_err, test_loss=te_loss, test_error=te_err)
            except TrialDiverged:
                running[i] = False  # this member stops; the others are independent and go on
        if not any(running):
            return
