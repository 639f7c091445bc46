"""Identifiability guards: sweeps whose losses contradict the law get "not identified" and no
allocation, printed or logged; Hoffmann's law with 1% noise passes every check with its truth
inside the CIs. Pure fits: no Ray, no MLflow."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from orchestrator.fit import fit_isoflop, fit_power_law, fit_trials
from orchestrator.fit.guards import PLAUSIBLE_EXPONENTS
from tests import synthetic_sweeps as synth

N_BOOT = 20  # enough resamples for the CI checks to run; the machine is shared

# What a printed allocation looks like: an approach's row with a number, or an 'a' row of a table.
PRINTED_ALLOCATION = re.compile(r"approach [23] \([^)]*\)\s+\d|^\s+a\s+\d", re.M)


def printed_and_logged(fits) -> tuple[str, dict]:
    return fits.summary(verbose=False) + "\n" + fits.summary(verbose=True), json.loads(json.dumps(fits.to_dict()))


@pytest.fixture(scope="module")
def degenerate():
    return {name: fit_trials(frame, metric="test_loss", n_boot=N_BOOT) for name, frame in synth.degenerate_sweeps().items()}


@pytest.mark.parametrize("case", list(synth.degenerate_sweeps()))
def test_no_allocation_comes_out_of_a_sweep_that_contradicts_the_law(degenerate, case):
    fits = degenerate[case]
    text, payload = printed_and_logged(fits)
    assert not PRINTED_ALLOCATION.search(text), text
    assert all(a["params"] is None for a in payload["allocations"])
    if payload["joint"] is not None:
        assert payload["joint"]["identified"] is False and payload["joint"]["allocation"] is None
        assert payload["joint"]["params"] is None and payload["joint"]["status"].startswith("not identified: ")
    if payload["isoflop"] is not None:
        assert payload["isoflop"]["params"] is None
    assert payload["extrapolation"] is None  # nothing is extrapolated from an unidentified law


def test_each_guard_names_what_is_wrong(degenerate):
    joint = {name: fits.joint for name, fits in degenerate.items()}
    assert "A / N^alpha changes the loss by" in joint["constant loss"].identification.status
    exact = synth.law_trials(lambda n, d: np.full_like(np.asarray(n, float), 2.5), noise=0.0)
    stuck = fit_trials(exact, metric="test_loss", n_boot=N_BOOT).joint  # the optimizer ends where it began
    assert "never moved from its start point" in stuck.identification.status and stuck.allocation is None
    assert "A / N^alpha changes the loss by" in joint["loss rising with N"].identification.status
    assert "alpha = 0 is on the optimizer's bound 0" in joint["loss rising with N"].identification.status
    assert "B / D^beta changes the loss by" in joint["no D dependence"].identification.status
    for case in ("two sizes only", "NaN"):
        assert joint[case] is None
        assert any("need at least 3 distinct N" in s for s in degenerate[case].skipped), case
    assert any("dropped 48 trials" in n for n in degenerate["NaN"].notes)
    # The summary gives the reason instead of numbers.
    text = joint["constant loss"].summary()
    assert "not identified:" in text and "alpha" not in text.split("not identified:")[0].split("\n", 1)[-1]
    assert "no compute-optimal allocation" in text


def test_power_law_guards():
    rng = np.random.default_rng(0)
    x = np.repeat(np.geomspace(1e2, 1e6, 6), 2)
    law = 0.3 + 12 * x**-0.45
    good = fit_power_law(x, law * np.exp(0.01 * rng.normal(size=x.size)), n_boot=50)
    assert good.identified and good.identification.caveats == ()
    assert good.goodness.rmse < 0.02 and good.goodness.loo_rmse is not None and good.goodness.largest_out_rmse is not None
    # An exact law is identified: its zero-width CI is the truth, not a stuck bootstrap.
    exact = fit_power_law(x, law, n_boot=20)
    assert exact.identified and exact.ci["alpha"][1] - exact.ci["alpha"][0] < 1e-9
    # Three sizes: the law passes through every point; nothing tests it.
    three = fit_power_law(x[:6], law[:6], n_boot=20)
    assert not three.identified and "3 distinct x (needs 4" in three.identification.status
    flat = fit_power_law(x, np.full_like(x, 0.5) * np.exp(0.01 * rng.normal(size=x.size)), n_boot=20)
    assert not flat.identified
    assert "not identified" in flat.summary() and "95% CI" not in flat.summary()  # the reason, not a table of estimates
    assert flat.to_dict()["params"] is None and flat.goodness is None
    steep = fit_power_law(x, 0.01 + x**-3.0, n_boot=20)  # an exponent no scaling study has seen
    assert not steep.identified and f"plausible range [{PLAUSIBLE_EXPONENTS[0]:g}" in steep.identification.status


def test_isoflop_profiles_report_grid_width_centring_and_edges():
    centred = synth.tiny_lm_isoflop_shape(offset=0.0)
    off = synth.tiny_lm_isoflop_shape(offset=0.4)
    past = synth.tiny_lm_isoflop_shape(offset=1.0)

    def fit(frame):
        return fit_isoflop(frame["train_flops"], frame["n_params"], frame["n_samples"], frame["test_loss"], n_boot=50, budgets=frame["compute_budget"])

    iso = fit(centred)
    assert iso.identified and all(p.identified and p.identification.caveats == () for p in iso.profiles)
    assert all(abs(p.centre_offset) < 0.1 and p.width_decades == pytest.approx(np.log10(16)) for p in iso.profiles)
    shifted = fit(off)
    assert shifted.identified and all(p.centre_offset == pytest.approx(-0.66, abs=0.03) for p in shifted.profiles)
    assert all("off-centre" in p.identification.caveats[0] for p in shifted.profiles)
    assert any("off-centre" in c for c in shifted.allocation.identification.caveats)
    edge = fit(past)
    assert not edge.identified and edge.allocation is None
    assert all("optimum at the profile's edge" in p.identification.status for p in edge.profiles)
    assert "0 budget(s) with an identified optimum" in edge.summary()
    payload = json.loads(json.dumps(edge.to_dict()))
    assert payload["allocation"] is None and all(p["N_opt"] is None for p in payload["profiles"])


def test_both_allocations_side_by_side_when_both_are_identified():
    fits = fit_trials(synth.tiny_lm_isoflop_shape(), metric="test_loss", n_boot=30)
    [joint, iso] = fits.allocations()
    assert joint.identified and iso.identified
    text = fits.summary(verbose=False)
    rows = [line for line in text.splitlines() if re.match(r"\s+approach \d", line)]
    assert len(rows) == 2 and "approach 3 (joint fit)" in rows[0] and "approach 2 (IsoFLOP)" in rows[1]
    assert joint.params["a"] == pytest.approx(iso.params["a"], abs=0.02)


def test_a_big_grids_fit_table_lists_a_spread_of_its_per_axis_laws_and_sums_up_the_rest():
    sizes = np.geomspace(1e5, 1e8, 12).round()
    trials = synth.law_trials(synth.chinchilla_loss, n_sizes=sizes, d_sizes=np.geomspace(1e6, 1e9, 12).round(), seeds=(0,))
    fits = fit_trials(trials, metric="test_loss", n_boot=20)
    per_n = [f for f in fits.power_laws if f.x_name == "n_params" and f.identified]
    assert len(per_n) == 12
    lines = fits.summary(verbose=False).splitlines()
    listed = [line for line in lines if re.match(r"\s+test_loss vs n_params \[", line)]
    assert len(listed) == 6 and per_n[0].label in listed[0] and per_n[-1].label in listed[-1]
    [more] = [line for line in lines if "more identified laws of test_loss vs n_params" in line]
    alphas = [f.params["alpha"] for f in per_n if not any(f"[{f.label}]" in line for line in listed)]
    assert more.strip().startswith("... 6 more") and f"alpha {min(alphas):.3g} to {max(alphas):.3g}" in more
    assert lines.index(more) == lines.index(listed[-1]) + 1
    # Heading, header, 6 + 1 lines per axis, the frontier, joint, IsoFLOP and extrapolation: 20 lines for 28 laws.
    assert [line.startswith("compute-optimal allocation") for line in lines].index(True) == 20
    assert all(r.summary() in fits.summary(verbose=True) for r in per_n)  # --verbose has each
    curves = [line for line in lines if re.match(r"\s+n_params curve ", line)]
    assert len(curves) == sum(r.peak_x is not None for r in fits.double_descent) < 12  # the peaked ones only
    assert any(re.match(rf"\s+{12 - len(curves)} more n_params curves without a peak, not double descent", line) for line in lines)
