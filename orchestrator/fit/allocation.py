"""Compute-optimal allocation: N_opt = N_coef * C^a and D_opt = D_coef * C^b, with C = 6 N D.

Both Chinchilla estimates return this object: approach 3 derives it from a joint L(N, D) fit,
approach 2 fits it to IsoFLOP minima. C is in FLOPs, N in parameters, D in the unit of the data
axis (tokens, or samples seen).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from orchestrator.fit import guards
from orchestrator.fit.bootstrap import ci_dict, format_table, percentile_ci
from orchestrator.fit.guards import Identification

ALLOCATION_PARAMS = ("a", "N_coef", "b", "D_coef")


@dataclass(frozen=True)
class ComputeOptimalFit:
    """Power laws of the loss-minimising model and data size against compute.

    params: a and b (exponents of N_opt and D_opt in C), N_coef and D_coef (their prefactors).
    ci: percentile bootstrap interval of each, at ci_level.
    method: 'joint' (derived from a joint fit, Hoffmann et al. 2022 approach 3) or 'isoflop' (approach 2).
    identification: whether the sweep pins the allocation (a plausible, its CI informative).
    param_samples: bootstrap draws of (a, N_coef, b, D_coef), one row per resample (NaN rows failed).
    """

    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    method: str
    label: str = ""
    n_boot: int = 0
    ci_level: float = 0.95
    identification: Identification = Identification()
    param_samples: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_samples(
        cls, point, samples, method: str, label: str, ci_level: float, n_boot: int, problems=(), caveats=()
    ) -> ComputeOptimalFit:
        """The allocation at `point` (a, N_coef, b, D_coef) with CIs from `samples`, checked."""
        samples = np.asarray(samples, dtype=float).reshape(-1, 4)
        n_ok = int(np.isfinite(samples).all(axis=1).sum())
        ci = ci_dict(ALLOCATION_PARAMS, samples, ci_level) if n_boot and n_ok else {k: (np.nan, np.nan) for k in ALLOCATION_PARAMS}
        params = {k: float(v) for k, v in zip(ALLOCATION_PARAMS, point)}
        return cls(
            params=params,
            ci=ci,
            method=method,
            label=label,
            n_boot=n_ok,
            ci_level=ci_level,
            identification=check_allocation(params, ci, n_boot, n_ok, problems, caveats),
            param_samples=samples if n_boot else None,
        )

    @property
    def identified(self) -> bool:
        return self.identification.identified

    @property
    def approach(self) -> str:
        return {"joint": "approach 3 (joint fit)", "isoflop": "approach 2 (IsoFLOP)"}.get(self.method, self.method)

    def predict(self, flops) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt in parameters, D_opt in data units) at compute `flops` (FLOPs)."""
        c = np.asarray(flops, dtype=float)
        return self.params["N_coef"] * c ** self.params["a"], self.params["D_coef"] * c ** self.params["b"]

    def predict_ci(self, flops) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
        """Pointwise bands ((N lo, N hi), (D lo, D hi)) at `flops` over the bootstrap draws; None without draws."""
        if self.param_samples is None:
            return None
        c = np.log(np.asarray(flops, dtype=float))[None, :]
        a, n_coef, b, d_coef = (self.param_samples[:, i, None] for i in range(4))
        with np.errstate(all="ignore"):
            n = np.exp(np.log(n_coef) + a * c)
            d = np.exp(np.log(d_coef) + b * c)
        return percentile_ci(n, self.ci_level), percentile_ci(d, self.ci_level)

    @property
    def title(self) -> str:
        title = f"compute-optimal allocation, {self.approach}: N_opt = N_coef * C^a, D_opt = D_coef * C^b"
        return title + (f"  [{self.label}]" if self.label else "")

    def summary(self) -> str:
        if not self.identified:
            return f"{self.title}\n  {self.identification.status}"
        footer = f"bootstrap={self.n_boot}" + "".join(f"\n  caveat: {c}" for c in self.identification.caveats)
        return format_table(self.title, self.params, self.ci, self.ci_level, footer)

    def to_dict(self) -> dict:
        ok = self.identified
        return {
            "kind": "allocation",
            "law": "N_opt = N_coef * C^a; D_opt = D_coef * C^b",
            "method": self.method,
            "label": self.label,
            **self.identification.to_dict(),
            "params": self.params if ok else None,
            "ci": {k: list(v) for k, v in self.ci.items()} if ok else None,
            "ci_level": self.ci_level,
            "n_boot": self.n_boot,
        }


def check_allocation(params, ci, n_boot: int, n_ok: int, problems=(), caveats=()) -> Identification:
    """An allocation is identified when a and b are plausible and a's CI says something."""
    lo, hi = guards.PLAUSIBLE_ALLOCATION
    found = list(problems)
    for name in ("a", "b"):
        if not np.isfinite(params[name]) or not lo <= params[name] <= hi:
            found.append(f"{name} = {params[name]:.3g} is outside the plausible range [{lo:g}, {hi:g}] of allocation exponents")
    notes = list(caveats)
    if n_boot:
        a_lo, a_hi = ci["a"]
        if not (np.isfinite(a_lo) and np.isfinite(a_hi)):
            found.append("the bootstrap CI of a is not finite")
        elif a_hi - a_lo > guards.MAX_ALLOCATION_CI_WIDTH:
            found.append(f"the CI of a [{a_lo:.2f}, {a_hi:.2f}] is wider than {guards.MAX_ALLOCATION_CI_WIDTH:g}: it spans every published answer")
        else:
            found.append(guards.ci_implausible("a", (a_lo, a_hi), guards.PLAUSIBLE_ALLOCATION))
        if n_ok < 0.9 * n_boot:
            notes.append(f"only {n_ok} of {n_boot} resamples gave an allocation")
    else:
        notes.append("no bootstrap: CIs not computed")
    return guards.identification(found, notes)


def allocation_from_joint(E, A, alpha, B, beta) -> np.ndarray:
    """(a, N_coef, b, D_coef) of the joint law's optimum under C = 6 N D (Hoffmann et al. 2022, eq. 4).

    G = (alpha A / (beta B))^(1 / (alpha + beta)); N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b,
    a = beta / (alpha + beta), b = alpha / (alpha + beta). Vectorised over arrays of parameters.
    """
    alpha, beta, A, B = (np.asarray(v, dtype=float) for v in (alpha, beta, A, B))
    with np.errstate(all="ignore"):
        total = alpha + beta
        a, b = beta / total, alpha / total
        log_g = (np.log(alpha * A) - np.log(beta * B)) / total
        n_coef = np.exp(log_g - a * np.log(6.0))
        d_coef = np.exp(-log_g - b * np.log(6.0))
    return np.stack([a, n_coef, b, d_coef], axis=-1)
