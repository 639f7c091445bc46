"""MNIST-1D MLPs: the reference data and noise, the data's identity in the trial key, bad configs,
and double descent from real training with the detector's verdict."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from orchestrator import load_spec, parse_spec, run_sweep
from orchestrator.cli import app
from orchestrator.fit import detect_double_descent
from orchestrator.grid import expand_grid
from orchestrator.sweep import Sweep
from workloads.mnist1d_mlp import DATA_VERSION, MNIST1DMLP, load_mnist1d, mlp_param_count, noisy_labels, training_data


def test_data_is_one_mnist1d_draw_split_at_the_pool():
    """The defaults are the reference's data (make_dataset with 16000 samples, train_split 0.25);
    checked here on a small draw, which takes the same path."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split = 1000, 0.4
    reference = make_dataset(args)
    ours = load_mnist1d(train_pool=400, test_samples=600)
    np.testing.assert_array_equal(ours["x"], reference["x"].astype(np.float32))
    np.testing.assert_array_equal(ours["y"], reference["y"])
    np.testing.assert_array_equal(ours["x_test"], reference["x_test"].astype(np.float32))
    np.testing.assert_array_equal(ours["y_test"], reference["y_test"])
    config = MNIST1DMLP().validate_config({"width": 8, "n_train": 100})
    assert (config.train_pool, config.test_samples, config.data_seed) == (4000, 12000, 42)


@pytest.mark.parametrize("scheme, wrong", [("resample", 0.15 * 9 / 10), ("flip", 0.15)])
def test_label_noise_schemes_and_nested_training_sets(scheme, wrong):
    labels = np.tile(np.arange(10), 2000)
    noisy = noisy_labels(labels, 0.15, seed=3, scheme=scheme)
    assert abs((noisy != labels).mean() - wrong) < 0.01  # 20000 labels: a standard error of 0.0025
    assert set(np.unique(noisy)) == set(range(10))
    workload = MNIST1DMLP()
    small, large = (
        workload.validate_config({"width": 8, "n_train": n, "label_noise": 0.15, "label_noise_scheme": scheme, "seed": 3})
        for n in (500, 2000)
    )
    x_small, y_small = training_data(small)
    x_large, y_large = training_data(large)
    np.testing.assert_array_equal(x_small, x_large[:500])
    np.testing.assert_array_equal(y_small, y_large[:500])  # a larger D holds the smaller one, noise included
    clean = load_mnist1d()["y"][:2000]
    assert 0.08 < (y_large != clean).mean() < 0.2


def test_the_data_identity_is_in_the_trial_key():
    base = {"name": "d", "workload": "mnist1d_mlp", "axes": {"width": [8]}, "params": {"n_train": 100, "epochs": 2}}
    (trial,) = expand_grid(parse_spec(base))
    identity = {"train_pool": 4000, "test_samples": 12000, "data_seed": 42, "data_version": DATA_VERSION}
    assert trial.config.items() >= {**identity, "label_noise_scheme": "resample"}.items()
    other_data = [
        {"train_pool": 2000},
        {"test_samples": 2000},
        {"data_seed": 1},
        {"label_noise_scheme": "flip"},
    ]
    keys = {trial.key}
    for change in other_data:
        (changed,) = expand_grid(parse_spec({**base, "params": {**base["params"], **change}}))
        keys.add(changed.key)
    assert len(keys) == 1 + len(other_data)  # a trial on other data is another trial, never "done"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"n_train": 5000}, "params.n_train: 5000 is more than the 4000 training samples generated"),
        ({"n_train": 100, "momentum": 0.9}, "params.momentum: momentum is for optimizer 'sgd'"),
        ({"n_train": 100, "test_samples": 1005}, "params.test_samples: train_pool + test_samples must be a multiple of 10"),
        ({"n_train": 100, "data_version": 1}, "params.data_version"),
        ({"n_train": 100, "label_noise_scheme": "swap"}, "params.label_noise_scheme"),
    ],
)
def test_a_bad_data_or_optimizer_param_exits_2_naming_it(write_spec, params, message):
    spec = write_spec({"workload": "mnist1d_mlp", "axes": {"width": [8]}, "params": params})
    result = CliRunner().invoke(app, ["plan", str(spec)])
    assert result.exit_code == 2, result.output
    assert message in result.output


# A reduced reference recipe: the same data, noise, model and optimizer; 4 widths instead of 19,
# 3 seeds, 200 epochs instead of 500 and 3000 test samples instead of 12000. Chosen from a measured
# sweep of 9 widths x 5 seeds: every 3-seed subset gave YES, peak at width 47 or 80, threshold at 80,
# both rises >= 3 pp at epoch 200, and no at epoch 100.
REDUCED = {
    "depth": 2,
    "n_train": 4000,
    "test_samples": 3000,
    "label_noise": 0.15,
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.9,
    "batch_size": 100,
    "epochs": 200,
}
REDUCED_WIDTHS = [16, 47, 80, 135]


@pytest.mark.slow
def test_reduced_recipe_peaks_at_the_interpolation_threshold_and_grows_with_training(ray_local, write_spec):
    """Real training through Ray and MLflow: the test error rises to a peak where the MLP first fits
    the noisy labels and falls beyond it; the detector says so at the last epoch, not at epoch 100."""
    spec = load_spec(
        write_spec(
            {
                "workload": "mnist1d_mlp",
                "axes": {"width": REDUCED_WIDTHS, "seed": [0, 1, 2]},
                "params": REDUCED,
                "resources_per_trial": {"cpu": 1},
            }
        )
    )
    load_mnist1d(4000, REDUCED["test_samples"])  # generate the data once, not in each worker
    outcome = run_sweep(spec, progress=False)
    assert outcome.counts == {"finished": 12}
    sweep = Sweep(spec)
    trials = sweep.results()
    result = detect_double_descent(trials)
    n_params = {w: mlp_param_count(w, 2) for w in REDUCED_WIDTHS}
    assert result.double_descent, result.summary()
    assert result.threshold_x == n_params[80], result.summary()  # width 47 still errs on >10% of its labels
    assert result.peak_x in (n_params[47], n_params[80]) and result.peak_near_threshold, result.summary()
    assert min(result.rise_left, result.rise_right) >= 0.02, result.summary()  # measured 3-5 pp
    history = sweep.history(trials)
    early = detect_double_descent(history[history["epoch"] == 100])
    assert not early.double_descent, early.summary()  # the peak is grown by training past the threshold
