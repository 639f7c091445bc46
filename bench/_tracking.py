"""Where a benchmark records: a fresh SQLite file by default, or a tracking server given by URI."""

from __future__ import annotations

import tempfile
from pathlib import Path


def bench_tracking_uri(uri: str | None) -> str:
    """`uri` as given, or a SQLite store in a new temporary folder (removed by the OS, not by us)."""
    if uri:
        return uri
    folder = Path(tempfile.mkdtemp(prefix="scalesweep-bench-"))
    return f"sqlite:///{folder / 'mlflow.db'}"


def ray_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))
