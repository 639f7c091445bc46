"""Compute-optimal allocation: N_opt = N_coef * C^a and D_opt = D_coef * C^b, with C = 6 N D.

Both Chinchilla estimates return this object: approach 3 derives it from a joint L(N, D) fit,
approach 2 fits it to IsoFLOP minima. C is in FLOPs, N in parameters, D in the unit of the data
axis (tokens, or samples seen).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.fit.bootstrap import format_table

ALLOCATION_PARAMS = ("a", "N_coef", "b", "D_coef")


@dataclass(frozen=True)
class ComputeOptimalFit:
    """Power laws of the loss-minimising model and data size against compute.

    params: a and b (exponents of N_opt and D_opt in C), N_coef and D_coef (their prefactors).
    ci: percentile bootstrap interval of each, at ci_level.
    method: 'joint' (derived from a joint fit, Hoffmann et al. 2022 approach 3) or 'isoflop' (approach 2).
    """

    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    method: str
    label: str = ""
    n_boot: int = 0
    ci_level: float = 0.95

    def predict(self, flops) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt in parameters, D_opt in data units) at compute `flops` (FLOPs)."""
        c = np.asarray(flops, dtype=float)
        return self.params["N_coef"] * c ** self.params["a"], self.params["D_coef"] * c ** self.params["b"]

    def summary(self) -> str:
        title = f"compute-optimal allocation ({self.method}): N_opt = N_coef * C^a, D_opt = D_coef * C^b"
        if self.label:
            title += f"  [{self.label}]"
        return format_table(title, self.params, self.ci, self.ci_level, f"bootstrap={self.n_boot}")

    def to_dict(self) -> dict:
        return {
            "law": "N_opt = N_coef * C^a; D_opt = D_coef * C^b",
            "method": self.method,
            "label": self.label,
            "params": self.params,
            "ci": {k: list(v) for k, v in self.ci.items()},
            "ci_level": self.ci_level,
            "n_boot": self.n_boot,
        }


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
