"""A sweep's runs -> tidy pandas DataFrames: one row per trial (final), or one per trial x epoch.

Pure: it takes the tables the tracking layer reads (orchestrator.tracking.schema.runs_table and the
per-epoch histories) and does no I/O.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from orchestrator.tracking import schema

ID_COLUMNS = ("trial_key", "run_id", "status", "run_status", "n_params", "n_samples", "train_flops")
# How a trial's run went: a trial's property, not an epoch's.
RUN_COLUMNS = ("status", "run_status", "error", "worker", "attempts", "pack_size")


def _param_value(text):
    """A param string (JSON for non-strings, as schema.tag_value writes it) back to its value."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return text
    return value if isinstance(value, (int, float, bool)) or value is None else text


def param_column(values: pd.Series) -> pd.Series:
    """A params.* column back to numbers where every value is one (one vectorized cast), else value by value."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().sum() == values.notna().sum():
        return numeric
    return values.map(_param_value)


def trials_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: identity, N/D/FLOPs, config params and the last value of each metric.

    `runs` is a runs table (orchestrator.tracking.schema.runs_table), already narrowed to the runs
    wanted (e.g. FINISHED ones of the current grid)."""
    if runs.empty:
        return pd.DataFrame(columns=list(ID_COLUMNS))
    frame = {
        "trial_key": schema.trial_keys(runs).to_numpy(),
        "run_id": runs["run_id"].to_numpy(),
        "status": schema.trial_statuses(runs).to_numpy(),
        "run_status": runs["run_status"].to_numpy(),
        "error": schema.column(runs, "tags.error").to_numpy(),
        "worker": schema.column(runs, "tags.worker").to_numpy(),
    }
    for name in (schema.WSD_PART_TAG, schema.TRUNK_KEY_TAG):  # a WSD sweep's parts
        if f"tags.{name}" in runs:
            frame[name] = runs[f"tags.{name}"].to_numpy()
    for name in ("attempts", "pack_size"):  # how the trial was run: tags written at its end
        frame[name] = pd.to_numeric(schema.column(runs, f"tags.{name}"), errors="coerce").to_numpy()
    for name in schema.SIZE_METRICS:
        values = schema.size_column(runs, name)
        if values.notna().any():
            frame[name] = values.to_numpy()
    for name in runs.columns:
        if name.startswith("params."):
            frame[name.removeprefix("params.")] = param_column(runs[name]).to_numpy()
    for name in runs.columns:
        if name.startswith("metrics.") and name.removeprefix("metrics.") not in schema.SIZE_METRICS:
            frame[name.removeprefix("metrics.")] = runs[name].to_numpy()
    table = pd.DataFrame(frame)
    for name in ("n_params", "n_samples"):
        if name in table and table[name].notna().all():
            table[name] = table[name].astype("int64")
    return table.sort_values(["n_samples", "n_params", "trial_key"], kind="stable").reset_index(drop=True)


def history_frame(history: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial x epoch: the per-epoch metrics (`history`: run_id, epoch, metrics...) joined
    with each trial's identity and config from `trials` (trials_frame); its final values of those
    metrics and how its run went (RUN_COLUMNS) left out, its keys as categories."""
    metrics = schema.epoch_columns(history)
    config = trials.drop(columns=[c for c in (*metrics, *RUN_COLUMNS) if c in trials])
    frame = config.merge(history, on="run_id", how="inner", validate="one_to_many")
    # A trial's keys repeat on each of its epochs: 10,000 trials x 100 epochs are a million rows.
    return frame.astype({name: "category" for name in ("trial_key", "run_id") if name in frame})
