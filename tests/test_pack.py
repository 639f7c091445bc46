"""Packs: vmapped members match training alone; grouping, memory budget and out-of-memory splits."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from orchestrator import load_spec, parse_spec, run_sweep
from orchestrator.cli import app
from orchestrator.grid import expand_grid
from orchestrator.pack import (
    CPU_PACK_BUDGET_BYTES,
    SPLIT_SLACK,
    PackingUnsupported,
    make_packs,
    pack_cost,
    run_pack,
    split_to_budget,
)
from orchestrator.results import trials_frame
from orchestrator.sweep import Sweep
from tests.toy_pack_workloads import PackedPowerLawToy
from tests.toy_workloads import PowerLawToy, toy_loss
from workloads.api import Reporter
from workloads.mnist1d_mlp import MNIST1DMLP

PACKED_TOY = "tests.toy_pack_workloads:PackedPowerLawToy"


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "sgd_momentum"])
def test_pack_member_matches_training_alone(optimizer):
    """Every member of a vmapped pack ends where `train` takes the same trial alone.

    Not bitwise: the pack's batched matmuls and vmapped gradients add in another order than one
    model's kernels, so float32 results differ in the last bits (measured: <= 1e-6 after 4
    epochs) and training carries that forward. Losses must agree to 1e-4; errors to one sample.
    sgd_momentum: torch.optim.SGD's momentum, a different coefficient per member (0 included).
    """
    workload = MNIST1DMLP()
    base = {"width": 16, "depth": 2, "epochs": 4, "batch_size": 64, "optimizer": optimizer.removesuffix("_momentum")}
    members = [  # seed, data size, batch size, label noise, lr and weight decay all differ within the pack
        {"seed": 0, "n_train": 50, "label_noise": 0.0, "lr": 3e-3, "weight_decay": 0.0},  # full batch
        {"seed": 1, "n_train": 330, "label_noise": 0.2, "lr": 1e-3, "weight_decay": 0.0, "batch_size": 32},
        {"seed": 2, "n_train": 450, "label_noise": 0.1, "lr": 1e-2, "weight_decay": 1e-3, "label_noise_scheme": "flip"},
    ]
    if optimizer.startswith("sgd"):
        for member in members:
            member["lr"] *= 10
    if optimizer == "sgd_momentum":
        for member, momentum in zip(members, (0.9, 0.5, 0.0)):
            member["momentum"] = momentum
            member["lr"] /= 10  # momentum 0.9 takes steps up to 10x as long
    configs = [workload.validate_config({**base, **m}) for m in members]
    packed = [Reporter() for _ in configs]
    workload.train_pack(configs, packed)
    for config, together in zip(configs, packed):
        alone = Reporter()
        workload.train(config, alone)
        assert [row["epoch"] for row in together.history] == list(range(1, config.epochs + 1))
        for row_pack, row_alone in zip(together.history, alone.history, strict=True):
            for name in ("train_loss", "test_loss"):
                assert row_pack[name] == pytest.approx(row_alone[name], abs=1e-4)
            assert row_pack["train_error"] == pytest.approx(row_alone["train_error"], abs=1.01 / config.n_train)
            assert row_pack["test_error"] == pytest.approx(row_alone["test_error"], abs=1.01 / config.test_samples)
    # the members did learn, and differently: a pack is not one model copied
    finals = [r.history[-1]["train_loss"] for r in packed]
    assert len(set(finals)) == 3 and max(finals) < packed[0].history[0]["train_loss"] * 1.5


def test_momentum_changes_training():
    """SGD's momentum reaches the pack's update: the same member with and without it ends elsewhere."""
    workload = MNIST1DMLP()
    base = {"width": 32, "depth": 2, "epochs": 5, "n_train": 400, "batch_size": 20, "optimizer": "sgd", "lr": 0.01}
    configs = [workload.validate_config({**base, "momentum": m}) for m in (0.0, 0.9)]
    reporters = [Reporter() for _ in configs]
    workload.train_pack(configs, reporters)
    plain, heavy = (r.history[-1]["train_loss"] for r in reporters)
    assert heavy < plain - 0.2  # measured 1.92 vs 2.29: ten times the effective step descends faster


def mnist_trials(axes: dict, params: dict | None = None, mode: str = "auto"):
    spec = parse_spec(
        {"name": "p", "workload": "mnist1d_mlp", "axes": axes, "params": params or {}, "execution": {"mode": mode}}
    )
    return expand_grid(spec)


def test_packs_group_one_model_shape_and_balance_over_workers():
    trials = mnist_trials({"width": [8, 64], "n_train": [100, 400], "seed": [0, 1, 2]})
    assert make_packs(trials, MNIST1DMLP(), "auto", n_slots=1) == [[t] for t in trials]  # no GPU: one at a time
    packs = make_packs(trials, MNIST1DMLP(), "auto", n_slots=1, gpu=True)
    assert len(packs) == 2  # one pack per width; n_train and seed vary inside a pack
    for pack in packs:
        assert len({t.config["width"] for t in pack}) == 1 and len(pack) == 6
    assert packs[0][0].config["width"] == 64  # costliest first
    assert sorted(t.key for p in packs for t in p) == sorted(t.key for t in trials)

    # Two workers: the width-64 pack costs most of the sweep, so it is split, along data size.
    packs = make_packs(trials, MNIST1DMLP(), "pack", n_slots=2)
    share = sum(pack_cost(p) for p in packs) / 2
    wide = [p for p in packs if p[0].config["width"] == 64]
    assert len(wide) > 1 and sum(map(len, wide)) == 6
    assert all(len({t.config["n_train"] for t in p}) == 1 for p in wide)
    assert all(pack_cost(p) <= SPLIT_SLACK * share for p in packs if len(p) > 1)
    assert [pack_cost(p) for p in packs] == sorted((pack_cost(p) for p in packs), reverse=True)

    assert make_packs(trials, MNIST1DMLP(), "single", n_slots=1) == [[t] for t in trials]


def test_mode_pack_needs_a_workload_that_can_pack(write_spec, toy_spec):
    assert PackedPowerLawToy().can_pack and not PowerLawToy().can_pack
    with pytest.raises(PackingUnsupported, match="train_pack"):
        make_packs([], PowerLawToy(), "pack")
    assert make_packs([], PowerLawToy(), "auto") == []  # auto falls back to one trial at a time
    toy_spec["execution"] = {"mode": "pack"}
    result = CliRunner().invoke(app, ["run", str(write_spec(toy_spec)), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "execution.mode" in result.output


def test_split_to_budget_keeps_every_member():
    assert split_to_budget([4, 4, 4, 4, 4], 8) == [range(0, 2), range(2, 4), range(4, 5)]
    assert split_to_budget([20, 1, 1], 8) == [range(0, 1), range(1, 3)]  # too big alone still runs alone
    assert split_to_budget([], 8) == []


def packed_toy_spec(write_spec, **params):
    """Eight toy trials in one pack: a single worker, so no pack is split for balance."""
    return load_spec(
        write_spec(
            {
                "workload": PACKED_TOY,
                "axes": {"n": [10, 100, 1000, 10000], "d": [100, 1000]},
                "params": {"epochs": 2, **params},
                "resources_per_trial": {"cpu": 1},
                "execution": {"mode": "pack", "max_workers": 1},
            }
        )
    )


def recorded(spec):
    """The sweep's trials as a DataFrame, with the pack size each trained in."""
    return trials_frame(Sweep(spec).runs())


def test_out_of_memory_pack_is_halved_until_it_fits_and_nothing_is_lost(ray_local, write_spec):
    spec = packed_toy_spec(write_spec, max_pack=2)
    outcome = run_sweep(spec, progress=False)
    assert outcome.counts == {"finished": 8} and outcome.n_packs == 1
    trials = recorded(spec)
    assert len(trials) == 8 and set(trials["run_status"]) == {"FINISHED"}
    assert set(trials["pack_size"]) == {2}  # 8 and then 4 ran out of memory; halves of 2 fit
    for _, row in trials.iterrows():
        assert row["test_loss"] == pytest.approx(toy_loss(row["n"], row["d"]))


def toy_trials(**params) -> list:
    axes = {"n": [10, 100, 1000, 10000], "d": [100, 1000]}
    spec = parse_spec({"name": "p", "workload": PACKED_TOY, "axes": axes, "params": {"epochs": 2, **params}})
    return expand_grid(spec)


def test_memory_budget_cuts_packs_before_they_run():
    trials = toy_trials(member_bytes=1000)
    results = run_pack(PackedPowerLawToy(), trials, budget_bytes=2500)
    assert [r.trial_key for r in results] == [t.key for t in trials]
    assert [r.pack_size for r in results] == [2] * 8  # three members would exceed the budget
    assert {r.status for r in results} == {"finished"}


def test_diverged_member_stops_alone_and_the_pack_goes_on():
    results = run_pack(PackedPowerLawToy(), toy_trials(diverge_on_n=100), CPU_PACK_BUDGET_BYTES)
    by_n = {(t.config["n"], t.config["d"]): r for t, r in zip(toy_trials(diverge_on_n=100), results)}
    assert {n: r.status for (n, _), r in by_n.items()} == {10: "finished", 100: "diverged", 1000: "finished", 10000: "finished"}
    assert "non-finite" in by_n[(100, 100)].error
    assert {r.pack_size for r in results} == {8}
    assert len(by_n[(10, 100)].history) == 2


def test_failing_member_fails_alone():
    trials = toy_trials(fail_on_n=10)
    results = run_pack(PackedPowerLawToy(), trials, CPU_PACK_BUDGET_BYTES)
    status = {(t.config["n"], t.config["d"]): r.status for t, r in zip(trials, results)}
    assert [k for k, v in status.items() if v == "failed"] == [(10, 100), (10, 1000)]
    assert all(v == "finished" for k, v in status.items() if k[0] != 10)
    failed = next(r for r in results if r.status == "failed")
    assert "toy failure for n=10" in failed.error
