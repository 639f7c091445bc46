"""Expand a spec's axes into trials, each with a `trial_key` that identifies it forever.

The key is a hash of the workload reference and the trial's fully resolved config (workload defaults
included), so it does not depend on axis order, grid order or which run launched it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from orchestrator.spec import SpecError, SweepSpec
from workloads.api import TrialSize, Workload, WorkloadError, resolve_workload


@dataclass(frozen=True)
class Trial:
    """One point of the grid: a workload, its resolved config and what it costs."""

    key: str
    workload: str
    config: dict[str, Any] = field(hash=False)
    size: TrialSize = field(hash=False)

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.config.items()))


def trial_key(workload: str, config: dict[str, Any]) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of workload and config."""
    canonical = json.dumps({"workload": workload, "config": config}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_workload(spec: SweepSpec) -> Workload:
    try:
        return resolve_workload(spec.workload)()
    except WorkloadError as err:
        raise SpecError(f"workload: {err}") from None


def _config_error(err: ValidationError, spec: SweepSpec, point: dict[str, Any]) -> SpecError:
    lines = []
    for problem in err.errors():
        name = str(problem["loc"][0]) if problem["loc"] else "<config>"
        section = "axes" if name in spec.axes else "params"
        if problem["type"] == "extra_forbidden":
            valid = ", ".join(spec_workload_fields(spec))
            lines.append(f"{section}.{name}: not a parameter of workload {spec.workload!r}; valid: {valid}")
        elif problem["type"] == "missing":
            lines.append(f"params.{name}: required by workload {spec.workload!r} but given neither as axis nor param")
        else:
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{section}.{name}: {message} (got {point.get(name)!r})")
    return SpecError("\n".join(dict.fromkeys(lines)))


def spec_workload_fields(spec: SweepSpec) -> list[str]:
    return list(load_workload(spec).Config.model_fields)


def expand_grid(spec: SweepSpec, workload: Workload | None = None) -> list[Trial]:
    """Every combination of axis values, merged with fixed params and validated by the workload."""
    workload = workload or load_workload(spec)
    names = list(spec.axes)
    trials: dict[str, Trial] = {}  # by key: two points that resolve to one config are one trial
    for values in itertools.product(*(spec.axes[name] for name in names)):
        point = {**spec.params, **dict(zip(names, values))}
        try:
            config = workload.validate_config(point)
        except ValidationError as err:
            raise _config_error(err, spec, point) from None
        resolved = config.model_dump(mode="json")
        key = trial_key(spec.workload, resolved)
        trials.setdefault(key, Trial(key=key, workload=spec.workload, config=resolved, size=workload.size(config)))
    return list(trials.values())
