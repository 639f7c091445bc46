from __future__ import annotations

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
