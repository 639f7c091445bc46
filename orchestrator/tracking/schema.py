"""A trial's child run, written and read back in one place.

A child run holds:
- tags: `mlflow.parentRunId` (its sweep's parent run), `scalesweep.role` = trial, `trial_key`,
  `status` (ours: running, finished, failed, diverged; killed while an interrupted trial's run waits
  to be resumed; duplicate, with `duplicate_of`, on an extra run of a trial that another run stands
  for), and at its end `attempts`, `pack_size`, `worker`, `error` when it failed;
- params: the trial's resolved config;
- metrics: N, D and FLOPs as numbers at step 0 (`n_params`, `n_samples`, `train_flops`, and where the
  workload has them `n_params_with_embeddings`, `train_flops_with_attention`, `compute_budget`), so
  MLflow's own UI and search can chart and filter them; the per-epoch metrics (step = epoch) and
  `duration_s`.
- in a WSD sweep, tag `wsd_part` (trunk or branch); a branch also has tag `trunk_key` (its trunk's
  trial_key) and step-0 metrics `branch_step` (the trunk's data size where it branched, data units),
  `cooldown_flops` (what it trained itself) and `spent_flops` (that plus its share of the trunk), in
  FLOPs. A trunk's compute is its branches'; status, fits and reports leave trunks out.

Reading back, a store's runs become one columnar table (`runs_table`), named as
`mlflow.search_runs(output_format="pandas")` names them: run_id, run_status, start_time, end_time,
deleted, then `tags.<key>`, `params.<key>` and `metrics.<key>` (the last value of each metric).
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

import pandas as pd
from mlflow.entities import Metric, Param, RunTag

PARENT_TAG = "mlflow.parentRunId"
ROLE_TAG = "scalesweep.role"  # "sweep" on the parent, "trial" on children
TRIAL_KEY_TAG = "trial_key"
STATUS_TAG = "status"
DUPLICATE_OF_TAG = "duplicate_of"  # on an extra FINISHED run of a trial: the run that stands for it
WSD_PART_TAG = "wsd_part"  # "trunk" or "branch" on the children of a WSD sweep
TRUNK_KEY_TAG = "trunk_key"  # on a WSD branch: the trial_key of the trunk it starts from
# What sizes a trial: logged as metrics at step 0 (numbers the MLflow UI charts), read back as columns.
SIZE_METRICS = (
    "n_params", "n_samples", "train_flops", "n_params_with_embeddings", "train_flops_with_attention", "compute_budget",
    "branch_step", "cooldown_flops", "spent_flops",
)  # fmt: skip
RUN_COLUMNS = ("run_id", "run_status", "start_time", "end_time", "deleted")
MAX_TAG_CHARS = 5000


def tag_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:MAX_TAG_CHARS]


def trial_tags(trial, parent_run_id: str) -> dict[str, str]:
    """The tags a trial's run is created with."""
    tags = {PARENT_TAG: parent_run_id, ROLE_TAG: "trial", TRIAL_KEY_TAG: trial.key, STATUS_TAG: "running"}
    if trial.wsd is not None:
        tags[WSD_PART_TAG] = trial.wsd.part.kind
        if trial.depends_on is not None:
            tags[TRUNK_KEY_TAG] = trial.depends_on
    return tags


def trial_params(trial) -> list[Param]:
    """A trial's config as MLflow params."""
    return [Param(k, tag_value(v)) for k, v in sorted(trial.config.items())]


def size_metrics(trial) -> list[Metric]:
    """N, D, FLOPs (and the workload's other sizes) of a trial as step-0 metrics."""
    values = {
        "n_params": trial.size.n_params,
        "n_samples": trial.size.n_samples,
        "train_flops": trial.size.train_flops,
        "n_params_with_embeddings": trial.size.n_params_with_embeddings,
        "train_flops_with_attention": trial.size.train_flops_with_attention,
        "compute_budget": trial.compute_budget,
    }
    if trial.wsd is not None and not trial.is_trunk:
        values.update(branch_step=trial.wsd.branch_start, cooldown_flops=trial.wsd.cooldown_flops, spent_flops=trial.spent_flops)
    now = int(time.time() * 1000)
    return [Metric(name, float(value), now, 0) for name, value in values.items() if value is not None]


def result_entities(result) -> tuple[list[Metric], list[RunTag]]:
    """A trial result's per-epoch metrics and final tags."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(name, value, now, int(row["epoch"])) for row in result.history for name, value in row.items() if name != "epoch"
    ]
    metrics.append(Metric("duration_s", result.duration_s, now, 0))
    tags = [RunTag(STATUS_TAG, result.status), RunTag("attempts", str(result.attempts))]
    tags.append(RunTag("pack_size", str(getattr(result, "pack_size", 1))))
    if result.error:
        tags.append(RunTag("error", tag_value(result.error)))
    if result.worker:
        tags.append(RunTag("worker", result.worker))
    return metrics, tags


def history_table(finished: Iterable[tuple[str, Any]]) -> pd.DataFrame:
    """Per-epoch metrics of (run_id, result) pairs: one row per run x epoch, columns run_id, epoch,
    then one per metric. Written compactly beside the runs, so a sweep reads back in a few calls."""
    rows = [{"run_id": run_id, **row} for run_id, result in finished for row in result.history]
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=["run_id", "epoch"])
    table["epoch"] = table["epoch"].astype("int64")
    return table


# -- reading back ----------------------------------------------------------------------------------


def runs_table(runs: Iterable, deleted: bool = False) -> pd.DataFrame:
    """MLflow Run entities as one columnar table (see the module docstring); `deleted` marks them all."""
    columns: dict[str, list] = {name: [] for name in RUN_COLUMNS}
    n = 0
    for run in runs:
        info, data = run.info, run.data
        columns["run_id"].append(info.run_id)
        columns["run_status"].append(info.status)
        columns["start_time"].append(info.start_time)
        columns["end_time"].append(info.end_time)
        columns["deleted"].append(deleted)
        for prefix, values in (("tags.", data.tags), ("params.", data.params), ("metrics.", data.metrics)):
            for key, value in values.items():
                column = columns.setdefault(prefix + key, [None] * n)
                column.append(value)
        n += 1
        for column in columns.values():  # keys this run lacks
            if len(column) < n:
                column.append(None)
    table = pd.DataFrame(columns)
    for name in table.columns:
        if name.startswith("metrics."):
            table[name] = table[name].astype(float)
    for name in ("start_time", "end_time"):
        table[name] = table[name].astype("Int64")
    return table.astype({"deleted": bool})


def column(table: pd.DataFrame, name: str, default=None) -> pd.Series:
    """A column of a runs table, or `default` on every row when no run has it."""
    return table[name] if name in table else pd.Series(default, index=table.index, dtype=object)


def trial_keys(table: pd.DataFrame) -> pd.Series:
    return column(table, f"tags.{TRIAL_KEY_TAG}", "")


def is_trunk(table: pd.DataFrame) -> pd.Series:
    """Whether each run is a WSD trunk (no point of the grid: a stable learning rate, never cooled down)."""
    return column(table, f"tags.{WSD_PART_TAG}") == "trunk"


def trial_statuses(table: pd.DataFrame) -> pd.Series:
    """Our status of each run (tag `status`), or MLflow's in lower case where the tag is missing."""
    return column(table, f"tags.{STATUS_TAG}").fillna(table["run_status"].str.lower())


def size_column(table: pd.DataFrame, name: str) -> pd.Series:
    """A size (N, D, FLOPs...) of each run: its step-0 metric; runs written before sizes were metrics
    carry it as a tag."""
    values = column(table, f"metrics.{name}").astype(float)
    tag = f"tags.{name}"
    if tag in table:
        values = values.fillna(pd.to_numeric(table[tag], errors="coerce"))
    return values


def epoch_columns(history: pd.DataFrame) -> list[str]:
    return [c for c in history.columns if c not in ("run_id", "epoch")]
