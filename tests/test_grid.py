from __future__ import annotations

import re

import pytest

from orchestrator.grid import expand_grid, trial_key
from orchestrator.spec import parse_spec

BASE = {"name": "g", "workload": "mnist1d_mlp", "params": {"epochs": 2}}


def test_trial_keys_do_not_depend_on_axis_or_value_order():
    a = expand_grid(parse_spec({**BASE, "axes": {"width": [4, 8], "n_train": [100, 200]}}))
    b = expand_grid(parse_spec({**BASE, "axes": {"n_train": [200, 100], "width": [8, 4]}}))
    assert len(a) == 4
    assert {t.key for t in a} == {t.key for t in b}


def test_trial_key_covers_every_resolved_value():
    (trial,) = expand_grid(parse_spec({**BASE, "axes": {"width": [4], "n_train": [100]}}))
    assert trial.config["lr"] == 1e-3  # workload defaults are part of the resolved config
    assert trial.key == trial_key("mnist1d_mlp", trial.config)
    changed = dict(trial.config, lr=2e-3)
    assert trial_key("mnist1d_mlp", changed) != trial.key


def test_sizes_are_computed_from_the_config():
    trials = expand_grid(parse_spec({**BASE, "axes": {"width": [4, 8], "n_train": [100]}}))
    by_width = {t.config["width"]: t.size for t in trials}
    # 40 inputs -> width hidden -> 10 classes, with biases.
    assert by_width[4].n_params == 40 * 4 + 4 + 4 * 10 + 10
    assert by_width[8].n_params == 40 * 8 + 8 + 8 * 10 + 10
    assert by_width[4].n_samples == 100
    assert by_width[4].train_flops == 6 * by_width[4].n_params * 100 * 2


def test_points_that_resolve_to_one_config_are_one_trial():
    # batch_size is clipped to n_train, so both batch sizes give the same trial.
    trials = expand_grid(parse_spec({**BASE, "axes": {"width": [4], "n_train": [50], "batch_size": [64, 128]}}))
    assert len(trials) == 1


# -- warmup-stable-decay: one trunk per model size, one cooldown branch per data size ----------------

STEP = 16 * 32  # tokens per step of the LM below
LM = {"n_layers": 1, "head_dim": 8, "context_len": 32, "batch_size": 16}
WSD = {"kind": "wsd", "warmup": 4 * STEP, "cooldown_fraction": 0.2, "cooldown_shape": "1-sqrt"}


def wsd_spec(**overrides) -> dict:
    body = {
        "name": "wsd",
        "workload": "tiny_lm",
        "axes": {"d_model": [8, 16], "n_tokens": [20 * STEP, 40 * STEP, 80 * STEP, 160 * STEP]},
        "params": LM,
        "schedule": WSD,
    }
    body.update(overrides)
    return body


def test_wsd_plans_one_trunk_per_model_size_to_its_largest_branch_point():
    trials = expand_grid(parse_spec(wsd_spec()))
    trunks = [t for t in trials if t.is_trunk]
    branches = [t for t in trials if not t.is_trunk]
    assert [t.is_trunk for t in trials] == [True] * 2 + [False] * 8  # trunks first: they unblock the rest
    assert sorted(t.config["d_model"] for t in trunks) == [8, 16]
    assert {t.size.n_samples for t in trunks} == {128 * STEP}  # 0.8 x 160 steps
    by_key = {t.key: t for t in trunks}
    for branch in branches:
        trunk = by_key[branch.depends_on]
        assert trunk.config == {**branch.config, "n_tokens": 128 * STEP}  # same seed, lr, shape: only D differs
        assert branch.wsd.branch_start == branch.config["n_tokens"] * 4 // 5
        assert branch.wsd.start_checkpoint == f"{trunk.checkpoint.directory}/branch-at-{branch.wsd.branch_start}"
        assert branch.wsd.part.trunk_directory == trunk.checkpoint.directory
        assert branch.checkpoint.directory.endswith(branch.key)
        assert branch.size.train_flops == 6 * branch.size.n_params * branch.config["n_tokens"]  # 6 N D of the point
    assert trunks[0].wsd.part.branch_sizes == (20 * STEP, 40 * STEP, 80 * STEP, 160 * STEP)
    # A branch or trunk never shares a key (and so a run, a checkpoint) with a trial from scratch.
    plain = expand_grid(parse_spec({k: v for k, v in wsd_spec().items() if k != "schedule"}))
    assert not {t.key for t in plain} & {t.key for t in trials}


def test_wsd_compute_is_the_trunks_plus_the_cooldowns_and_each_point_carries_its_share():
    trials = expand_grid(parse_spec(wsd_spec(axes={"d_model": [16], "n_tokens": [20 * STEP, 40 * STEP, 80 * STEP, 160 * STEP]})))
    (trunk,) = [t for t in trials if t.is_trunk]
    branches = sorted((t for t in trials if not t.is_trunk), key=lambda t: t.config["n_tokens"])
    per_token = 6 * trunk.size.n_params
    assert [b.run_flops / per_token / STEP for b in branches] == [4, 8, 16, 32]  # the cooldowns alone
    # The trunk's 128 steps: steps 0-16 shared by all four branches, 16-32 by three, 32-64 by two, 64-128 by one.
    shares = [b.wsd.trunk_share_flops / per_token / STEP for b in branches]
    assert shares == pytest.approx([16 / 4, 16 / 4 + 16 / 3, 16 / 4 + 16 / 3 + 32 / 2, 16 / 4 + 16 / 3 + 32 / 2 + 64])
    assert trunk.spent_flops == 0 and sum(b.spent_flops for b in branches) == pytest.approx(trunk.run_flops + sum(b.run_flops for b in branches))
    from_scratch = sum(b.size.train_flops for b in branches)  # 300 steps
    planned = sum(t.run_flops for t in trials)  # 128 + 60 steps
    assert from_scratch / planned == pytest.approx(300 / 188)


def test_wsd_with_compute_budgets_branches_each_budgets_data_size():
    spec = wsd_spec(axes={"d_model": [8, 16]}, compute_budgets=[4e8, 8e8])
    trials = expand_grid(parse_spec(spec))
    branches = [t for t in trials if not t.is_trunk]
    assert len([t for t in trials if t.is_trunk]) == 2 and len(branches) == 4
    assert {b.compute_budget for b in branches} == {4e8, 8e8}
    for trunk in (t for t in trials if t.is_trunk):
        mine = [b for b in branches if b.depends_on == trunk.key]
        assert trunk.config["n_tokens"] == max(b.config["n_tokens"] - round(0.2 * b.config["n_tokens"]) for b in mine)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"axes": {"d_model": [8, 16]}, "params": {**LM, "n_tokens": 40 * STEP}}, "schedule: a WSD schedule branches"),
        ({"schedule": {**WSD, "cooldown_fraction": 1.0}}, "schedule.cooldown_fraction: must lie strictly between 0 and 1"),
        ({"schedule": {**WSD, "cooldown_fraction": 0}}, "schedule.cooldown_fraction: must lie strictly between 0 and 1"),
        ({"schedule": {**WSD, "warmup": 17 * STEP}}, "axes.n_tokens: n_tokens=10240 is shorter than schedule.warmup"),
        ({"workload": "mnist1d_mlp", "axes": {"width": [4], "n_train": [100, 200]}, "params": {}}, "schedule: workload 'mnist1d_mlp' cannot start from a checkpoint"),
        ({"execution": {"checkpoint_dir": None}}, "execution.checkpoint_dir: a WSD schedule needs it"),
        ({"schedule": {**WSD, "shape": "cosine"}}, "schedule.shape: unknown key; valid keys here: kind, warmup, cooldown_fraction"),
    ],
)
def test_a_spec_wsd_cannot_serve_names_the_field(overrides, field):
    from orchestrator.spec import SpecError

    with pytest.raises(SpecError, match=re.escape(field)):
        expand_grid(parse_spec(wsd_spec(**overrides)))
