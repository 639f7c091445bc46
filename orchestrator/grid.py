"""Expand a spec's axes into trials, each with a `trial_key` that identifies it forever.

The key is a hash of the workload reference and the trial's fully resolved config (workload defaults
included), so it does not depend on axis order, grid order or which run launched it.

With a WSD `schedule:` (warmup-stable-decay, Hägele et al. 2024; OLMo-core's model ladder decays
its stable runs the same way) every (N, D) point becomes a cooldown **branch** that depends on one
stable **trunk** per model size (and per seed, learning rate, any other axis): the trunk runs to the
largest branch point D x (1 - cooldown_fraction), leaving a checkpoint at each; the key of either
holds the schedule too. Compute is accounted so nothing is counted twice: a branch's `spent_flops`
is its cooldown plus its share of the trunk (each stretch of trunk split evenly among the branches
that start after it), a trunk's is 0, and the sweep's total is their sum.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.spec import Schedule, SpecError, SweepSpec
from workloads.api import (
    CheckpointPolicy,
    TrialSize,
    Workload,
    WorkloadError,
    WSDPart,
    WSDSchedule,
    branch_checkpoint_dir,
    make_workload,
)


@dataclass(frozen=True)
class WSDRole:
    """A trial's place in a WSD sweep, as planned on the driver.

    part: what the workload trains (trunk or branch). trunk_key: a branch's trunk. start_checkpoint:
    the trunk's folder a branch starts from (it waits until that exists). branch_start: the trunk's
    data size at the branch point (data units, whole steps). cooldown_flops: what a branch trains
    itself (FLOPs); trunk_share_flops: its share of its trunk (FLOPs).
    """

    part: WSDPart
    trunk_key: str | None = None
    start_checkpoint: str | None = None
    branch_start: int | None = None
    cooldown_flops: float = 0.0
    trunk_share_flops: float = 0.0


@dataclass(frozen=True)
class Trial:
    """One point of the grid (or a WSD trunk): a workload, its resolved config and what it costs.

    compute_budget: the budget C (FLOPs) this trial's data size was derived from, when the spec gives
    compute_budgets. checkpoint: where the trial may checkpoint; not part of its identity. wsd: its
    part in a WSD sweep, None for a trial trained from scratch.
    """

    key: str
    workload: str
    config: dict[str, Any] = field(hash=False)
    size: TrialSize = field(hash=False)
    compute_budget: float | None = field(default=None, hash=False)
    checkpoint: CheckpointPolicy | None = field(default=None, hash=False, compare=False)
    wsd: WSDRole | None = field(default=None, hash=False, compare=False)

    @property
    def label(self) -> str:
        label = ",".join(f"{k}={v}" for k, v in sorted(self.config.items()))
        return f"trunk:{label}" if self.is_trunk else label

    @property
    def is_trunk(self) -> bool:
        return self.wsd is not None and self.wsd.part.kind == "trunk"

    @property
    def depends_on(self) -> str | None:
        """The trial_key of the trunk whose checkpoint this trial starts from, or None."""
        return self.wsd.trunk_key if self.wsd else None

    @property
    def run_flops(self) -> float:
        """What this trial's own run computes (FLOPs): a branch only its cooldown."""
        if self.wsd is not None and self.wsd.part.kind == "branch":
            return self.wsd.cooldown_flops
        return self.size.train_flops

    @property
    def spent_flops(self) -> float:
        """What this trial's result cost (FLOPs): a branch its cooldown plus its share of its trunk, a
        trunk nothing (its compute is its branches'), any other trial its train_flops. Summed over a
        sweep's trials: what the sweep spends."""
        if self.wsd is None:
            return self.size.train_flops
        return self.wsd.cooldown_flops + self.wsd.trunk_share_flops


def trial_key(workload: str, config: dict[str, Any], schedule: dict[str, Any] | None = None) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of workload and config (and the WSD part a
    trial trains, so a branch or trunk never shares a key with a trial trained from scratch)."""
    identity: dict[str, Any] = {"workload": workload, "config": config}
    if schedule is not None:
        identity["schedule"] = schedule
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
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
    """Every combination of axis values (and compute budgets), merged with fixed params and validated
    by the workload; with a WSD schedule, its trunks first, then each point as a branch (plan_wsd)."""
    workload = workload or load_workload(spec)
    if spec.schedule is not None:
        check_wsd_spec(spec, workload)  # before the points: a missing data axis is the schedule's problem
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
    if spec.schedule is not None:
        return plan_wsd(spec, workload, list(trials.values()))
    return list(trials.values())


# -- warmup-stable-decay: trunks and branches ------------------------------------------------------


def wsd_schedule(schedule: Schedule) -> WSDSchedule:
    return WSDSchedule(schedule.warmup, schedule.cooldown_fraction, schedule.cooldown_shape)


def check_wsd_spec(spec: SweepSpec, workload: Workload) -> None:
    if not workload.can_train_wsd:
        raise SpecError(
            f"schedule: workload {spec.workload!r} cannot start from a checkpoint with a schedule override "
            "(it has no train_wsd, see workloads/api.py); leave schedule out to train every point from scratch"
        )
    data = workload.data_size_param
    if not spec.compute_budgets and data not in spec.axes:
        raise SpecError(
            f"schedule: a WSD schedule branches each data size from one trunk per model size, but the spec has "
            f"neither a data axis (axes.{data}) nor compute_budgets"
        )
    if not spec.execution.checkpoint_dir:
        raise SpecError("execution.checkpoint_dir: a WSD schedule needs it: branches start from their trunk's checkpoints")


def _data_field(spec: SweepSpec, workload: Workload) -> str:
    return f"axes.{workload.data_size_param}" if workload.data_size_param in spec.axes else "compute_budgets"


def trunk_shares(branch_points: dict[int, TrialSize]) -> dict[int, float]:
    """Each branch's share of its trunk (FLOPs), by branch data size, from the trunk's size at each
    branch point: every stretch of trunk between branch points is split evenly among the branches
    that start after it, so the shares sum to the trunk's compute up to its last branch point."""
    share = dict.fromkeys(branch_points, 0.0)
    done = 0.0
    for size, here in sorted(branch_points.items(), key=lambda item: item[1].n_samples):
        later = [other for other, there in branch_points.items() if there.n_samples >= here.n_samples]
        for other in later:
            share[other] += (here.train_flops - done) / len(later)
        done = here.train_flops
    return share


def plan_wsd(spec: SweepSpec, workload: Workload, points: list[Trial]) -> list[Trial]:
    """One trunk per model size (every config value but the data size), then every point as a
    cooldown branch of its trunk, each part costliest first. Raises SpecError (naming the field)
    for a spec WSD cannot serve."""
    schedule, data = wsd_schedule(spec.schedule), workload.data_size_param
    groups: dict[str, list[Trial]] = {}
    for point in points:
        rest = {k: v for k, v in point.config.items() if k != data}
        groups.setdefault(json.dumps(rest, sort_keys=True), []).append(point)

    def sized(rest: dict[str, Any], data_size: int, why: str) -> tuple[dict[str, Any], TrialSize]:
        try:
            config = workload.validate_config({**rest, data: data_size})
        except ValidationError as err:
            reason = "; ".join(p["msg"].removeprefix("Value error, ") for p in err.errors())
            raise SpecError(f"{why}, which the workload rejects: {reason}") from None
        return config.model_dump(mode="json"), workload.size(config)

    trunks, branches = [], []
    for group in groups.values():
        rest = {k: v for k, v in group[0].config.items() if k != data}
        sizes = sorted({point.config[data] for point in group})
        starts = {size: schedule.cooldown_start(size) for size in sizes}
        for size, start in starts.items():
            if start < schedule.warmup or start == size:
                raise SpecError(
                    f"{_data_field(spec, workload)}: {data}={size} is shorter than schedule.warmup ({schedule.warmup}) plus "
                    f"its cooldown ({size - start} = round(schedule.cooldown_fraction x {size})); raise it, or lower the warmup"
                )
        # The trunk's data size at each branch point (whole steps, as the workload counts them).
        at = {size: sized(rest, start, f"schedule: the branch point of {data}={size} is {data}={start}") for size, start in starts.items()}
        trunk_config, trunk_size = sized(rest, max(starts.values()), f"schedule: the trunk of {rest} has {data}={max(starts.values())}")
        part = WSDPart("trunk", schedule, tuple(sizes))
        key = trial_key(spec.workload, trunk_config, {"part": "trunk", "warmup": schedule.warmup,
                        "cooldown_fraction": schedule.cooldown_fraction, "branch_sizes": sizes})  # fmt: skip
        checkpoint = checkpoint_policy(spec, key)
        trunks.append(Trial(key, spec.workload, trunk_config, trunk_size, None, checkpoint, WSDRole(part)))

        share = trunk_shares({size: sized_at for size, (_, sized_at) in at.items()})
        for point in group:
            size = point.config[data]
            if point.size.n_samples <= at[size][1].n_samples:
                raise SpecError(
                    f"schedule.cooldown_fraction: at {data}={size} the cooldown ({size - starts[size]}) rounds to no "
                    "training at all; raise cooldown_fraction or the data size"
                )
            role = WSDRole(
                WSDPart("branch", schedule, trunk_directory=checkpoint.directory),
                trunk_key=key,
                start_checkpoint=str(branch_checkpoint_dir(checkpoint.directory, starts[size])),
                branch_start=at[size][1].n_samples,
                cooldown_flops=point.size.train_flops - at[size][1].train_flops,
                trunk_share_flops=share[size],
            )
            branch_key = trial_key(spec.workload, point.config, {"part": "branch", "warmup": schedule.warmup,
                                   "cooldown_fraction": schedule.cooldown_fraction, "cooldown_shape": schedule.cooldown_shape})  # fmt: skip
            branches.append(replace(point, key=branch_key, checkpoint=checkpoint_policy(spec, branch_key), wsd=role))
    # Longest first (LPT): the costliest trunk starts first, and of the branches ready at once the
    # longest cooldown goes first, so the last to end is a short one.
    by_cost = lambda t: (-t.run_flops, t.key)  # noqa: E731
    return sorted(trunks, key=by_cost) + sorted(branches, key=by_cost)
