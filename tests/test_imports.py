"""Light workers: a Ray worker imports only what it trains with.

Each check runs in a fresh interpreter, so a module some other test already imported cannot hide
an import the workload itself makes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workloads.api import BUILTIN_WORKLOADS

# The driver's analysis and tracking stack, and torch, which a workload imports only to train.
HEAVY = ("mlflow", "scipy", "pandas", "torch")


def modules_loaded_by(statement: str) -> list[str]:
    """Which of HEAVY a fresh interpreter has in sys.modules after running `statement`."""
    probe = f"import json, sys\n{statement}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(BUILTIN_WORKLOADS))
def test_importing_a_builtin_workload_pulls_in_no_heavy_module(name):
    module = BUILTIN_WORKLOADS[name].split(":")[0]
    assert modules_loaded_by(f"from workloads.api import resolve_workload\nresolve_workload({name!r})") == []
    assert modules_loaded_by(f"import {module}") == []


def test_compute_is_light_and_the_api_names_still_resolve():
    assert modules_loaded_by("import orchestrator.compute") == []
    assert modules_loaded_by("import orchestrator") == []
    # the package's names are imported on first use, and then work as before
    assert "mlflow" in modules_loaded_by("from orchestrator import run_sweep")
    import orchestrator
    from orchestrator.sweep import run_sweep

    assert orchestrator.run_sweep is run_sweep
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        orchestrator.no_such_name  # noqa: B018
