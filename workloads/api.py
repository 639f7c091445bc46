"""The contract a workload implements: a model family and a data set, each indexed by size.

A team's own workload subclasses `Workload` and is named in a spec by its import path
(`package.module:Class`). That import path is the only way a spec runs code.

A workload never talks to MLflow: its train loop calls `reporter.report(epoch, **metrics)` once per
epoch; the orchestrator stores what it reports. A non-finite metric stops the trial as diverged.

Packs (optional): a workload that can train several trials of one model shape together (vmapped)
implements `pack_key(config)` (the shape: trials with equal keys may share a pack) and
`train_pack(configs, reporters)`. Without them every trial runs alone through `train`.

Warmup-stable-decay (optional): a workload that can start from a checkpoint at a given data size
with a schedule override implements `train_wsd(config, reporter, part)`; a spec's `schedule:` then
trains each model size once as a stable trunk and each data size as a short cooldown branched from
it (see `WSDPart`). Without it a spec with a schedule is refused.
"""

from __future__ import annotations

import importlib
import inspect
import math
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Hashable, Literal, Sequence

from pydantic import BaseModel

# Built-in workloads by short name; a spec may also give any 'package.module:Class'.
BUILTIN_WORKLOADS = {
    "mnist1d_mlp": "workloads.mnist1d_mlp:MNIST1DMLP",
    "tiny_lm": "workloads.tiny_lm:TinyLM",
    "random_features": "workloads.random_features:RandomFeatures",
}

# Metrics every built-in workload reports each epoch; dashboards and fits read these names.
STANDARD_METRICS = ("train_loss", "train_error", "test_loss", "test_error")


class WorkloadError(ValueError):
    """A workload reference cannot be resolved, or a config is not valid for it."""


class TrialDiverged(RuntimeError):
    """A reported metric became NaN or infinite; the trial stops and is marked diverged."""


@dataclass(frozen=True)
class TrialSize:
    """What a trial costs and how big it is; logged as tags and used by fits.

    n_params: trainable parameters N (parameters).
    n_samples: training set size D (samples, or tokens for language models).
    train_flops: training compute C (FLOPs), approximated as 6 * N * samples seen.
    n_params_with_embeddings: parameters including embeddings, where N leaves them out (parameters).
    train_flops_with_attention: C counting attention too, 6 N + 12 L d T per token (FLOPs).
    """

    n_params: int
    n_samples: int
    train_flops: float
    n_params_with_embeddings: int | None = None
    train_flops_with_attention: float | None = None


@dataclass(frozen=True)
class CheckpointPolicy:
    """Where one trial may keep its checkpoint and how often to write it.

    directory: a folder of this trial alone (keyed by its trial_key) that outlives the worker
    process, so a retry after a crash finds what the killed attempt wrote. every_s: wall seconds
    between checkpoints.
    """

    directory: str
    every_s: float


CooldownShape = Literal["linear", "1-sqrt"]


@dataclass(frozen=True)
class WSDSchedule:
    """A warmup-stable-decay learning rate (Hägele et al. 2024, arXiv 2405.18392), in data units
    (what the workload's data size counts: samples, tokens).

    warmup: data units of linear warmup to the peak learning rate, which is then held.
    cooldown_fraction: a run of data size D decays over its last round(cooldown_fraction x D) data units
    to the config's final learning rate; cooldown_shape how: 'linear', or '1-sqrt' (the rate falls as
    1 - sqrt(progress), the best shape Hägele et al. found).
    """

    warmup: int
    cooldown_fraction: float
    cooldown_shape: CooldownShape = "1-sqrt"

    def cooldown_start(self, data_size: int) -> int:
        """The data units after which a run of data size D starts to cool down (its branch point)."""
        return data_size - round(self.cooldown_fraction * data_size)

    def cooldown_factor(self, progress: float) -> float:
        """How much of (peak - final) learning rate is left `progress` (0 to 1) of the way through the cooldown."""
        progress = min(max(progress, 0.0), 1.0)
        return 1.0 - (math.sqrt(progress) if self.cooldown_shape == "1-sqrt" else progress)


@dataclass(frozen=True)
class WSDPart:
    """What one trial of a WSD sweep trains, passed to `Workload.train_wsd`. Data sizes in data units.

    kind 'trunk': warm up, then hold the peak rate up to the config's data size, never decaying. Write
      a checkpoint at each branch's cooldown start, `schedule.cooldown_start(D)` for D in branch_sizes,
      into `branch_checkpoint_dir(reporter.checkpoint.directory, start)`, and evaluate where each branch
      would, so a branch's history is that of a whole run. A retry resumes from the trunk's own
      latest checkpoint.
    kind 'branch': start from the checkpoint `trunk_directory` holds at `schedule.cooldown_start(D)`
      (D: the config's data size) and only cool down; it must end as `scratch` of the same config ends.
    kind 'scratch': the whole WSD run of the config's data size from step 0.
    """

    kind: Literal["trunk", "branch", "scratch"]
    schedule: WSDSchedule
    branch_sizes: tuple[int, ...] = ()
    trunk_directory: str | None = None


def branch_checkpoint_dir(trunk_directory: str, start: int) -> Path:
    """The folder a trunk leaves for the branches that start at `start` data units.

    It must appear whole: fill a temporary folder, then rename it into place (`os.replace`). The
    scheduler starts those branches as soon as it exists, while the trunk goes on.
    """
    return Path(trunk_directory) / f"branch-at-{start}"


class Reporter:
    """Collects one trial's per-epoch metrics; raises TrialDiverged on a non-finite value.

    `diverged` keeps the reason once raised, so a pack's train loop can stop that member, go on
    with the others, and the orchestrator still knows which members diverged.
    checkpoint: where and how often a long trial may checkpoint, or None when the orchestrator offers
    no place; a workload that resumes replays its earlier epochs through `report` so the history
    stays whole.
    """

    def __init__(self, checkpoint: CheckpointPolicy | None = None) -> None:
        self.history: list[dict[str, float]] = []
        self.checkpoint = checkpoint
        self.diverged: str | None = None

    def report(self, epoch: int, **metrics: float) -> None:
        values = {name: float(value) for name, value in metrics.items()}
        self.history.append({"epoch": epoch, **values})
        bad = {name: value for name, value in values.items() if not math.isfinite(value)}
        if bad:
            self.diverged = f"epoch {epoch}: non-finite {bad}"
            raise TrialDiverged(self.diverged)


class Workload(ABC):
    """A model family and a data set, each indexed by size. Subclass and set the class attributes.

    Config: a pydantic model of every parameter a trial takes (axes and fixed params of a spec).
    model_size_param / data_size_param: the config fields that set model and data size; reports
    use them for axes.
    data_unit: what D counts ('samples' or 'tokens'), for axis labels.
    metric_units: what the reported metrics measure, where not the default (losses in nats, errors
    as the fraction misclassified), e.g. {'test_loss': 'bits per byte'}; for axis labels.

    What the result columns mean, so fits and reports need no knowledge of any one workload:
    n_params_meaning: what N (the `n_params` column) counts, e.g. 'non-embedding parameters'; a
    workload that also reports `n_params_with_embeddings` lets a fit switch convention.
    noise_columns: config fields that set label noise; each value is a curve (and a law) of its own.
    budget_columns: config fields that name a trial's compute budget (FLOPs), for a workload that
    designs IsoFLOP profiles itself (a spec's compute_budgets always tag trials `compute_budget`).
    axis_labels: axis label per config field, e.g. {'width': 'hidden width (units)'}.
    paired_seeds: True when trials of one seed that differ only in model size train on the same data
    and noisy labels, so seed-level comparisons across model sizes can be paired.
    fit_metric: the metric `fit` and `report` analyse unless told otherwise.
    """

    Config: ClassVar[type[BaseModel]]
    model_size_param: ClassVar[str]
    data_size_param: ClassVar[str]
    data_unit: ClassVar[str] = "samples"
    metric_units: ClassVar[dict[str, str]] = {}
    n_params_meaning: ClassVar[str] = "parameters"
    noise_columns: ClassVar[tuple[str, ...]] = ()
    budget_columns: ClassVar[tuple[str, ...]] = ()
    axis_labels: ClassVar[dict[str, str]] = {}
    paired_seeds: ClassVar[bool] = False
    fit_metric: ClassVar[str] = "test_error"

    def validate_config(self, config: dict[str, Any]) -> BaseModel:
        return self.Config.model_validate(config)

    @abstractmethod
    def size(self, config: BaseModel) -> TrialSize:
        """N, D and FLOPs of a trial, cheaply, without training."""

    @abstractmethod
    def train(self, config: BaseModel, reporter: Reporter) -> None:
        """Train one trial from scratch, calling reporter.report(epoch, ...) after each epoch."""

    # -- packs (optional) ----------------------------------------------------------------------

    def pack_key(self, config: BaseModel) -> Hashable | None:
        """What trials must share to train together (the model shape), or None: never packed."""
        return None

    def pack_member_bytes(self, config: BaseModel) -> int:
        """Device memory one member of a pack needs, in bytes; sizes packs to the device.

        The default counts parameters, gradients and two Adam moments in float32 and doubles it for
        activations; a workload with large activations should say better.
        """
        return 2 * 4 * 4 * self.size(config).n_params

    def train_pack(self, configs: Sequence[BaseModel], reporters: Sequence[Reporter]) -> None:
        """Train trials of one pack_key together, member i reporting to reporters[i].

        Each member must end as if trained alone by `train` (same seed, data, optimizer state). A
        member whose reporter raises TrialDiverged stops; the others go on. An exception that
        escapes fails the pack as a whole (the orchestrator then reruns its members one by one).
        """
        raise NotImplementedError(f"{type(self).__name__} trains one trial at a time")

    @property
    def can_pack(self) -> bool:
        return type(self).train_pack is not Workload.train_pack

    # -- warmup-stable-decay trunks and branches (optional) ------------------------------------

    def train_wsd(self, config: BaseModel, reporter: Reporter, part: WSDPart) -> None:
        """Train one part of a WSD sweep (see WSDPart) instead of the config's own schedule,
        reporting as `train` does. reporter.checkpoint is the trial's own folder (never None here)."""
        raise NotImplementedError(f"{type(self).__name__} cannot start from a checkpoint with a schedule override")

    @property
    def can_train_wsd(self) -> bool:
        return type(self).train_wsd is not Workload.train_wsd


def _import_problem(err: BaseException) -> str:
    """One line on why importing a module failed: the exception, and for a syntax error where."""
    if isinstance(err, SyntaxError):
        return f"syntax error in {err.filename}, line {err.lineno}: {err.msg}"
    if isinstance(err, SystemExit):
        return f"it called sys.exit({err.code!r}) while being imported"
    where = ""
    frames = traceback.extract_tb(err.__traceback__)
    if frames:  # the innermost frame: the line of the workload's code that raised
        where = f" at {frames[-1].filename}, line {frames[-1].lineno}"
    lines = str(err).strip().splitlines() or [""]
    message = lines[0] + (" ..." if len(lines) > 1 else "")
    return f"{err.__class__.__name__}: {message}{where}"


def resolve_workload(ref: str) -> type[Workload]:
    """Import a workload class from a built-in name or 'package.module:Class'.

    Whatever importing the module does (a syntax error, an exception, even `sys.exit()`) and
    whatever is wrong with the class (not a Workload, abstract, no Config) becomes a
    WorkloadError naming the module and the problem; nothing escapes as a traceback.
    """
    path = BUILTIN_WORKLOADS.get(ref, ref)
    if ":" not in path:
        raise WorkloadError(
            f"unknown workload {ref!r}: use a built-in name ({', '.join(BUILTIN_WORKLOADS)}) or 'package.module:Class'"
        )
    module_name, class_name = path.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name + ".").startswith(err.name + "."):  # the module itself is missing
            raise WorkloadError(f"workload {ref!r}: cannot import module {module_name!r} (no module named {err.name!r})") from None
        raise WorkloadError(f"workload {ref!r}: importing {module_name!r} failed: {_import_problem(err)}") from None
    except (Exception, SystemExit) as err:  # a workload module is user code: contain all of it but Ctrl-C
        raise WorkloadError(f"workload {ref!r}: importing {module_name!r} failed: {_import_problem(err)}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Workload)):
        raise WorkloadError(f"workload {ref!r}: {class_name!r} in {module_name!r} is not a Workload subclass")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, BaseModel)):
        raise WorkloadError(f"workload {ref!r}: {class_name} has no Config (a pydantic model of its parameters)")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise WorkloadError(f"workload {ref!r}: {class_name} is abstract; it must implement {missing}")
    for attribute in ("model_size_param", "data_size_param"):
        if not isinstance(getattr(cls, attribute, None), str):
            raise WorkloadError(f"workload {ref!r}: {class_name} does not set {attribute} (the Config field of its size)")
    return cls


def make_workload(ref: str) -> Workload:
    """An instance of the workload `ref` names; its constructor is user code too, and contained."""
    cls = resolve_workload(ref)
    try:
        return cls()
    except (Exception, SystemExit) as err:
        raise WorkloadError(f"workload {ref!r}: {cls.__name__}() failed: {_import_problem(err)}") from None
