"""Expand a spec's axes into trials, each with a `trial_key` that identifies it forever.

The key is a hash of the workload reference and the trial's fully resolved config (workload defaults
included), so it does not depend on axis order, grid order or which run launched it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.spec import SpecError, SweepSpec
from workloads.api import CheckpointPolicy, TrialSize, Workload, WorkloadError, make_workload


@dataclass(frozen=True)
class Trial:
    """One point of the grid: a workload, its resolved config and what it costs.

    compute_budget: the budget C (FLOPs) this trial's data size was derived from, when the spec gives
    compute_budgets. checkpoint: where the trial may checkpoint; not part of its identity.
    """

    key: str
    workload: str
    config: dict[str, Any] = field(hash=False)
    size: TrialSize = field(hash=False)
    compute_budget: float | None = field(default=None, hash=False)
    checkpoint: CheckpointPolicy | None = field(default=None, hash=False, compare=False)

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.config.items()))


def trial_key(workload: str, config: dict[str, Any]) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of workload and config."""
    canonical = json.dumps({"workload": workload, "config": config}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_workload(spec: SweepSpec) -> Workload:
    try:
        return make_workload(spec.workload)
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


def checkpoint_policy(spec: SweepSpec, key: str) -> CheckpointPolicy | None:
    """The trial's own checkpoint folder, made absolute here on the driver so every worker agrees."""
    if not spec.execution.checkpoint_dir:
        return None
    directory = Path(spec.execution.checkpoint_dir).expanduser().absolute() / key
    return CheckpointPolicy(directory=str(directory), every_s=spec.execution.checkpoint_every_s)


def tokens_for_budget(budget_flops: float, n_params: int) -> int:
    """D = C / (6 N): the data size (tokens) that spends a compute budget C (FLOPs) on N parameters
    (Kaplan et al. 2020; Hoffmann et al. 2022's IsoFLOP profiles)."""
    return math.floor(budget_flops / (6.0 * n_params))


def _budget_points(spec: SweepSpec, workload: Workload, point: dict[str, Any]) -> list[tuple[dict[str, Any], float | None]]:
    """The point itself, or one point per compute budget with the data size that spends it."""
    if not spec.compute_budgets:
        return [(point, None)]
    data_param = workload.data_size_param
    if data_param in point:
        section = "axes" if data_param in spec.axes else "params"
        raise SpecError(f"{section}.{data_param}: compute_budgets sets the data size; leave {data_param} out")
    # N does not depend on the data size: size a provisional config with any data size it accepts.
    n_params = None
    for probe in (1, 10**6, 10**12):
        try:
            n_params = workload.size(workload.validate_config({**point, data_param: probe})).n_params
            break
        except ValidationError as err:
            invalid = err
    if n_params is None:
        raise _config_error(invalid, spec, point)  # the model-size config itself is wrong
    points = []
    for budget in spec.compute_budgets:
        tokens = tokens_for_budget(budget, n_params)
        try:
            workload.validate_config({**point, data_param: tokens})
        except ValidationError as err:  # the point was valid with a probe data size: this one is the problem
            model = {k: point[k] for k in spec.axes if k in point}
            reason = "; ".join(p["msg"].removeprefix("Value error, ") for p in err.errors())
            raise SpecError(
                f"compute_budgets: {budget:.3g} FLOPs at {model} (N={n_params} parameters) gives "
                f"{data_param}={tokens}, which the workload rejects: {reason}; raise the budget or drop the size"
            ) from None
        points.append(({**point, data_param: tokens}, budget))
    return points


def expand_grid(spec: SweepSpec, workload: Workload | None = None) -> list[Trial]:
    """Every combination of axis values (and compute budgets), merged with fixed params and validated by the workload."""
    workload = workload or load_workload(spec)
    names = list(spec.axes)
    trials: dict[str, Trial] = {}  # by key: two points that resolve to one config are one trial
    for values in itertools.product(*(spec.axes[name] for name in names)):
        for point, budget in _budget_points(spec, workload, {**spec.params, **dict(zip(names, values))}):
            try:
                config = workload.validate_config(point)
            except ValidationError as err:
                raise _config_error(err, spec, point) from None
            resolved = config.model_dump(mode="json")
            key = trial_key(spec.workload, resolved)
            trial = Trial(key, spec.workload, resolved, workload.size(config), budget, checkpoint_policy(spec, key))
            trials.setdefault(key, trial)
    return list(trials.values())
