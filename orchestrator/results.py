"""MLflow runs -> tidy pandas DataFrames: one row per trial (final), or one per trial x epoch."""

from __future__ import annotations

import pandas as pd

from orchestrator.store import SweepStore, TrialRecord
from workloads.api import STANDARD_METRICS

# Tags that hold numbers, cast back on load (MLflow stores tags and params as strings).
NUMERIC_TAGS = (
    "n_params", "n_samples", "train_flops", "n_params_with_embeddings", "train_flops_with_attention", "compute_budget",
    "spent_flops", "cooldown_flops", "branch_step",
)  # fmt: skip
ID_COLUMNS = ("trial_key", "run_id", "status", "run_status", "workload", "n_params", "n_samples", "train_flops")


def _number(text: str):
    """A param string back to int or float where it is one; other strings stay."""
    for cast in (int, float):
        try:
            return cast(text)
        except (TypeError, ValueError):
            pass
    if text in ("true", "false", "True", "False"):
        return text.lower() == "true"
    return text


def trial_row(record: TrialRecord) -> dict:
    row = {
        "trial_key": record.trial_key,
        "run_id": record.run_id,
        "status": record.status,
        "run_status": record.run_status,
        "workload": record.tags.get("workload", ""),
        "error": record.tags.get("error"),
    }
    for name in ("wsd_part", "trunk_key"):
        if name in record.tags:
            row[name] = record.tags[name]
    row.update({name: _number(record.tags[name]) for name in NUMERIC_TAGS if name in record.tags})
    row.update({name: _number(value) for name, value in record.params.items()})
    row.update(record.metrics)
    return row


def trials_frame(records: list[TrialRecord]) -> pd.DataFrame:
    """One row per trial: identity, config params, tags N/D/FLOPs and the last epoch's metrics."""
    frame = pd.DataFrame([trial_row(r) for r in records])
    if frame.empty:
        return pd.DataFrame(columns=list(ID_COLUMNS))
    return frame.sort_values(["n_samples", "n_params", "trial_key"], kind="stable").reset_index(drop=True)


def history_frame(store: SweepStore, records: list[TrialRecord], metrics=STANDARD_METRICS) -> pd.DataFrame:
    """One row per trial x epoch with the per-epoch metrics, joined with the trial's config."""
    rows = []
    for record in records:
        base = trial_row(record)
        for key in metrics:
            base.pop(key, None)
        for epoch_row in store.metric_history(record.run_id, metrics):
            rows.append({**base, **epoch_row})
    return pd.DataFrame(rows)


def load_trials(store: SweepStore, parent_run_id: str, finished_only: bool = False) -> pd.DataFrame:
    records = store.trial_records(parent_run_id)
    if finished_only:
        records = [r for r in records if r.run_status == "FINISHED"]
    return trials_frame(records)


def load_history(store: SweepStore, parent_run_id: str, finished_only: bool = True) -> pd.DataFrame:
    records = store.trial_records(parent_run_id)
    if finished_only:
        records = [r for r in records if r.run_status == "FINISHED"]
    return history_frame(store, records)
