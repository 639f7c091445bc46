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
from typing import Hashable, Literal, Sequence

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


def torch_device():
    """The GPU Ray gave this worker when it has one, else the CPU."""
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


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
    noise_columns = ("label_noise",)
    axis_labels = {"width": "hidden width (units)", "n_train": "training samples"}
    paired_seeds = True  # a seed fixes the noisy labels whatever the width

    def size(self, config: MLPConfig) -> TrialSize:
        n_params = mlp_param_count(config.width, config.depth)
        flops = train_flops(n_params, config.n_train * config.epochs)  # every sample once per epoch
        return TrialSize(n_params=n_params, n_samples=config.n_train, train_flops=flops)

    def train(self, config: MLPConfig, reporter: Reporter) -> None:
        import torch
        import torch.nn.functional as F

        data = load_mnist1d()
        device = torch_device()
        torch.manual_seed(config.seed)
        x = torch.from_numpy(data["x"][: config.n_train]).to(device)
        y = torch.from_numpy(noisy_labels(data["y"][: config.n_train], config.label_noise, config.seed)).to(device)
        x_test, y_test = torch.from_numpy(data["x_test"]).to(device), torch.from_numpy(data["y_test"]).to(device)

        model = build_mlp(config.width, config.depth).to(device)
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
        """Trials with the same layers, epochs and optimizer can share one vmapped model; seed,
        n_train, batch_size, label_noise, lr and weight_decay may differ within a pack."""
        return ("mlp", config.width, config.depth, config.epochs, config.optimizer)

    def pack_member_bytes(self, config: MLPConfig) -> int:
        """Bytes one member needs: float32 params, grads, Adam moments and an update temporary, the
        activations of evaluating the whole train pool and test set, and the member's labels."""
        state = 4 * 5 * mlp_param_count(config.width, config.depth)
        activations = 4 * 2 * config.width * config.depth * (TRAIN_POOL + TEST_SAMPLES + 3 * config.batch_size)
        # (the batch term is this member's own batch size; a pack pads to its widest, close enough)
        return state + activations + 8 * TRAIN_POOL

    def train_pack(self, configs: Sequence[MLPConfig], reporters: Sequence[Reporter]) -> None:
        train_mlp_pack(list(configs), list(reporters))


ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which `train` uses
ADAM_EPS = 1e-8


def train_mlp_pack(configs: list[MLPConfig], reporters: list[Reporter]) -> None:
    """Train MLPs of one shape together: one vmapped forward/backward per step for all members.

    Each member gets exactly what `train` would give it: parameters initialised under its own seed,
    its own n_train prefix, noisy labels, batch size and shuffling generator, and its own optimizer
    state. Batches are padded to the pack's widest with zero-weight rows; a member with fewer steps
    per epoch sits out the pack's remaining steps (no compute, no update, no Adam step count). Adam is
    written out below (torch.optim.Adam's update, elementwise) so lr and weight decay can differ per
    member. Results match `train` to float32 rounding, not bitwise: batched matmuls and vmapped
    gradients sum in another order than one model's kernels, and training amplifies those last-bit
    differences a little every step.
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
    data = load_mnist1d()
    n_members = len(configs)
    n_train = torch.tensor([c.n_train for c in configs], device=device)
    n_max = int(n_train.max())
    x = torch.from_numpy(data["x"][:n_max]).to(device)
    y = torch.zeros(n_members, n_max, dtype=torch.int64)
    for i, c in enumerate(configs):
        y[i, : c.n_train] = torch.from_numpy(noisy_labels(data["y"][: c.n_train], c.label_noise, c.seed))
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
    adam = first.optimizer == "adam"
    exp_avg = {k: torch.zeros_like(p) for k, p in params.items()} if adam else {}
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
