"""The fits of examples/tiny_lm_isoflop.yaml as it really ran (tests/tiny_lm_isoflop_results.py): the
laws its data cannot carry say so, and what its header says it found is what the fit finds."""

from __future__ import annotations

import json
import re

import pytest

from orchestrator.fit import SweepColumns, fit_trials
from tests import tiny_lm_isoflop_results as example
from workloads.tiny_lm import TinyLM

COLUMNS = SweepColumns.of(TinyLM, ["d_model"])


@pytest.fixture(scope="module")
def fits():
    return fit_trials(example.trials(), metric="test_loss", n_boot=300, columns=COLUMNS)


def test_the_laws_its_data_cannot_carry_say_so(fits):
    unidentified = [f for f in fits.laws if not f.identified]
    assert unidentified, "the example's per-size laws are not identified"
    text = fits.summary(verbose=False)
    for fit in unidentified:
        block = fit.summary()
        assert "not identified: " in block and "95% CI" not in block  # the reason, no table of estimates
    payload = json.loads(json.dumps(fits.to_dict()))
    for law in payload["power_laws"]:
        if not law["identified"]:
            assert law["params"] is None and law["ci"] is None and law["status"].startswith("not identified: ")
    assert "not identified: " in text


PRINTED_ALLOCATION = re.compile(r"approach [23] \([^)]*\)\s+\d|^\s+a\s+\d", re.M)


def test_at_this_size_no_allocation_is_identified_and_the_reasons_are_given(fits):
    per_size = [f for f in fits.power_laws if f.x_name == "n_samples"]
    assert len(per_size) == 7 and not per_size[0].identified  # d_model 8: loss vs D shows no floor
    assert "is at its bound 0" in per_size[0].identification.status
    assert not fits.joint.identified and fits.joint.allocation is None
    assert "spans more than a factor of 10" in fits.joint.identification.status
    iso = fits.isoflop
    smallest, *rest = iso.profiles
    assert not smallest.identified and "optimum at the profile's edge" in smallest.identification.status
    assert all(p.identified for p in rest)  # the other three budgets locate their optimum
    assert iso.allocation is not None and not iso.allocation.identified
    assert "is wider than 0.5" in iso.allocation.identification.status
    text = fits.summary(verbose=False) + fits.summary(verbose=True)
    assert not PRINTED_ALLOCATION.search(text)
    assert fits.extrapolation is None
