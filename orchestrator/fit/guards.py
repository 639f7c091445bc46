"""Identifiability checks shared by every fit: can the data carry the numbers a fit returns?

A fit that fails a check is "not identified: <reason>": its summary and JSON give the reason instead
of numbers, and nothing is derived from it (no allocation, no extrapolation, no line in a report).
A fit that passes with a caveat (say, an off-centre IsoFLOP grid) states it beside its numbers.

The checks, each a small function returning what it found (None when all is well):
- the optimizer converged (its status, and its gradient is small);
- the estimate moved from its start point and is not on a bound of the optimizer;
- the bootstrap CI is not degenerate: zero width while the residuals are not zero (the resamples
  never moved), or reaching a bound (some resamples ended there);
- exponents, and their CIs, lie in a plausible range (PLAUSIBLE_EXPONENTS);
- there are more distinct sizes on each axis than the law has free parameters along it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

# Exponents of loss against N, D or C reported for language, vision and kernel models lie between
# about 0.05 (Kaplan et al. 2020: alpha_N = 0.076, alpha_D = 0.095) and about 1 (Hoffmann et al.
# 2022: 0.28-0.34; Hestness et al. 2017: 0.07-0.35 for loss, up to 0.5 for error; kernel and random
# feature rates up to ~1). Outside (0.02, 2) a fit is describing a bound or another curve.
PLAUSIBLE_EXPONENTS = (0.02, 2.0)
# An exponent's CI wider than this factor (hi / lo) says nothing about how the loss scales.
MAX_EXPONENT_CI_RATIO = 10.0
# N_opt ~ C^a: Kaplan et al. 2020 found a = 0.73, Hoffmann et al. 2022 a = 0.50; Pearce & Song 2024
# trace the gap to the parameter-count convention. An a outside (0.1, 0.9) puts nearly all extra
# compute into one of N or D, which no study has found.
PLAUSIBLE_ALLOCATION = (0.1, 0.9)
# A 95% CI of a wider than this spans every published answer: the sweep does not pin the allocation.
MAX_ALLOCATION_CI_WIDTH = 0.5
# An offset E below this fraction of the smallest loss is indistinguishable from E = 0, its bound.
E_FLOOR_FRACTION = 1e-3
# Residuals below this (RMSE of ln L) count as an exact fit: a zero-width CI is then correct.
EXACT_RMSE = 1e-9
BOUND_TOL = 1e-3  # how close (in the optimizer's coordinates) to a bound counts as on it


@dataclass(frozen=True)
class Identification:
    """What the checks found: problems (any one makes the fit not identified) and caveats."""

    problems: tuple[str, ...] = ()
    caveats: tuple[str, ...] = ()

    @property
    def identified(self) -> bool:
        return not self.problems

    @property
    def status(self) -> str:
        """'identified' or 'not identified: <reasons>'."""
        return "identified" if self.identified else "not identified: " + "; ".join(self.problems)

    def lines(self) -> list[str]:
        """The status and one line per caveat, for a summary."""
        return [self.status] + [f"caveat: {c}" for c in self.caveats]

    def to_dict(self) -> dict:
        return {"identified": self.identified, "status": self.status, "problems": list(self.problems), "caveats": list(self.caveats)}

    def plus(self, problems: Iterable[str | None] = (), caveats: Iterable[str | None] = ()) -> Identification:
        return Identification(self.problems + tuple(p for p in problems if p), self.caveats + tuple(c for c in caveats if c))


def identification(problems: Iterable[str | None] = (), caveats: Iterable[str | None] = ()) -> Identification:
    """An Identification from checks that returned a message or None."""
    return Identification().plus(problems, caveats)


def not_converged(success: bool, gradient: float, tol: float, message: str = "") -> str | None:
    """The optimizer stopped without converging, or its (projected) gradient is not small."""
    if not success:
        return f"the optimizer did not converge ({message or 'no convergence'})"
    if not np.isfinite(gradient) or gradient > tol:
        return f"the optimizer stopped with gradient {gradient:.2g} > {tol:.2g}: not at a minimum"
    return None


def unmoved(estimate: Mapping[str, float], start: Mapping[str, float], what: str, tol: float = 1e-8) -> str | None:
    """Every parameter of a term still at its start point: the data gave the optimizer no direction."""
    if all(abs(estimate[k] - start[k]) <= tol * max(1.0, abs(start[k])) for k in start):
        shown = ", ".join(f"{k}={v:g}" for k, v in start.items())
        return f"{what} never moved from its start point ({shown}): the data do not constrain it"
    return None


def on_bound(name: str, value: float, lo: float | None, hi: float | None, tol: float = BOUND_TOL) -> str | None:
    for bound in (lo, hi):
        if bound is not None and abs(value - bound) <= tol:
            return f"{name} = {value:.3g} is on the optimizer's bound {bound:g}"
    return None


def e_at_zero(E: float, y_min: float) -> str | None:
    if E < E_FLOOR_FRACTION * y_min:
        return f"E = {E:.2g} is at its bound 0 (below {E_FLOOR_FRACTION:g} x the smallest loss): the data show no floor"
    return None


def degenerate_ci(ci: Mapping[str, tuple[float, float]], rmse: float, names: Iterable[str] | None = None) -> str | None:
    """A zero-width CI where the points scatter around the law: the resamples never moved."""
    if rmse <= EXACT_RMSE:
        return None
    flat = [k for k in (names or ci) if np.isfinite(ci[k][0]) and ci[k][1] - ci[k][0] <= 1e-12 * max(1.0, abs(ci[k][1]))]
    if flat:
        return f"the bootstrap CI of {', '.join(flat)} has zero width although the points scatter: the resamples never moved"
    return None


def ci_implausible(name: str, ci: tuple[float, float], plausible: tuple[float, float] = PLAUSIBLE_EXPONENTS) -> str | None:
    """A CI that reaches outside the plausible range: some resamples found no scaling (an exponent
    near 0) or a bound, so the data do not pin the exponent."""
    a, b = ci
    lo, hi = plausible
    if not (np.isfinite(a) and np.isfinite(b)):
        return f"the bootstrap CI of {name} is not finite"
    if a < lo or b > hi:
        return f"the CI of {name} [{a:.3g}, {b:.3g}] reaches outside the plausible range [{lo:g}, {hi:g}]"
    if b > MAX_EXPONENT_CI_RATIO * a:
        return f"the CI of {name} [{a:.3g}, {b:.3g}] spans more than a factor of {MAX_EXPONENT_CI_RATIO:g}: the data do not pin it"
    return None


def implausible(name: str, value: float, plausible: tuple[float, float] = PLAUSIBLE_EXPONENTS) -> str | None:
    lo, hi = plausible
    if not lo <= value <= hi:
        return f"{name} = {value:.3g} is outside the plausible range [{lo:g}, {hi:g}] of scaling exponents"
    return None


def too_few_sizes(axis: str, distinct: int, needed: int, why: str) -> str | None:
    if distinct < needed:
        return f"{distinct} distinct {axis} (needs {needed}: {why})"
    return None


def flat_term(what: str, drop: float, tol: float = 1e-3) -> str | None:
    """A term that changes ln L by less than `tol` over the sampled range: no dependence to measure."""
    if not drop > tol:
        return f"{what} changes the loss by {drop:.1e} (ln) over the sampled range: no dependence to measure"
    return None


def bootstrap_checks(
    ci: Mapping[str, tuple[float, float]], rmse: float, exponents: Iterable[str], y_min: float, n_boot: int, n_ok: int, needs: str
) -> tuple[list[str | None], list[str | None]]:
    """(problems, caveats) of a law's bootstrap CIs: none degenerate, its exponents' CIs plausible,
    E's CI clear of its bound 0, and most resamples fitted (`needs`: what a resample must hold)."""
    if not n_boot:
        return [], ["no bootstrap: CIs not computed"]
    problems = [degenerate_ci(ci, rmse), *(ci_implausible(name, ci[name]) for name in exponents)]
    if ci["E"][0] < E_FLOOR_FRACTION * y_min:
        problems.append(f"the CI of E [{ci['E'][0]:.2g}, {ci['E'][1]:.3g}] reaches its bound 0: the floor is not pinned")
    caveats = [f"only {n_ok} of {n_boot} resamples had {needs} to fit"] if n_ok < 0.9 * n_boot else []
    return problems, caveats
