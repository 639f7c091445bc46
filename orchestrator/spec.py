"""The sweep file: pydantic models of what a user asks for, validated before anything runs.

A spec names a workload, the axes of its grid, fixed parameters, resources per trial and where
results go. Every error names the field it was found in; unknown keys list the valid ones.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Scalar = Union[bool, int, float, str]

# Tracking stores MLflow accepts that make sense for a sweep; anything else is a typo.
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "file")


class SpecError(ValueError):
    """A sweep spec is wrong; the message names the file, the field and the offending value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tracking(_Strict):
    """Where results go: MLflow is the only record of a sweep."""

    uri: str = "sqlite:///scalesweep.db"
    experiment: str | None = Field(default=None, description="defaults to the sweep's name")
    artifact_location: str | None = Field(
        default=None, description="only used when the experiment is created; defaults to ./mlartifacts beside a SQLite file"
    )
    max_outage_s: float = Field(
        default=300.0, gt=0, description="how long (seconds) to retry a tracking server that is down before the sweep stops"
    )

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str) -> str:
        scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
        if scheme not in TRACKING_SCHEMES:
            raise ValueError(f"{uri!r} is not a tracking URI; expected one of the schemes {', '.join(TRACKING_SCHEMES)}")
        if scheme == "sqlite" and not uri.startswith("sqlite:///"):
            raise ValueError(f"{uri!r}: a SQLite URI needs three slashes, e.g. sqlite:///scalesweep.db")
        if scheme == "sqlite" and (uri.split("?", 1)[0] in ("sqlite:///", "sqlite:///:memory:") or "mode=memory" in uri):
            raise ValueError(f"{uri!r} is an in-memory store, which keeps nothing: name a file, e.g. sqlite:///scalesweep.db")
        if scheme in ("http", "https") and not re.match(r"^https?://[^/:\s]+(:\d+)?(/\S*)?$", uri):
            raise ValueError(f"{uri!r} is not a valid http(s) URL")
        return uri


class Resources(_Strict):
    """Resources one trial (or one worker slot) asks Ray for, in Ray Tune's vocabulary."""

    cpu: float = Field(default=1.0, gt=0)
    gpu: float | Literal["auto"] = Field(
        default="auto", description="'auto': a fraction of a GPU when the cluster has GPUs, none otherwise"
    )
    workers_per_gpu: int = Field(default=8, ge=1, description="worker slots sharing one GPU when gpu is 'auto'")
    custom_resources: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description="Ray custom resources per worker, e.g. {gpu_1x_spot: 0.125}: only nodes that advertise them "
        "run trials, and an autoscaler launches only node types that have them",
    )

    @field_validator("gpu")
    @classmethod
    def _gpu_range(cls, gpu: float | str) -> float | str:
        if gpu != "auto" and not 0 <= gpu <= 64:
            raise ValueError(f"gpu must be 'auto' or between 0 and 64, got {gpu}")
        return gpu


class Execution(_Strict):
    """How trials are run: retries, worker count, packing and a guard against huge grids."""

    max_retries: int = Field(default=2, ge=0, description="re-runs of a trial after its worker or node died")
    max_workers: int | None = Field(default=None, ge=1, description="cap on concurrent worker actors")
    mode: Literal["auto", "pack", "single"] = Field(
        default="auto", description="pack: train trials of one model shape together (vmapped); single: one at a time"
    )
    max_trials: int = Field(default=5000, ge=1, description="grids larger than this need --yes")
    checkpoint_dir: str | None = Field(
        default="checkpoints",
        description="folder for checkpoints of long trials, one subfolder per trial_key; relative paths are "
        "taken from where the sweep is run; null turns checkpointing off",
    )
    checkpoint_every_s: float = Field(default=300.0, gt=0, description="wall seconds between a trial's checkpoints")


class Schedule(_Strict):
    """The sweep's learning-rate schedule. kind 'wsd': warmup-stable-decay (Hägele et al. 2024): each
    model size trains once as a stable trunk and each data size D as a cooldown branched from the
    trunk's checkpoint at D x (1 - cooldown_fraction)."""

    kind: Literal["wsd"]
    warmup: int = Field(ge=0, description="linear warmup to the peak learning rate, in the workload's data units (tokens, samples)")
    cooldown_fraction: float = Field(description="share of each data size spent cooling down, in (0, 1)")
    cooldown_shape: Literal["linear", "1-sqrt"] = Field(default="1-sqrt", description="how the rate falls to its final value")

    @field_validator("cooldown_fraction")
    @classmethod
    def _fraction_inside(cls, fraction: float) -> float:
        if not 0 < fraction < 1:
            raise ValueError(f"must lie strictly between 0 and 1, got {fraction}")
        return fraction


class FitOptions(_Strict):
    """How `fit` and `report` analyse the sweep; their command-line options override these."""

    envelope: list[str] = Field(
        default_factory=list, description="axes (e.g. [lr]) whose best setting per size the fits use, instead of pooling every trial"
    )
    n_params: Literal["non_embedding", "with_embeddings"] = Field(
        default="non_embedding", description="which parameter count N the fits use, where the workload reports both"
    )


class SweepSpec(_Strict):
    """One sweep: a workload, the grid of its axes, fixed params and where results go."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    workload: str = Field(min_length=1, description="a built-in name or an import path 'package.module:Class'")
    description: str = ""
    axes: dict[str, list[Scalar]] = Field(description="each key a workload parameter, each value the list of its grid values")
    params: dict[str, Any] = Field(default_factory=dict, description="fixed workload parameters shared by every trial")
    compute_budgets: list[float] | None = Field(
        default=None,
        description="training compute budgets C (FLOPs): each trial of each budget gets D = C / (6 N) of the "
        "workload's data size (tokens), N from its model-size axis (IsoFLOP profiles)",
    )
    schedule: Schedule | None = Field(
        default=None, description="a learning-rate schedule for the whole sweep; 'wsd' branches each data size from one trunk per model size"
    )
    resources_per_trial: Resources = Resources()
    tracking: Tracking = Tracking()
    execution: Execution = Execution()
    fit: FitOptions = FitOptions()

    @field_validator("workload")
    @classmethod
    def _workload_ref(cls, ref: str) -> str:
        if not re.match(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$", ref):
            raise ValueError(f"{ref!r} is neither a built-in workload name nor an import path 'package.module:Class'")
        return ref

    @field_validator("axes")
    @classmethod
    def _axes_nonempty(cls, axes: dict[str, list[Scalar]]) -> dict[str, list[Scalar]]:
        if not axes:
            raise ValueError("a sweep needs at least one axis")
        for key, values in axes.items():
            if not values:
                raise ValueError(f"axis {key!r} is empty")
            if len(set(map(repr, values))) != len(values):
                raise ValueError(f"axis {key!r} repeats a value: {values}")
        return axes

    @field_validator("compute_budgets")
    @classmethod
    def _budgets_valid(cls, budgets: list[float] | None) -> list[float] | None:
        if budgets is None:
            return None
        if not budgets:
            raise ValueError("give at least one budget (FLOPs) or leave compute_budgets out")
        bad = [c for c in budgets if not (math.isfinite(c) and c > 0)]
        if bad:
            raise ValueError(f"budgets must be positive, finite FLOPs; got {bad}")
        if len(set(budgets)) != len(budgets):
            raise ValueError(f"a budget is repeated: {budgets}")
        return budgets

    @model_validator(mode="after")
    def _axes_and_params_disjoint(self) -> SweepSpec:
        both = sorted(set(self.axes) & set(self.params))
        if both:
            raise ValueError(f"{both} given both as axes and as fixed params; keep each in one place")
        unknown = [a for a in self.fit.envelope if a not in self.axes]
        if unknown:
            raise ValueError(f"fit.envelope: {unknown[0]!r} is not an axis of this sweep (axes: {', '.join(self.axes)})")
        return self

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def grid_size(self) -> int:
        size = len(self.compute_budgets) if self.compute_budgets else 1
        for values in self.axes.values():
            size *= len(values)
        return size


def _field_path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "<top level>"


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed at the level of `loc` (whose last part is the unknown key)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        # An optional section (`Schedule | None`) lists the keys of its model.
        models = [a for a in (annotation, *get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not models:
            return []
        model = models[0]
    return list(model.model_fields)


def format_validation_error(err: ValidationError, source: str, model: type[BaseModel] = SweepSpec) -> str:
    """One line per problem: 'source: field: message'."""
    lines = []
    for problem in err.errors():
        loc = problem["loc"]
        where = _field_path(loc)
        if problem["type"] == "extra_forbidden":
            valid = _valid_keys(model, loc)
            message = f"unknown key; valid keys here: {', '.join(valid)}" if valid else "unknown key"
        elif problem["type"] == "missing":
            message = "required field is missing"
        else:
            message = problem["msg"].removeprefix("Value error, ")
            if "input" in problem and problem["type"] not in ("value_error",):
                message += f" (got {problem['input']!r})"
        lines.append(f"{source}: {where}: {message}")
    return "\n".join(lines)


def parse_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    """Validate an already-loaded mapping into a SweepSpec, or raise SpecError."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a spec must be a mapping of keys to values, got {type(data).__name__}")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, source)) from None


def load_spec(path: str | Path) -> SweepSpec:
    """Read a YAML spec with the safe loader (a spec never constructs Python objects)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SpecError(f"{path}: cannot read spec ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(f"{path}: YAML syntax error: {where}{problem}") from None
    return parse_spec(data, str(path))
