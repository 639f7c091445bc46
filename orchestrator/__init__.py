"""scalesweep: scaling-law sweeps on Ray, recorded in MLflow, fitted with scipy.

    from orchestrator import load_spec, run_sweep, fit_sweep, report_sweep
    spec = load_spec("examples/mnist1d_demo.yaml")
    outcome = run_sweep(spec)          # resumable: finished trials are skipped
    fits = fit_sweep(spec)             # SweepFits: every applicable fit; fits.summary()
"""

from orchestrator.spec import SpecError, SweepSpec, load_spec, parse_spec
from orchestrator.sweep import Sweep, fit_sweep, plan_sweep, report_sweep, run_sweep, sweep_status

__all__ = [
    "SpecError",
    "Sweep",
    "SweepSpec",
    "load_spec",
    "parse_spec",
    "plan_sweep",
    "run_sweep",
    "sweep_status",
    "fit_sweep",
    "report_sweep",
]
