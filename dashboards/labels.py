"""How a report names things: axis labels with units and compact numbers. Passed in, never global.

The generic columns (N, D, C, epoch) are the orchestrator's; what a workload's own columns and
metrics mean comes from the workload (its `axis_labels`, `metric_units`, `data_unit` and
`n_params_meaning`), handed over as a `Labels`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

METRIC_NAMES = {"test_error": "test error", "train_error": "train error", "test_loss": "test loss", "train_loss": "train loss"}
# What the standard metrics measure unless a workload says otherwise (Workload.metric_units).
DEFAULT_METRIC_UNITS = {
    "test_error": "fraction misclassified",
    "train_error": "fraction misclassified",
    "test_loss": "nats",
    "train_loss": "nats",
}


@dataclass(frozen=True)
class Labels:
    """Axis labels for one sweep's figures.

    metric_units: what each metric measures (defaults above). columns: labels of the workload's own
    config columns, e.g. {'width': 'hidden width (units)'}. data_unit: what D counts ('samples',
    'tokens'). n_params_meaning: what N counts ('parameters', 'non-embedding parameters').
    """

    metric_units: Mapping[str, str] = field(default_factory=dict)
    columns: Mapping[str, str] = field(default_factory=dict)
    data_unit: str = "samples"
    n_params_meaning: str = "parameters"

    @classmethod
    def of(cls, workload, fits=None) -> Labels:
        """The labels a workload declares; with `fits`, N is named as the fits counted it."""
        return cls(
            metric_units=dict(getattr(workload, "metric_units", {})),
            columns=dict(getattr(workload, "axis_labels", {})),
            data_unit=getattr(workload, "data_unit", "samples"),
            n_params_meaning=getattr(fits, "n_params_meaning", None) or getattr(workload, "n_params_meaning", "parameters"),
        )

    def unit(self, metric: str) -> str:
        return self.metric_units.get(metric) or DEFAULT_METRIC_UNITS.get(metric, "")

    def __call__(self, column: str) -> str:
        if column in METRIC_NAMES:
            return f"{METRIC_NAMES[column]} ({self.unit(column)})"
        generic = {
            "n_params": f"model size N ({self.n_params_meaning})",
            "n_samples": f"data size D (training {self.data_unit})",
            "train_flops": "training compute C (FLOPs)",
            "compute_budget": "compute budget C (FLOPs)",
            "epoch": "epoch (passes over the training set)",
        }
        return self.columns.get(column) or generic.get(column, column)

    def short(self, column: str) -> str:
        """The symbol a legend uses for a column: N, D, C, or the column's name."""
        return {"n_params": "N", "n_samples": "D", "train_flops": "C", "compute_budget": "C"}.get(column, column)

    def group(self, group) -> str:
        """'D = 1k, label_noise = 0.15' from a fit's group ((column, value), ...)."""
        return ", ".join(f"{self.short(c)} = {si(v) if isinstance(v, (int, float)) else v}" for c, v in group) or "all"


DEFAULT_LABELS = Labels()


def si(value: float) -> str:
    """Compact tick text: 1200 -> 1.2k, 3.5e6 -> 3.5M, 2e9 -> 2B, 1e21 -> 1e21."""
    value = float(value)
    if value == 0 or not np.isfinite(value):
        return f"{value:g}"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            if abs(value) >= 1000 * scale:
                return f"{value:.0e}".replace("e+", "e")
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"
