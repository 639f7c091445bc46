"""IsoFLOP profiles, Hoffmann et al. (2022) approach 2, and the compute-optimal exponents they give.

Trials that spent the same compute C (FLOPs) form one profile. Per profile, a parabola in log10 N
is fitted to the loss; its vertex is the loss-minimising N_opt(C). D_opt(C) is read off the same
profile (log D is linear in log N along a profile, since C is proportional to N D). Then
log N_opt and log D_opt are regressed on log C: N_opt = N_coef C^a, D_opt = D_coef C^b.
CIs resample the trials within each budget (vectorised: weighted normal equations per resample).

What biases approach 2, checked per profile: a vertex outside the sampled sizes (N_opt is then an
extrapolation: the profile is left out), a curvature the bootstrap cannot tell from zero (left out),
the lowest trial at the grid's edge, a grid wide in log N (a parabola is only the local shape of
the profile) and a grid off-centre from the optimum (the profile's asymmetry then shifts the vertex).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scipy import stats

from orchestrator.fit import guards
from orchestrator.fit.allocation import ComputeOptimalFit
from orchestrator.fit.bootstrap import DEFAULT_CI_LEVEL, DEFAULT_N_BOOT, percentile_ci, resample_counts
from orchestrator.fit.goodness import GoodnessOfFit, log_rmse
from orchestrator.fit.guards import Identification
from orchestrator.fit.power_law import FitError

MIN_PROFILE_SIZES = 3  # a parabola needs three distinct model sizes
# Through 3 sizes the parabola passes exactly: nothing tests it. One more, and its curvature has an error.
MIN_IDENTIFIED_SIZES = 4
DEFAULT_BUDGET_TOL = 0.05
# A parabola in log N is the local shape of a profile; over more than this many decades its
# asymmetry biases the vertex (Hoffmann et al. 2022 sampled about 1-1.5 decades per budget).
WIDE_GRID_DECADES = 1.5
# The vertex further from the grid's centre than this share of its half-width is off-centre.
OFF_CENTRE = 0.5


@dataclass(frozen=True)
class IsoFLOPProfile:
    """One compute budget's loss against model size and the vertex of its parabola.

    budget: C (FLOPs, the mean of the profile's trials). N (parameters), D (data units), y: its points.
    coef: (c2, c1, c0) of y = c2 u^2 + c1 u + c0, u = log10 N. N_opt / D_opt / y_opt: the vertex
    (NaN without a minimum). interior: the vertex lies within the sampled N range. N_opt_ci:
    bootstrap interval of N_opt. width_decades: log10(max N / min N) of the grid. centre_offset: the
    vertex's distance from the grid's centre in log N, as a share of the half-width (-1: at the
    smallest N, +1: at the largest). lowest_at_edge: the lowest seed-mean trial is the smallest or
    largest N. identification: whether this profile's N_opt enters the N_opt(C) law.
    """

    budget: float
    N: np.ndarray = field(repr=False)
    D: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    coef: tuple[float, float, float]
    N_opt: float
    D_opt: float
    y_opt: float
    interior: bool
    N_opt_ci: tuple[float, float]
    width_decades: float = float("nan")
    centre_offset: float = float("nan")
    lowest_at_edge: bool = False
    identification: Identification = Identification()

    @property
    def identified(self) -> bool:
        return self.identification.identified

    def predict(self, N) -> np.ndarray:
        """The fitted parabola at model size N (parameters)."""
        return np.polyval(self.coef, np.log10(np.asarray(N, dtype=float)))

    def row(self) -> str:
        """One line of the per-budget table: C, points, grid width, N_opt [CI], offset, status."""
        ok = self.identified
        n_opt = f"{self.N_opt:>10.4g} [{self.N_opt_ci[0]:>9.4g}, {self.N_opt_ci[1]:>9.4g}]" if ok else f"{'-':>10} {'':>22}"
        offset = f"{self.centre_offset:+.2f}" if np.isfinite(self.centre_offset) else "-"
        status = "; ".join(self.identification.caveats) if ok else self.identification.status
        return f"  {self.budget:>10.4g} {len(self.y):>6} {self.width_decades:>8.2f} {n_opt} {offset:>7}  {status or 'ok'}"

    def to_dict(self) -> dict:
        ok = self.identified
        return {
            "budget": self.budget,
            **self.identification.to_dict(),
            "coef": list(self.coef),
            "N_opt": self.N_opt if ok else None,
            "D_opt": self.D_opt if ok else None,
            "y_opt": self.y_opt if ok else None,
            "N_opt_ci": list(self.N_opt_ci) if ok else None,
            "interior": self.interior,
            "width_decades": self.width_decades,
            "centre_offset": self.centre_offset if np.isfinite(self.centre_offset) else None,
            "lowest_at_edge": self.lowest_at_edge,
            "N": self.N.tolist(),
            "D": self.D.tolist(),
            "y": self.y.tolist(),
        }


@dataclass(frozen=True)
class IsoFLOPFit:
    """Per-budget parabolas and the power laws of their optima: N_opt = N_coef C^a, D_opt = D_coef C^b.

    params / ci: a, N_coef, b, D_coef (the same as allocation.params / allocation.ci).
    profiles: one IsoFLOPProfile per budget, in increasing compute; only identified ones enter the law.
    allocation: the fitted N_opt(C), D_opt(C), or None when fewer than 2 profiles have an identified optimum.
    identification: the allocation's, or why there is none. goodness: the parabolas' residual and
    leave-one-out errors (loss), and leave-largest-budget-out (N_opt predicted from the smaller budgets).
    """

    profiles: tuple[IsoFLOPProfile, ...]
    allocation: ComputeOptimalFit | None
    y_name: str = "loss"
    label: str = ""
    identification: Identification = Identification()
    goodness: GoodnessOfFit | None = None
    designed: bool = False  # the budgets were given (the sweep was designed as IsoFLOP profiles), not grouped by FLOPs

    @property
    def identified(self) -> bool:
        return self.identification.identified

    @property
    def params(self) -> dict[str, float]:
        return self.allocation.params if self.allocation is not None else {}

    @property
    def ci(self) -> dict[str, tuple[float, float]]:
        return self.allocation.ci if self.allocation is not None else {}

    def predict(self, flops) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt) at compute `flops` (FLOPs)."""
        if self.allocation is None:
            raise FitError(f"{self.label}: {self.identification.status}")
        return self.allocation.predict(flops)

    @property
    def title(self) -> str:
        return f"IsoFLOP profiles of {self.y_name} (Chinchilla approach 2)" + (f"  [{self.label}]" if self.label else "")

    def budget_table(self) -> list[str]:
        """One line per budget: grid width in log N, N_opt, how far off-centre, and its status."""
        head = f"  {'C (FLOPs)':>10} {'points':>6} {'decades':>8} {'N_opt':>10} {'CI':>22} {'offset':>7}  status"
        return [head, *(p.row() for p in self.profiles)]

    def summary(self) -> str:
        lines = [self.title, *self.budget_table()]
        if self.goodness is not None and self.identified:
            lines.append(f"  {self.goodness.line()}")
        if self.allocation is not None:
            lines.append(self.allocation.summary())
        else:
            lines.append(f"  {self.identification.status}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        ok = self.identified
        return {
            "kind": "isoflop",
            "method": "Hoffmann et al. 2022 approach 2: parabola in log10 N per compute budget",
            "budgets": "given by the sweep" if self.designed else "trials whose FLOPs agree within 5%",
            "label": self.label,
            "y_name": self.y_name,
            **self.identification.to_dict(),
            "params": self.params if ok else None,
            "ci": {k: list(v) for k, v in self.ci.items()} if ok else None,
            "profiles": [p.to_dict() for p in self.profiles],
            "goodness": self.goodness.to_dict() if ok and self.goodness else None,
            "allocation": self.allocation.to_dict() if self.allocation is not None else None,
        }


def compute_budgets(flops, rel_tol: float = DEFAULT_BUDGET_TOL) -> np.ndarray:
    """A budget id per trial: trials whose compute is within rel_tol of a budget's smallest share it."""
    flops = np.asarray(flops, dtype=float)
    order = np.argsort(flops, kind="stable")
    ids = np.empty(len(flops), dtype=int)
    current, start = -1, -np.inf
    for i in order:
        if flops[i] > start * (1 + rel_tol):
            current, start = current + 1, flops[i]
        ids[i] = current
    return ids


def _weighted_parabolas(u: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n_resamples, 3) coefficients (c2, c1, c0) of weighted least-squares parabolas; NaN where singular."""
    X = np.stack([u * u, u, np.ones_like(u)], axis=1)
    xtwx = np.einsum("bm,mi,mj->bij", weights, X, X)
    xtwy = np.einsum("bm,mi,m->bi", weights, X, y)
    distinct = ((weights > 0)[:, :, None] & (u[None, :, None] == np.unique(u)[None, None, :])).any(axis=1).sum(axis=1)
    out = np.full((len(weights), 3), np.nan)
    ok = distinct >= MIN_PROFILE_SIZES
    if ok.any():
        out[ok] = np.linalg.solve(xtwx[ok], xtwy[ok][..., None])[..., 0]
    return out


def _log_line(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Slope and intercept of least-squares lines y ~ x for each row of y (n_resamples, n_budgets)."""
    X = np.stack([x, np.ones_like(x)], axis=1)
    return np.linalg.lstsq(X, y.T, rcond=None)[0].T


def _profile(budget, N, D, y, coef, ci_level) -> tuple[IsoFLOPProfile, np.ndarray, np.ndarray]:
    """One budget's profile from its parabolas (row 0: the fit, rows 1+: resamples), checked.

    Returns the profile and the per-resample log10 N_opt and log10 D_opt (NaN without a minimum).
    """
    u = np.log10(N)
    with np.errstate(all="ignore"):
        u_opt = np.where(coef[:, 0] > 0, -coef[:, 1] / (2 * coef[:, 0]), np.nan)
    slope, intercept = np.polyfit(u, np.log10(D), 1)
    log_d_opt = slope * u_opt + intercept
    c2, c1, c0 = coef[0]
    lo_u, hi_u = u.min(), u.max()
    width, centre, half = hi_u - lo_u, (hi_u + lo_u) / 2, (hi_u - lo_u) / 2
    n_opt_ci = percentile_ci(10 ** u_opt[1:], ci_level) if len(coef) > 1 else (np.nan, np.nan)
    n_opt_ci = (float(n_opt_ci[0]), float(n_opt_ci[1]))
    sizes = np.unique(N)
    means = np.array([y[N == n].mean() for n in sizes])
    lowest_at_edge = bool(np.argmin(means) in (0, len(sizes) - 1))

    problems, caveats = [], []
    vertex = u_opt[0]
    if len(sizes) < MIN_IDENTIFIED_SIZES:
        problems.append(f"{len(sizes)} distinct N: the parabola passes through every point, nothing tests it")
    if not c2 > 0:
        problems.append("its parabola opens downward: no minimum")
    else:
        t_needed, t_c2 = _curvature_t(u, y, coef[0], ci_level)
        if t_c2 < t_needed:
            problems.append(f"its curvature is within the scatter (t = {t_c2:.2g} < {t_needed:.2g}): the minimum is not pinned")
        c2_lo = float(np.nanpercentile(coef[1:, 0], (1 - ci_level) / 2 * 100)) if len(coef) > 1 else c2
        rise = c2 * half**2  # loss above the vertex at the grid's edge, for a centred grid
        if not rise > 1e-6 * abs(np.polyval(coef[0], vertex)):
            problems.append("its parabola is flat: no minimum to locate")
        elif not c2_lo > 0:
            problems.append(f"the CI of its curvature reaches {c2_lo:.2g} <= 0: the minimum is not pinned")
        if not lo_u <= vertex <= hi_u:
            problems.append(f"its vertex N = {10**vertex:.3g} lies outside the sampled N [{N.min():.3g}, {N.max():.3g}]: optimum at the profile's edge")
    offset = float((vertex - centre) / half) if np.isfinite(vertex) and half > 0 else float("nan")
    if not problems:
        if lowest_at_edge:
            caveats.append("lowest trial at the profile's edge")
        if abs(offset) > OFF_CENTRE:
            caveats.append(f"off-centre: optimum {abs(offset):.0%} of the half-width toward the {'large' if offset > 0 else 'small'} end")
        if width > WIDE_GRID_DECADES:
            caveats.append(f"wide grid: {width:.2f} decades of N > {WIDE_GRID_DECADES:g}")
        if np.isfinite(n_opt_ci[0]) and (n_opt_ci[0] < N.min() or n_opt_ci[1] > N.max()):
            caveats.append("N_opt's CI reaches beyond the sampled N")
    profile = IsoFLOPProfile(
        budget=float(budget),
        N=N,
        D=D,
        y=y,
        coef=(float(c2), float(c1), float(c0)),
        N_opt=float(10**vertex),
        D_opt=float(10 ** log_d_opt[0]),
        y_opt=float(np.polyval(coef[0], vertex)) if np.isfinite(vertex) else float("nan"),
        interior=bool(np.isfinite(vertex) and lo_u <= vertex <= hi_u),
        N_opt_ci=n_opt_ci,
        width_decades=float(width),
        centre_offset=offset,
        lowest_at_edge=lowest_at_edge,
        identification=guards.identification(problems, caveats),
    )
    return profile, u_opt, log_d_opt


def _curvature_t(u: np.ndarray, y: np.ndarray, coef: np.ndarray, ci_level: float) -> tuple[float, float]:
    """(t needed, t of c2): the least-squares curvature over its standard error, against Student's t at ci_level."""
    dof = len(u) - 3
    if dof < 1:
        return float("inf"), float("nan")
    X = np.stack([u * u, u, np.ones_like(u)], axis=1)
    residual = y - X @ coef
    s2 = float(residual @ residual) / dof
    se = float(np.sqrt(s2 * np.linalg.pinv(X.T @ X)[0, 0]))
    needed = float(stats.t.ppf(0.5 + ci_level / 2, dof))
    return needed, float(coef[0] / se) if se > 0 else float("inf")


def _allocation_lines(log_c: np.ndarray, boot_n: np.ndarray, boot_d: np.ndarray) -> np.ndarray:
    """(rows, 4) natural (a, N_coef, b, D_coef) from per-row log10 N_opt, log10 D_opt; NaN where any budget failed."""
    complete = np.isfinite(boot_n).all(axis=1) & np.isfinite(boot_d).all(axis=1)
    lines = np.full((len(boot_n), 4), np.nan)
    if complete.any():
        lines[complete, :2] = _log_line(log_c, boot_n[complete])
        lines[complete, 2:] = _log_line(log_c, boot_d[complete])
    return np.stack([lines[:, 0], 10 ** lines[:, 1], lines[:, 2], 10 ** lines[:, 3]], axis=1)


def _goodness(profiles: list[IsoFLOPProfile], used: list[int], log_n_opt: np.ndarray) -> GoodnessOfFit:
    """Parabola residuals and leave-one-out errors on the loss; N_opt of the largest budget from the others.

    log_n_opt: log10 N_opt of every profile (NaN where it has none)."""
    pred, obs, loo_pred, loo_obs = [], [], [], []
    for p in profiles:
        pred.append(p.predict(p.N))
        obs.append(p.y)
        u = np.log10(p.N)
        for i in range(len(u)):
            keep = np.arange(len(u)) != i
            if len(np.unique(u[keep])) < MIN_PROFILE_SIZES:
                continue
            loo_pred.append(np.polyval(np.polyfit(u[keep], p.y[keep], 2), u[i]))
            loo_obs.append(p.y[i])
    largest_out, note = None, "needs 3 budgets with an identified optimum"
    if len(used) >= 3:
        log_c = np.log10([profiles[k].budget for k in used])
        slope, intercept = np.polyfit(log_c[:-1], log_n_opt[used][:-1], 1)
        largest = profiles[used[-1]]
        largest_out = abs(float(np.log(10 ** (slope * log_c[-1] + intercept) / largest.N_opt)))
        note = f"N_opt at C = {largest.budget:.3g} from the smaller budgets"
    return GoodnessOfFit(
        log_rmse(np.concatenate(pred), np.concatenate(obs)),
        log_rmse(loo_pred, loo_obs) if loo_pred else None,
        largest_out,
        note,
        int(sum(len(p.y) for p in profiles)),
        len(loo_pred),
    )


def fit_isoflop(
    flops,
    N,
    D,
    y,
    n_boot: int = DEFAULT_N_BOOT,
    ci_level: float = DEFAULT_CI_LEVEL,
    seed: int = 0,
    budget_tol: float = DEFAULT_BUDGET_TOL,
    budgets=None,
    y_name: str = "loss",
    label: str = "",
) -> IsoFLOPFit:
    """IsoFLOP profiles from trials of compute `flops` (FLOPs), model size N, data size D and loss y.

    Budgets are given (`budgets`, one label per trial) or found by grouping trials whose compute
    agrees within `budget_tol`. Budgets with fewer than 3 distinct N are left out; at least 2 must
    remain, or FitError. Profiles whose optimum is not identified stay in `profiles` with the reason
    and stay out of the N_opt(C) law; with fewer than 2 identified there is no allocation.
    """
    label = label or y_name
    flops, N, D, y = (np.asarray(v, dtype=float).ravel() for v in (flops, N, D, y))
    keep = np.isfinite(flops) & np.isfinite(N) & np.isfinite(D) & np.isfinite(y) & (N > 0) & (D > 0) & (flops > 0)
    ids = compute_budgets(flops[keep], budget_tol) if budgets is None else np.asarray(budgets)[keep]
    flops, N, D, y = flops[keep], N[keep], D[keep], y[keep]
    groups = [np.flatnonzero(ids == b) for b in np.unique(ids)]
    groups = [g for g in groups if len(np.unique(N[g])) >= MIN_PROFILE_SIZES]
    if len(groups) < 2:
        raise FitError(
            f"{label}: IsoFLOP needs at least 2 compute budgets with {MIN_PROFILE_SIZES}+ distinct model sizes each, "
            f"got {len(groups)} (budgets group trials whose FLOPs agree within {budget_tol:.0%})"
        )
    groups.sort(key=lambda g: flops[g].mean())
    profiles, boot_n, boot_d = [], [], []
    for k, g in enumerate(groups):
        counts = np.vstack([np.ones(len(g)), resample_counts(len(g), n_boot, seed + k)]).astype(float)
        coef = _weighted_parabolas(np.log10(N[g]), y[g], counts)
        profile, u_opt, log_d_opt = _profile(flops[g].mean(), N[g], D[g], y[g], coef, ci_level)
        profiles.append(profile)
        boot_n.append(u_opt)
        boot_d.append(log_d_opt)
    boot_n, boot_d = np.array(boot_n).T, np.array(boot_d).T  # (1 + n_boot, n_budgets)
    used = [k for k, p in enumerate(profiles) if p.identified]
    left_out = [f"C = {p.budget:.3g} left out: {'; '.join(p.identification.problems)}" for p in profiles if not p.identified]
    if len(used) < 2:
        ident = guards.identification([f"{len(used)} budget(s) with an identified optimum; the N_opt(C) law needs 2"], left_out)
        return IsoFLOPFit(profiles=tuple(profiles), allocation=None, y_name=y_name, label=label, identification=ident, designed=budgets is not None)
    caveats = list(left_out)
    caveats += [f"C = {profiles[k].budget:.3g}: {c}" for k in used for c in profiles[k].identification.caveats]
    if len(used) == 2:
        caveats.append("2 budgets: the power-law form of N_opt(C) is not tested")
    natural = _allocation_lines(np.log10([profiles[k].budget for k in used]), boot_n[:, used], boot_d[:, used])
    problems = []
    if len(used) < len(profiles) / 2:
        # A design brackets the optimum at every budget; where most profiles found none, the few
        # that did are as likely noise.
        problems.append(f"only {len(used)} of {len(profiles)} budgets have an identified optimum")
    n_ok = int(np.isfinite(natural[1:]).all(axis=1).sum())
    if n_boot and n_ok < 0.5 * n_boot:
        problems.append(f"only {n_ok} of {n_boot} resamples found a minimum in every budget")
    allocation = ComputeOptimalFit.from_samples(natural[0], natural[1:], "isoflop", label, ci_level, n_boot, problems, caveats)
    return IsoFLOPFit(
        profiles=tuple(profiles),
        allocation=allocation,
        y_name=y_name,
        label=label,
        identification=allocation.identification,
        goodness=_goodness(profiles, used, boot_n[0]) if allocation.identified else None,
        designed=budgets is not None,
    )
