"""The envelope over a hyperparameter axis: per size, the setting with the lowest loss, as scaling
studies tune it (Porian et al. 2024). A synthetic law whose best learning rate moves with N."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator.fit import SweepColumns, best_per_cell, fit_trials
from tests import synthetic_sweeps as synth


@pytest.fixture(scope="module")
def trials():
    return synth.lr_trials()


def test_the_envelope_picks_the_known_best_learning_rate_at_every_size(trials):
    chosen, envelope = best_per_cell(trials, ["lr"], "test_loss", ["n_params", "n_samples"])
    assert len(envelope.choices) == len(synth.LR_SIZES) * len(synth.GRID_D)
    for _, row in envelope.choices.iterrows():
        assert np.log10(row["lr"]) == pytest.approx(synth.best_log_lr(row["n_params"]), abs=1e-9), row.to_dict()
        assert row["settings"] == len(synth.LR_GRID)
    # lr* = 0.1 at the smallest model is the top of the grid: flagged; every other optimum is interior.
    edge = envelope.choices[envelope.choices["at_edge"] != ""]
    assert set(edge["n_params"]) == {synth.LR_SIZES[0]} and set(edge["at_edge"]) == {"lr"}
    assert len(chosen) == len(envelope.choices) * 2  # both seeds of each chosen setting
    table = "\n".join(envelope.table())
    assert "lr=0.1*" in table and "lr=0.001" in table
    assert "at the edge of the grid" in envelope.title


def test_fits_on_the_envelope_recover_the_law_and_say_what_they_chose(trials):
    columns = SweepColumns.of(type("W", (), {"model_size_param": "n", "data_size_param": "d"}), ["n", "d", "lr", "seed"])
    assert columns.hyper == ("lr",)
    tuned = fit_trials(trials, metric="test_loss", n_boot=40, columns=columns, envelope=["lr"])
    assert tuned.envelope is not None and "best lr per size" in tuned.heading
    joint = tuned.joint
    assert joint.identified, joint.identification.status
    assert joint.params["alpha"] == pytest.approx(synth.ALPHA, abs=0.02) and joint.params["beta"] == pytest.approx(synth.BETA, abs=0.02)
    text = tuned.summary(verbose=False)
    assert "envelope: the best lr per (n_params, n_samples)" in text and "lr=0.1*" in text
    payload = json.loads(json.dumps(tuned.to_dict()))
    assert payload["envelope"]["axes"] == ["lr"] and len(payload["envelope"]["choices"]) == 30
    # Pooling every learning rate instead says so, and fits a different law.
    pooled = fit_trials(trials, metric="test_loss", n_boot=0, columns=columns)
    assert pooled.envelope is None and any("--envelope lr" in n for n in pooled.notes)
    assert abs(pooled.joint.params["alpha"] - synth.ALPHA) > abs(joint.params["alpha"] - synth.ALPHA)
