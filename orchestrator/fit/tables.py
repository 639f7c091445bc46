"""The concise text of a sweep's fits: one table of laws, one of allocations, one of double-descent
curves; one line per fit. `SweepFits.summary(verbose=True)` gives each result's full block instead.

Plain fixed-width text, so a terminal, a log file and the HTML report show the same lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from orchestrator.fit.allocation import ComputeOptimalFit
from orchestrator.fit.double_descent import DoubleDescentResult
from orchestrator.fit.extrapolation import ExtrapolationResult
from orchestrator.fit.isoflop import IsoFLOPFit
from orchestrator.fit.joint import JointFit
from orchestrator.fit.power_law import PowerLawFit

if TYPE_CHECKING:
    from orchestrator.fit.sweep_fits import SweepFits

# Epoch-wise curves come one per trial configuration; those without a peak share one line.
MAX_LISTED_LABELS = 6
# A big grid has a per-axis law per size of the other axis: past this many on one axis the table
# lists MAX_LISTED_LABELS of them, spread from first to last, and sums up the rest in a line.
MAX_LAWS_PER_AXIS = 8


def _num(value, digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    value = float(value)
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
    return f"{value:.{digits}g}"


def _value_ci(fit, name: str) -> str:
    lo, hi = fit.ci.get(name, (np.nan, np.nan))
    return f"{_num(fit.params[name])} [{_num(lo)}, {_num(hi)}]"


def _with_ci(fit, name: str) -> str:
    return f"{name} {_value_ci(fit, name)}"


def _status(ident) -> str:
    if not ident.identified:
        more = f" (+{len(ident.problems) - 1} more)" if len(ident.problems) > 1 else ""
        return f"not identified: {ident.problems[0]}{more}"
    if ident.caveats:
        more = f" (+{len(ident.caveats) - 1} more)" if len(ident.caveats) > 1 else ""
        return f"ok; caveat: {ident.caveats[0]}{more}"
    return "ok"


def _name(fit) -> str:
    if isinstance(fit, PowerLawFit):
        return f"{fit.y_name} vs {fit.x_name} [{fit.label}]"
    if isinstance(fit, JointFit):
        return "joint L(N, D), approach 3"
    if isinstance(fit, IsoFLOPFit):
        return "IsoFLOP parabolas, approach 2"
    if isinstance(fit, ExtrapolationResult):
        return f"extrapolation above {fit.threshold_col} {_num(fit.threshold)}"
    return type(fit).__name__


def _points(fit) -> int:
    if isinstance(fit, PowerLawFit):
        return len(fit.x)
    if isinstance(fit, JointFit):
        return len(fit.y)
    if isinstance(fit, IsoFLOPFit):
        return sum(len(p.y) for p in fit.profiles)
    if isinstance(fit, ExtrapolationResult):
        return int(fit.errors["n_fit"])
    return 0


def _estimate(fit) -> str:
    if not fit.identified:
        return ""
    if isinstance(fit, PowerLawFit):
        return f"{_with_ci(fit, 'alpha')}, {_with_ci(fit, 'E')}"
    if isinstance(fit, JointFit):
        return f"{_with_ci(fit, 'alpha')}, {_with_ci(fit, 'beta')}, {_with_ci(fit, 'E')}"
    if isinstance(fit, IsoFLOPFit):
        used = sum(p.identified for p in fit.profiles)
        return f"optimum in {used} of {len(fit.profiles)} budgets"
    if isinstance(fit, ExtrapolationResult):
        e = fit.errors
        return f"mean |rel error| {_num(e['mean_abs_rel_error'])} on {e['n_held_out']} held-out trials"
    return ""


def _goodness(fit) -> tuple[str, str, str]:
    g = getattr(fit, "goodness", None) if fit.identified else None
    if g is None:
        return "", "", ""
    return _num(g.rmse), _num(g.loo_rmse), _num(g.largest_out_rmse)


def _listed_axis(fit) -> str | None:
    """The axis of an identified per-axis law (one of many on a big grid), else None."""
    if isinstance(fit, PowerLawFit) and fit.identified and fit.x_name in ("n_params", "n_samples"):
        return fit.x_name
    return None


def _thinned(entries: list) -> tuple[list, dict[str, list]]:
    """The entries to list, and per axis the identified laws left out when it has more than
    MAX_LAWS_PER_AXIS (MAX_LISTED_LABELS kept, spread from first to last)."""
    by_axis: dict[str, list[int]] = {}
    for i, (_, _, fit) in enumerate(entries):
        if (axis := _listed_axis(fit)) is not None:
            by_axis.setdefault(axis, []).append(i)
    left_out: dict[str, list] = {}
    dropped: set[int] = set()
    for axis, positions in by_axis.items():
        if len(positions) > MAX_LAWS_PER_AXIS:
            kept = {positions[j] for j in np.unique(np.linspace(0, len(positions) - 1, MAX_LISTED_LABELS).round().astype(int))}
            left_out[axis] = [entries[i][2] for i in positions if i not in kept]
            dropped |= set(positions) - kept
    return [e for i, e in enumerate(entries) if i not in dropped], left_out


def _more_laws_line(fits: list[PowerLawFit]) -> str:
    alphas = [f.params["alpha"] for f in fits]
    return (
        f"  ... {len(fits)} more identified laws of {fits[0].y_name} vs {fits[0].x_name}, alpha {_num(min(alphas))} to"
        f" {_num(max(alphas))} (--verbose for each)"
    )


def fits_table(fits: SweepFits) -> list[str]:
    """One line per law: name, points, estimates with CIs, errors (rmse of ln; leave-one-out;
    leave-largest-out) and status. Laws that fail for the same reason share a line; past
    MAX_LAWS_PER_AXIS identified laws on one axis, a spread of them is listed and the rest summed up."""
    rows, shared = [], {}
    for fit in fits.laws:
        if isinstance(fit, PowerLawFit) and not fit.identified:
            key = (fit.x_name, fit.identification.problems[0])
            if key in shared:
                shared[key][1].append(fit)
                continue
            shared[key] = (len(rows), [fit])
        rows.append(fit)
    entries = []
    for i, fit in enumerate(rows):
        group = next((g for pos, g in shared.values() if pos == i), [fit])
        name = _name(fit)
        if len(group) > 1:
            labels = ", ".join(f.label for f in group[:2]) + (", ..." if len(group) > 2 else "")
            name = f"{fit.y_name} vs {fit.x_name} [{len(group)} laws: {labels}]"
        entries.append((name, sum(_points(f) for f in group), fit))
    entries, left_out = _thinned(entries)
    name_w = max([len(name) for name, _, _ in entries] + [24])
    lines = [f"  {'fit':<{name_w}} {'points':>6}  {'rmse':>7} {'loo':>7} {'l-l-o':>7}  {'estimate (95% CI)':<52} status"]
    for i, (name, points, fit) in enumerate(entries):
        rmse, loo, llo = _goodness(fit)
        lines.append(f"  {name:<{name_w}} {points:>6}  {rmse:>7} {loo:>7} {llo:>7}  {_estimate(fit):<52} {_status(fit.identification)}")
        axis = _listed_axis(fit)
        if axis in left_out and not any(_listed_axis(later) == axis for _, _, later in entries[i + 1 :]):
            lines.append(_more_laws_line(left_out[axis]))
    return lines


def allocation_table(allocations: list[ComputeOptimalFit]) -> list[str]:
    """The compute-optimal allocations side by side: approach, a and b with CIs, status."""
    lines = ["compute-optimal allocation: N_opt = N_coef C^a, D_opt = D_coef C^b (C in FLOPs)"]
    lines.append(f"  {'approach':<24} {'a (95% CI)':<26} {'b (95% CI)':<26} status")
    for alloc in allocations:
        if alloc.identified:
            a, b = _value_ci(alloc, "a"), _value_ci(alloc, "b")
        else:
            a = b = "-"
        lines.append(f"  {alloc.approach:<24} {a:<26} {b:<26} {_status(alloc.identification)}")
    return lines


def _peak(result: DoubleDescentResult) -> str:
    return "-" if result.peak_x is None else f"{_num(result.peak_x)} ({_num(result.peak_height)})"


def curve_row(result: DoubleDescentResult, width: int) -> str:
    verdict = "YES" if result.double_descent else "no"
    rises = "-" if result.rise_left is None else f"{_num(result.rise_left)} / {_num(result.rise_right)}"
    p = "-" if result.p_value is None else f"{_num(result.p_value, 2)} ({result.test})"
    return f"  {result.label:<{width}} {verdict:<7} {_num(result.threshold_x):>9} {_peak(result):>18} {rises:>17}  {p}"


def _shown_labels(labels: list[str]) -> str:
    more = len(labels) - MAX_LISTED_LABELS
    return ", ".join(labels[:MAX_LISTED_LABELS]) + (f", ... ({more} more)" if more > 0 else "")


def curves_table(fits: SweepFits) -> list[str]:
    """One line per model-wise and sample-wise double-descent curve (curve, verdict, threshold, peak
    (height), rises, p-value) and per epoch-wise curve called double descent. The other epoch-wise
    curves (one per trial configuration) share one line, and so do the model-wise or sample-wise
    curves without a peak where a big grid has more than MAX_LAWS_PER_AXIS; --verbose gives each its block."""
    listed, flat = [], []
    for kind in (fits.double_descent, fits.sample_wise):
        many = len(kind) > MAX_LAWS_PER_AXIS
        listed += [r for r in kind if not many or r.peak_x is not None]
        flat += [[r for r in kind if many and r.peak_x is None]]
    listed += [r for r in fits.epoch_wise if r.double_descent]
    rest = [r for r in fits.epoch_wise if not r.double_descent]
    if not listed and not rest and not any(flat):
        return []
    width = max([len(r.label) for r in listed] + [24])
    lines = [f"double-descent curves of {fits.metric}: interpolation threshold at train error <= {fits.train_tol:g}"]
    lines.append(f"  {'curve':<{width}} {'verdict':<7} {'threshold':>9} {'peak (height)':>18} {'rise left/right':>17}  p (test)")
    lines += [curve_row(r, width) for r in listed]
    for curves in flat:
        if curves:
            x = curves[0].x_name
            labels = [r.label.removeprefix(f"{x} curve ") for r in curves]
            lines.append(f"  {len(curves)} more {x} curves without a peak, not double descent (--verbose for each): {_shown_labels(labels)}")
    if rest:
        peaked = sum(r.peak_x is not None for r in rest)
        labels = [r.label.removeprefix("epoch curve ") for r in rest]
        lines.append(f"  {len(rest)} epoch curves not double descent ({peaked} with a peak the rule rejects; --verbose for each): {_shown_labels(labels)}")
    lines.append(f"  rule: {(listed or rest or [c for cs in flat for c in cs])[0].rule}")
    return lines


def sweep_tables(fits: SweepFits) -> list[str]:
    """What `scalesweep fit` prints: the heading, the laws, the allocations, the IsoFLOP budgets, the
    envelope's choices, the curves, then notes and what was not fitted."""
    lines = [fits.heading, *fits_table(fits)]
    if fits.allocations():
        lines += allocation_table(fits.allocations())
    if fits.isoflop is not None and (fits.isoflop.designed or any(p.identified for p in fits.isoflop.profiles)):
        lines += ["IsoFLOP budgets: grid width in log10 N, the vertex's offset from its centre (-1 small end, +1 large end)"]
        lines += fits.isoflop.budget_table()
    if fits.envelope is not None:
        lines += [fits.envelope.title, *fits.envelope.table()]
    lines += curves_table(fits)
    lines += [f"note: {n}" for n in fits.notes]
    lines += [f"not fitted: {s}" for s in fits.skipped]
    return lines
