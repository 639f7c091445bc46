"""IsoFLOP profiles, Hoffmann et al. (2022) approach 2, and the compute-optimal exponents they give.

Trials that spent the same compute C (FLOPs) form one profile. Per profile, a parabola in log10 N
is fitted to the loss; its vertex is the loss-minimising N_opt(C). D_opt(C) is read off the same
profile (log D is linear in log N along a profile, since C is proportional to N D). Then
log N_opt and log D_opt are regressed on log C: N_opt = N_coef C^a, D_opt = D_coef C^b.
CIs resample the trials within each budget (vectorised: weighted normal equations per resample).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from orchestrator.fit.allocation import ALLOCATION_PARAMS, ComputeOptimalFit
from orchestrator.fit.bootstrap import DEFAULT_CI_LEVEL, DEFAULT_N_BOOT, ci_dict, percentile_ci, resample_counts
from orchestrator.fit.power_law import FitError

MIN_PROFILE_SIZES = 3  # a parabola needs three distinct model sizes
DEFAULT_BUDGET_TOL = 0.05


@dataclass(frozen=True)
class IsoFLOPProfile:
    """One compute budget's loss against model size and the vertex of its parabola.

    budget: C (FLOPs, the mean of the profile's trials). N (parameters), D (data units), y: its points.
    coef: (c2, c1, c0) of y = c2 u^2 + c1 u + c0, u = log10 N. N_opt / D_opt / y_opt: the vertex.
    interior: True when the parabola opens upward and its vertex lies within the sampled N range
    (otherwise N_opt is an extrapolation and says so). N_opt_ci: bootstrap interval of N_opt.
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

    def predict(self, N) -> np.ndarray:
        """The fitted parabola at model size N (parameters)."""
        return np.polyval(self.coef, np.log10(np.asarray(N, dtype=float)))

    def to_dict(self) -> dict:
        return {
            "budget": self.budget,
            "coef": list(self.coef),
            "N_opt": self.N_opt,
            "D_opt": self.D_opt,
            "y_opt": self.y_opt,
            "interior": self.interior,
            "N_opt_ci": list(self.N_opt_ci),
            "N": self.N.tolist(),
            "D": self.D.tolist(),
            "y": self.y.tolist(),
        }


@dataclass(frozen=True)
class IsoFLOPFit:
    """Per-budget parabolas and the power laws of their optima: N_opt = N_coef C^a, D_opt = D_coef C^b.

    params / ci: a, N_coef, b, D_coef (the same as allocation.params / allocation.ci).
    profiles: one IsoFLOPProfile per budget, in increasing compute.
    """

    profiles: tuple[IsoFLOPProfile, ...]
    allocation: ComputeOptimalFit
    y_name: str = "loss"
    label: str = ""

    @property
    def params(self) -> dict[str, float]:
        return self.allocation.params

    @property
    def ci(self) -> dict[str, tuple[float, float]]:
        return self.allocation.ci

    def predict(self, flops) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt) at compute `flops` (FLOPs)."""
        return self.allocation.predict(flops)

    def summary(self) -> str:
        lines = [f"IsoFLOP profiles of {self.y_name} (Chinchilla approach 2)" + (f"  [{self.label}]" if self.label else "")]
        lines.append(f"  {'C (FLOPs)':>12} {'points':>6} {'N_opt':>12} {'N_opt CI':>27} {'D_opt':>12} {'min ' + self.y_name:>12}")
        for p in self.profiles:
            flag = "" if p.interior else "  (vertex outside the sampled N: extrapolated)"
            lines.append(
                f"  {p.budget:>12.4g} {len(p.y):>6} {p.N_opt:>12.5g} [{p.N_opt_ci[0]:>12.5g}, {p.N_opt_ci[1]:>12.5g}] "
                f"{p.D_opt:>12.5g} {p.y_opt:>12.5g}{flag}"
            )
        return "\n".join(lines) + "\n" + self.allocation.summary()

    def to_dict(self) -> dict:
        return {
            "kind": "isoflop",
            "method": "Hoffmann et al. 2022 approach 2: parabola in log10 N per compute budget",
            "label": self.label,
            "y_name": self.y_name,
            "params": self.params,
            "ci": {k: list(v) for k, v in self.ci.items()},
            "profiles": [p.to_dict() for p in self.profiles],
            "allocation": self.allocation.to_dict(),
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
    remain. Raises FitError otherwise.
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
        u = np.log10(N[g])
        counts = np.vstack([np.ones(len(g)), resample_counts(len(g), n_boot, seed + k)]).astype(float)
        coef = _weighted_parabolas(u, y[g], counts)
        with np.errstate(all="ignore"):
            u_opt = np.where(coef[:, 0] > 0, -coef[:, 1] / (2 * coef[:, 0]), np.nan)
        slope, intercept = np.polyfit(u, np.log10(D[g]), 1)
        log_d_opt = slope * u_opt + intercept
        c2, c1, c0 = coef[0]
        if not np.isfinite(u_opt[0]):
            raise FitError(f"{label}: the profile at C={flops[g].mean():.4g} FLOPs has no minimum (its parabola opens downward)")
        lo, hi = percentile_ci(10 ** u_opt[1:], ci_level) if n_boot else (np.nan, np.nan)
        profiles.append(
            IsoFLOPProfile(
                budget=float(flops[g].mean()),
                N=N[g],
                D=D[g],
                y=y[g],
                coef=(float(c2), float(c1), float(c0)),
                N_opt=float(10 ** u_opt[0]),
                D_opt=float(10 ** log_d_opt[0]),
                y_opt=float(np.polyval(coef[0], u_opt[0])),
                interior=bool(u.min() <= u_opt[0] <= u.max()),
                N_opt_ci=(float(lo), float(hi)),
            )
        )
        boot_n.append(u_opt)
        boot_d.append(log_d_opt)
    log_c = np.log10([p.budget for p in profiles])
    boot_n, boot_d = np.array(boot_n).T, np.array(boot_d).T  # (1 + n_boot, n_budgets)
    complete = np.isfinite(boot_n).all(axis=1)
    lines = np.full((len(boot_n), 4), np.nan)
    lines[complete, :2] = _log_line(log_c, boot_n[complete])
    lines[complete, 2:] = _log_line(log_c, boot_d[complete])
    natural = np.stack([lines[:, 0], 10 ** lines[:, 1], lines[:, 2], 10 ** lines[:, 3]], axis=1)
    allocation = ComputeOptimalFit(
        params={k: float(v) for k, v in zip(ALLOCATION_PARAMS, natural[0])},
        ci=ci_dict(ALLOCATION_PARAMS, natural[1:], ci_level) if n_boot else {k: (np.nan, np.nan) for k in ALLOCATION_PARAMS},
        method="isoflop",
        label=label,
        n_boot=int(complete[1:].sum()),
        ci_level=ci_level,
    )
    return IsoFLOPFit(profiles=tuple(profiles), allocation=allocation, y_name=y_name, label=label)
