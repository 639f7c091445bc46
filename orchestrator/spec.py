"""The sweep file: pydantic models of what a user asks for, validated before anything runs.

A spec names a workload, the axes of its grid, fixed parameters, resources per trial and where
results go. Every error names the field it was found in; unknown keys list the valid ones.

The file is read strictly (see `load_yaml`): UTF-8 only, a size limit, YAML 1.2's core types (only
`true`/`false` are booleans), duplicate keys refused, a plain value that YAML 1.1 would read as
something else (`on`, `010`, `1:30`, a date) refused, and a limit on what aliases may expand to.
Numbers are taken as written: a number field refuses text and booleans, sizes, rates and budgets
must be finite and below sane bounds, and an axis holds values of one type.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.redact import redact_uri

# Tracking stores MLflow accepts that make sense for a sweep; anything else is a typo.
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "file")

# A spec lists settings, not data: a few KiB in practice. The limits keep a hostile or mistaken
# file (a 50 MB axis, an alias bomb) from taking minutes and gigabytes before it is refused.
MAX_SPEC_BYTES = 1 << 20
MAX_YAML_VALUES = 100_000  # scalars and collections, counted after aliases are expanded
MAX_YAML_DEPTH = 32  # nesting of mappings and lists

# Bounds no sweep needs to exceed. Budgets: the largest training runs reported so far are ~5e26 FLOPs.
MAX_BUDGET_FLOPS = 1e28
MAX_NUMBER = 1e30  # any number in axes or params (a float beyond this is a typo or an overflow)
MAX_INT = 2**63 - 1  # integers must fit the 64 bits that torch, numpy and the tracking store use
MAX_TRIALS = 1_000_000  # a grid larger than this is refused even with --yes: expanding it alone takes minutes
MAX_DURATION_S = 7 * 24 * 3600.0


class SpecError(ValueError):
    """A sweep spec is wrong; the message names the file, the field and the offending value."""


# -- reading the file -----------------------------------------------------------------------------

_TAG = "tag:yaml.org,2002:"
_YAML12_PATTERNS = {  # YAML 1.2's core schema (spec 1.2.2, section 10.3.2)
    "null": (r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    "bool": (r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    "int": (r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    "float": (
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+.0123456789"),
    ),
}


class _Yaml12Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML's safe loader (libyaml's parser where present) resolving plain scalars by YAML 1.2."""

    yaml_implicit_resolvers: dict = {}


for _name, (_pattern, _first) in _YAML12_PATTERNS.items():
    _Yaml12Loader.add_implicit_resolver(_TAG + _name, re.compile(_pattern), _first)

# YAML 1.1's resolver and constructor (PyYAML's default), to spot plain values the versions read differently.
_YAML11 = yaml.SafeLoader("")
_YAML11_MEANING = {"timestamp": "a date", "merge": "a merge key", "value": "a value key"}
_YAML11_HINT = {
    "bool": "write true or false, or quote it for text",
    "timestamp": "quote it for text",
    "value": "quote it for text",
    "merge": "merge keys are not supported; write the keys out",
}


def _where(path: tuple, node: yaml.Node) -> str:
    line = f"line {node.start_mark.line + 1}"
    if len(path) > 6:  # an alias loop: the first steps say where it starts
        path = (*path[:6], "...")
    return f"{'.'.join(map(str, path))} ({line})" if path else line


class _Builder:
    """Turns a composed YAML node graph into plain Python values, refusing what a spec must not hold.

    PyYAML's own constructor keeps the last of two duplicate keys and expands aliases without
    bound, so the graph is walked here, counting every value an alias expands to.
    """

    def __init__(self, source: str):
        self.source = source
        self.values = 0

    def error(self, path: tuple, node: yaml.Node, message: str) -> SpecError:
        return SpecError(f"{self.source}: {_where(path, node)}: {message}")

    def build(self, node: yaml.Node, path: tuple = (), depth: int = 0) -> Any:
        self.values += 1
        if self.values > MAX_YAML_VALUES:
            raise self.error(path, node, f"more than {MAX_YAML_VALUES} values once aliases are expanded; write the spec out")
        if depth > MAX_YAML_DEPTH:
            raise self.error(path, node, f"nested deeper than {MAX_YAML_DEPTH} levels (lists in lists, or an alias inside itself)")
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, yaml.SequenceNode) and node.tag == _TAG + "seq":
            return [self.build(child, (*path, i), depth + 1) for i, child in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode) and node.tag == _TAG + "map":
            mapping: dict[Any, Any] = {}
            lines: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise self.error(path, key_node, "a key must be a plain name, not a list or mapping")
                key = self.scalar(key_node, path)
                if key in mapping:
                    raise self.error((*path, key), key_node, f"duplicate key; it is already given on line {lines[key]}")
                lines[key] = key_node.start_mark.line + 1
                mapping[key] = self.build(value_node, (*path, key), depth + 1)
            return mapping
        raise self.error(path, node, f"the YAML tag {node.tag.replace(_TAG, '!!')} is not allowed in a spec (a spec is data)")

    def scalar(self, node: yaml.ScalarNode, path: tuple) -> Any:
        kind = node.tag.removeprefix(_TAG) if node.tag.startswith(_TAG) else None
        value = node.value
        if not node.style:  # plain (unquoted; libyaml says '', PyYAML None): typed by rules that changed in YAML 1.2
            self.refuse_ambiguous(node, path, kind)
        if kind == "str":
            return value
        if kind in _YAML12_PATTERNS and re.match(_YAML12_PATTERNS[kind][0], value):
            if kind == "null":
                return None
            if kind == "bool":
                return value.lower() == "true"
            if kind == "int":
                return int(value, 0) if value[:2] in ("0o", "0x") else int(value, 10)
            return float(value.replace(".", "", 1) if value.lstrip("+-").lower() in (".inf", ".nan") else value)
        if kind in _YAML12_PATTERNS:
            raise self.error(path, node, f"{value!r} is not a valid !!{kind}")
        raise self.error(path, node, f"the YAML tag {node.tag.replace(_TAG, '!!')} is not allowed in a spec (a spec is data)")

    def refuse_ambiguous(self, node: yaml.ScalarNode, path: tuple, kind: str | None) -> None:
        """Refuse a plain value YAML 1.1 reads differently (`on` as true, `010` as 8, `1:30` as 90):
        which one a reader or another tool applies is a guess, so the spec must say it plainly."""
        value = node.value
        if kind not in _YAML12_PATTERNS and kind != "str":
            return  # another tag: refused by `scalar`
        kind_11 = _YAML11.resolve(yaml.ScalarNode, value, (True, False)).removeprefix(_TAG)
        if kind_11 == "str" or (kind_11 == kind and kind != "int"):
            return  # null, true/false and floats read alike where both versions type them
        quoted = yaml.ScalarNode(node.tag, value, node.start_mark, node.end_mark, style="'")  # read by 1.2 alone
        if kind_11 in ("bool", "int", "float"):
            read_11 = repr(_YAML11.construct_object(yaml.ScalarNode(_TAG + kind_11, value)))
            read_11 = f"the boolean {read_11.lower()}" if kind_11 == "bool" else read_11
            if kind_11 == kind == "int" and read_11 == repr(self.scalar(quoted, path)):
                return
        else:
            read_11 = _YAML11_MEANING.get(kind_11, f"YAML 1.1's {kind_11!r}")
        read_12 = "text" if kind == "str" else repr(self.scalar(quoted, path))
        hint = _YAML11_HINT.get(kind_11, "write it in plain decimal, or quote it for text")
        raise self.error(path, node, f"{value} is {read_11} in YAML 1.1 but {read_12} in YAML 1.2; {hint}")


def read_spec_text(path: Path) -> str:
    """The spec file as text: a regular file of at most MAX_SPEC_BYTES, UTF-8, no control characters."""
    try:
        if path.exists() and not path.is_file():
            raise SpecError(f"{path}: not a spec file (a folder or a device)")
        with open(path, "rb") as file:
            data = file.read(MAX_SPEC_BYTES + 1)
    except OSError as err:
        raise SpecError(f"{path}: cannot read spec ({err.strerror})") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES >> 10} KiB; a spec lists settings, not data")
    for bom, encoding in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if data.startswith(bom):
            raise SpecError(f"{path}: encoded as {encoding}; save the spec as UTF-8")
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise SpecError(f"{path}: line {line}: a NUL byte; this is a binary file (or UTF-16/32), and a spec is UTF-8 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SpecError(
            f"{path}: line {line}: byte 0x{data[err.start]:02x} is not UTF-8 (a Latin-1 or other 8-bit file?); save the spec as UTF-8"
        ) from None
    control = re.search(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]", text)
    if control:
        line = text[: control.start()].count("\n") + 1
        raise SpecError(f"{path}: line {line}: control character U+{ord(control.group()):04X}; a spec is plain text")
    return text


def load_yaml(text: str, source: str = "<spec>") -> Any:
    """Parse one YAML document into plain values, strictly (see the module docstring)."""
    try:
        node = yaml.compose(text, Loader=_Yaml12Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context, problem = getattr(err, "context", None), getattr(err, "problem", None)
        problem = " ".join(filter(None, (context, problem))) or str(err).splitlines()[0]
        raise SpecError(f"{source}: YAML syntax error: {where}{problem}") from None
    except RecursionError:  # PyYAML's pure-Python composer, where libyaml is missing
        raise SpecError(f"{source}: nested too deeply to parse") from None
    return None if node is None else _Builder(source).build(node)


# -- the models -------------------------------------------------------------------------------


def _visible(text: str) -> str:
    if not text.strip() or not text.isprintable():
        raise ValueError(f"{text!r} needs a visible character and no control characters")
    return text


def _number_in_bounds(value: Any, where: str = "") -> None:
    """Refuse a number no size, rate or budget can be: NaN, infinite, beyond MAX_NUMBER or 64 bits."""
    at = f" at {where}" if where else ""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value}{at} is not a finite number")
    if isinstance(value, float) and abs(value) > MAX_NUMBER:
        raise ValueError(f"{value:g}{at} is beyond {MAX_NUMBER:g}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ValueError(f"{value}{at} does not fit in 64 bits")


def _axis_value(value: Any) -> Any:
    if isinstance(value, str):
        return _visible(value)
    if not isinstance(value, (bool, int, float)):
        raise ValueError(f"{'null' if value is None else repr(value)} is not a number, text or true/false")
    _number_in_bounds(value)
    return value


def _param_value(value: Any, where: str = "") -> Any:
    """A fixed param may be a nested list or mapping; every number in it must be in bounds."""
    if isinstance(value, dict):
        for key, item in value.items():
            _param_value(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _param_value(item, f"{where}[{i}]")
    else:
        _number_in_bounds(value, where)
    return value


Name = Annotated[str, AfterValidator(_visible)]
AxisValue = Annotated[Any, AfterValidator(_axis_value)]
ParamValue = Annotated[Any, AfterValidator(_param_value)]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    return "text" if isinstance(value, str) else "numbers"


class _Strict(BaseModel):
    # strict: a number field takes a number as written, never '2' or true; allow_inf_nan: no size,
    # rate, budget or duration of a sweep is infinite.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _scheme(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""


class Tracking(_Strict):
    """Where results go: MLflow is the only record of a sweep."""

    uri: str = "sqlite:///scalesweep.db"
    experiment: Name | None = Field(default=None, max_length=500, description="defaults to the sweep's name")
    artifact_location: Name | None = Field(
        default=None, description="only used when the experiment is created; defaults to ./mlartifacts beside a SQLite file"
    )
    max_outage_s: float = Field(
        default=300.0,
        gt=0,
        le=MAX_DURATION_S,
        description="how long (seconds) to retry a tracking server that is down before the sweep stops",
    )

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str) -> str:
        shown = redact_uri(uri)  # a URI may carry a password: never echo it
        scheme = _scheme(uri)
        if scheme not in TRACKING_SCHEMES:
            raise ValueError(f"{shown!r} is not a tracking URI; expected one of the schemes {', '.join(TRACKING_SCHEMES)}")
        if scheme == "sqlite" and not uri.startswith("sqlite:///"):
            raise ValueError(f"{shown!r}: a SQLite URI needs three slashes, e.g. sqlite:///scalesweep.db")
        if scheme == "sqlite" and (uri.split("?", 1)[0] in ("sqlite:///", "sqlite:///:memory:") or "mode=memory" in uri):
            raise ValueError(f"{shown!r} is an in-memory store, which keeps nothing: name a file, e.g. sqlite:///scalesweep.db")
        if scheme in ("http", "https") and not re.match(r"^https?://([^/@\s]+@)?[^/:@\s]+(:\d{1,5})?(/\S*)?$", uri):
            raise ValueError(f"{shown!r} is not a valid http(s) URL")
        if scheme == "file" and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
            raise ValueError(
                f"{shown!r}: MLflow 3 opens file: stores only with MLFLOW_ALLOW_FILE_STORE=true; use sqlite:///path/to/mlflow.db"
            )
        if not uri.isprintable() or any(c.isspace() for c in uri):
            raise ValueError(f"{shown!r} is not a tracking URI: it holds spaces or control characters")
        return uri


class Resources(_Strict):
    """Resources one trial (or one worker slot) asks Ray for, in Ray Tune's vocabulary."""

    cpu: float = Field(default=1.0, gt=0, le=4096)
    gpu: float | Literal["auto"] = Field(
        default="auto", description="'auto': a fraction of a GPU when the cluster has GPUs, none otherwise"
    )
    workers_per_gpu: int = Field(default=8, ge=1, le=64, description="worker slots sharing one GPU when gpu is 'auto'")
    custom_resources: dict[Name, Annotated[float, Field(gt=0)]] = Field(
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

    max_retries: int = Field(default=2, ge=0, le=100, description="re-runs of a trial after its worker or node died")
    max_workers: int | None = Field(default=None, ge=1, le=100_000, description="cap on concurrent worker actors")
    mode: Literal["auto", "pack", "single"] = Field(
        default="auto", description="pack: train trials of one model shape together (vmapped); single: one at a time"
    )
    max_trials: int = Field(default=5000, ge=1, le=MAX_TRIALS, description="grids larger than this need --yes")
    checkpoint_dir: Name | None = Field(
        default="checkpoints",
        description="folder for checkpoints of long trials, one subfolder per trial_key; relative paths are "
        "taken from where the sweep is run; null turns checkpointing off",
    )
    checkpoint_every_s: float = Field(
        default=300.0, gt=0, le=MAX_DURATION_S, description="wall seconds between a trial's checkpoints"
    )


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
    split_by: list[str] = Field(
        default_factory=list,
        description="axes (e.g. [weight_decay]) fitted apart: a law and a double-descent curve per value, as for label noise",
    )
    n_params: Literal["non_embedding", "with_embeddings"] = Field(
        default="non_embedding", description="which parameter count N the fits use, where the workload reports both"
    )


class SweepSpec(_Strict):
    """One sweep: a workload, the grid of its axes, fixed params and where results go."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    workload: str = Field(min_length=1, description="a built-in name or an import path 'package.module:Class'")
    description: str = ""
    axes: dict[Name, list[AxisValue]] = Field(
        description="each key a workload parameter, each value the list of its grid values"
    )
    params: dict[Name, ParamValue] = Field(default_factory=dict, description="fixed workload parameters shared by every trial")
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
        if not re.match(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$", ref, re.ASCII):
            raise ValueError(f"{ref!r} is neither a built-in workload name nor an import path 'package.module:Class'")
        return ref

    @field_validator("axes")
    @classmethod
    def _axes_valid(cls, axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not axes:
            raise ValueError("a sweep needs at least one axis")
        for key, values in axes.items():
            if not values:
                raise ValueError(f"axis {key!r} is empty")
            kinds = sorted({_kind(v) for v in values})
            if len(kinds) > 1:
                raise ValueError(f"axis {key!r} mixes {', '.join(kinds)}: {_shown(values)}; give every value of an axis one type")
            if len(set(values)) != len(values):  # 10 and 10.0 are one value
                raise ValueError(f"axis {key!r} repeats a value: {_shown(values)}")
        return axes

    @field_validator("compute_budgets")
    @classmethod
    def _budgets_valid(cls, budgets: list[float] | None) -> list[float] | None:
        if budgets is None:
            return None
        if not budgets:
            raise ValueError("give at least one budget (FLOPs) or leave compute_budgets out")
        for budget in budgets:
            if not 0 < budget <= MAX_BUDGET_FLOPS:
                raise ValueError(
                    f"{budget:g} FLOPs: a budget must be positive and at most {MAX_BUDGET_FLOPS:g} "
                    "(the largest training runs so far used about 5e26)"
                )
        if len(set(budgets)) != len(budgets):
            raise ValueError(f"a budget is repeated: {budgets}")
        return budgets

    @model_validator(mode="after")
    def _axes_and_params_disjoint(self) -> SweepSpec:
        both = sorted(set(self.axes) & set(self.params))
        if both:
            raise ValueError(f"params: {both} given both as axes and as fixed params; keep each in one place")
        for field in ("envelope", "split_by"):
            unknown = [a for a in getattr(self.fit, field) if a not in self.axes]
            if unknown:
                raise ValueError(f"fit.{field}: {unknown[0]!r} is not an axis of this sweep (axes: {', '.join(self.axes)})")
        both = sorted(set(self.fit.envelope) & set(self.fit.split_by))
        if both:
            raise ValueError(f"fit.split_by: {both[0]!r} is also in fit.envelope; an axis is either fitted apart or enveloped")
        if self.grid_size > MAX_TRIALS:
            raise ValueError(f"axes: the grid has {self.grid_size:,} trials; a sweep holds at most {MAX_TRIALS:,}")
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


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
            if "input" in problem and problem["type"] not in ("value_error",) and loc[-1:] != ("uri",):
                message += f" (got {_shown(problem['input'])})"
        lines.append(f"{source}: {where}: {message}" if loc else f"{source}: {message}")
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
    """Read a YAML spec strictly (see `load_yaml`): a spec is data and never constructs Python objects."""
    path = Path(path)
    return parse_spec(load_yaml(read_spec_text(path), str(path)), str(path))
