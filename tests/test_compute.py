"""Compute accounting: parameter counts match real models, FLOPs follow the cited formulas, budgets give D = C/(6N)."""

from __future__ import annotations

import math

import pytest

from orchestrator import compute
from orchestrator.grid import expand_grid, tokens_for_budget
from orchestrator.spec import SpecError, parse_spec
from workloads.tiny_lm import TinyLM, build_model


@pytest.mark.parametrize("n_layers,d_model,context_len", [(1, 8, 16), (2, 32, 64), (3, 48, 128)])
def test_transformer_param_counts_match_the_built_model(n_layers, d_model, context_len):
    config = TinyLM().validate_config(
        {"d_model": d_model, "n_layers": n_layers, "head_dim": 8, "context_len": context_len, "n_tokens": 10**6, "batch_size": 4}
    )
    model = build_model(config)
    total = sum(p.numel() for p in model.parameters())  # the tied output layer is counted once
    embeddings = model.tok_emb.weight.numel() + model.pos_emb.weight.numel()
    assert compute.transformer_params_with_embeddings(n_layers, d_model, 256, context_len) == total
    assert compute.transformer_params_without_embeddings(n_layers, d_model) == total - embeddings


def test_hand_computed_counts_and_flops():
    # L = 2, d = 32: each block 4 d^2 (attention) + 8 d^2 (MLP) + 2 d (LayerNorms) = 12352; final LayerNorm 32.
    assert compute.transformer_params_without_embeddings(2, 32) == 2 * 12352 + 32 == 24736
    assert compute.transformer_params_with_embeddings(2, 32, 256, 64) == 24736 + 256 * 32 + 64 * 32
    assert compute.train_flops(24736, 1_000_000) == 6 * 24736 * 1_000_000
    assert compute.attention_flops_per_token(2, 32, 64) == 12 * 2 * 32 * 64
    assert compute.train_flops_with_attention(1000, 10, 2, 32, 64) == (6 * 1000 + 12 * 2 * 32 * 64) * 10


def test_peak_flops_table_prefers_the_most_specific_device_name():
    assert compute.peak_flops_per_s("NVIDIA H100 80GB HBM3") == 989e12
    assert compute.peak_flops_per_s("NVIDIA H100 PCIe") == 756e12
    assert compute.peak_flops_per_s("NVIDIA A100-SXM4-40GB") == 312e12
    assert compute.peak_flops_per_s("NVIDIA L40S") == 362e12
    assert compute.peak_flops_per_s("NVIDIA L4") == 121e12
    assert compute.peak_flops_per_s("cpu") is None
    assert compute.peak_flops_per_s(None) is None
    assert compute.model_flops_utilization(1e9, 1e5, 1e15) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="peak"):
        compute.model_flops_utilization(1e9, 1e5, 0)


def budget_spec(budgets, sizes=(16, 32), **params) -> dict:
    return {
        "name": "isoflop",
        "workload": "tiny_lm",
        "axes": {"d_model": list(sizes)},
        "compute_budgets": budgets,
        "params": {"n_layers": 1, "head_dim": 8, "context_len": 32, "batch_size": 8, **params},
    }


def test_compute_budgets_give_each_trial_d_equal_c_over_6n():
    spec = parse_spec(budget_spec([1e9, 3e9]))
    trials = expand_grid(spec)
    assert spec.grid_size == len(trials) == 4
    for trial in trials:
        n = compute.transformer_params_without_embeddings(1, trial.config["d_model"])
        assert trial.size.n_params == n
        assert trial.config["n_tokens"] == math.floor(trial.compute_budget / (6 * n))
        assert trial.config["n_tokens"] == tokens_for_budget(trial.compute_budget, n)
        # D seen is whole steps of 8 x 32 tokens, so C = 6 N D is the budget up to one step.
        assert trial.size.n_samples % 256 == 0
        assert trial.compute_budget - 6 * n * 256 < trial.size.train_flops <= trial.compute_budget
    assert {t.compute_budget for t in trials} == {1e9, 3e9}


def test_a_budget_too_small_for_a_size_names_the_field():
    too_few = r"compute_budgets: 1e\+07 FLOPs at \{'d_model': 32\}.*n_tokens=134, which the workload rejects: .*fewer than one step"
    with pytest.raises(SpecError, match=too_few):
        expand_grid(parse_spec(budget_spec([1e7], sizes=(8, 32))))
    with pytest.raises(SpecError, match="compute_budgets"):
        parse_spec(budget_spec([0]))
    with pytest.raises(SpecError, match="d_model=12 is not a multiple of head_dim=8"):
        expand_grid(parse_spec(budget_spec([1e9], sizes=(12,))))
    with pytest.raises(SpecError, match="axes.n_tokens: compute_budgets sets the data size"):
        spec = budget_spec([1e9])
        spec["axes"]["n_tokens"] = [10_000]
        expand_grid(parse_spec(spec))
