"""scalesweep: scaling-law sweeps on Ray, recorded in MLflow, fitted with scipy.

    from orchestrator import load_spec, run_sweep, fit_sweep, report_sweep
    spec = load_spec("examples/mnist1d_demo.yaml")
    outcome = run_sweep(spec)          # resumable: finished trials are skipped
    fits = fit_sweep(spec)             # SweepFits: every applicable fit; fits.summary()
"""

from orchestrator.spec import SpecError, SweepSpec, load_spec, parse_spec

_SWEEP_API = ("Sweep", "plan_sweep", "run_sweep", "sweep_status", "fit_sweep", "report_sweep")


def __getattr__(name: str):
    # The sweep API (MLflow, pandas, scipy) loads on first use: a Ray worker importing a workload
    # that uses orchestrator.compute must not pay for, or depend on, the tracking stack.
    if name in _SWEEP_API:
        from orchestrator import sweep

        return getattr(sweep, name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")


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
