"""scalesweep: scaling-law sweeps on Ray, recorded in MLflow, fitted with scipy.

    from orchestrator import load_spec, run_sweep, fit_sweep, report_sweep
    spec = load_spec("examples/mnist1d_demo.yaml")
    outcome = run_sweep(spec)          # resumable: finished trials are skipped
    fits = fit_sweep(spec)             # SweepFits: every applicable fit; fits.summary()

The names below are imported on first use, not with the package: a Ray worker that imports
`workloads.mnist1d_mlp` (which needs `orchestrator.compute`) must not pay for mlflow, scipy and
pandas, which only the driver's sweep API uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the submodule that defines it
_EXPORTS = {
    "SpecError": "orchestrator.spec",
    "Sweep": "orchestrator.sweep",
    "SweepSpec": "orchestrator.spec",
    "load_spec": "orchestrator.spec",
    "parse_spec": "orchestrator.spec",
    "plan_sweep": "orchestrator.sweep",
    "run_sweep": "orchestrator.sweep",
    "sweep_status": "orchestrator.sweep",
    "fit_sweep": "orchestrator.sweep",
    "report_sweep": "orchestrator.sweep",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs only; at run time __getattr__ imports on demand
    from orchestrator.spec import SpecError, SweepSpec, load_spec, parse_spec
    from orchestrator.sweep import Sweep, fit_sweep, plan_sweep, report_sweep, run_sweep, sweep_status


def __getattr__(name: str) -> Any:
    # PEP 562. An AttributeError for any other name lets `from orchestrator import compute` fall
    # back to importing the submodule, as it would without this hook.
    if name not in _EXPORTS:
        raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
