"""MLflow, the only record of a sweep: one parent run per sweep, one child run per trial.

Only this package imports mlflow.

| module | holds |
|---|---|
| client | the retrying MLflow client, SQLite setup, bulk metric-history reads |
| schema | a child run's tags, params and metrics, written and read back in one place |
| store | the sweep's experiment, parent run, child runs and artifacts |
| reads | a sweep read back in bulk (runs and histories) through a local cache MLflow alone rebuilds |
| recorder | off-thread, batched recording of trials as they start and end |
"""

from orchestrator.tracking.client import ArtifactUploadFailed, TrackingRefused, TrackingUnavailable
from orchestrator.tracking.reads import SweepReader
from orchestrator.tracking.recorder import TrialRecorder
from orchestrator.tracking.store import SweepStore, is_terminal

__all__ = [
    "ArtifactUploadFailed",
    "SweepReader",
    "SweepStore",
    "TrackingRefused",
    "TrackingUnavailable",
    "TrialRecorder",
    "is_terminal",
]
