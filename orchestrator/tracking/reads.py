"""Reading a sweep back in bulk: its child runs as one table, their per-epoch metrics as another.

Both come from MLflow alone and are kept in a local cache that MLflow alone rebuilds (delete it at
will: `$SCALESWEEP_CACHE/tracking`, default ~/.cache/scalesweep/tracking):

- Runs. The first read searches every child run (search_runs pages of 50,000); later reads ask only
  for what can have changed since: runs RUNNING now, runs that ended since the newest end seen (less
  END_TIME_MARGIN_MS for a clock that steps back), runs that were RUNNING in the cache and are not any more,
  and the deleted ones (a run deleted or restored in the MLflow UI is seen). Keyed by run id
  and run status, so a resume, a rerun or a changed spec never leaves it stale. When another driver
  has taken the sweep on (its lease tag), the read goes back to that driver's start, which its own
  clock stamped: drivers' clocks need only agree within END_TIME_MARGIN_MS, as NTP keeps them.
- Histories. Each recorder round leaves its finished trials' per-epoch metrics on the parent run as
  one Parquet file (SweepStore.HISTORY_ARTIFACT_DIR); files are immutable, so each is downloaded
  once. FINISHED runs no file covers (a failed upload, an older scalesweep) are read with bulk metric
  history calls (about runs/100 of them, exact points, never sampled) and cached by run id: a
  FINISHED run's metrics do not change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import pandas as pd
import pyarrow.parquet as pq
from mlflow.entities import ViewType

from orchestrator.tracking import schema
from orchestrator.tracking.lease import DRIVER_TAG, Holder
from orchestrator.tracking.store import SweepStore

CACHE_FORMAT = 1
# Ends since the newest one seen are enough: a run the last read did not see committed its create
# after that read, so its end, stamped later still by the same driver's clock, is newer than any end
# that read saw (a run seen RUNNING is followed by id, whatever its end time). The margin covers the
# driver's clock stepping back a little (NTP); a wide one would re-read every run of a sweep whose
# trials end close together (5000 no-op trials end within 20 s).
END_TIME_MARGIN_MS = 2_000

log = logging.getLogger(__name__)


def cache_root() -> Path:
    return Path(os.environ.get("SCALESWEEP_CACHE", Path.home() / ".cache" / "scalesweep")) / "tracking"


def _atomic_parquet(table: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)  # a reader never sees half a file; concurrent writers: the last one wins


class SweepReader:
    """The child runs and histories of one parent run, read through the local cache."""

    def __init__(self, store: SweepStore, parent_run_id: str, cache_dir: Path | None = None):
        self.store = store
        self.parent_run_id = parent_run_id
        key = hashlib.sha256(f"{store.tracking_uri}|{parent_run_id}".encode()).hexdigest()[:24]
        self.cache_dir = (cache_dir or cache_root()) / key
        self._runs: pd.DataFrame | None = None

    # -- runs ----------------------------------------------------------------------------------

    def runs(self, refresh: bool = True) -> pd.DataFrame:
        """Every child run of the sweep, deleted ones included (`deleted` column), as MLflow has them now."""
        if self._runs is not None and not refresh:
            return self._runs
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path, meta_path = self.cache_dir / "runs.parquet", self.cache_dir / "runs.json"
        driver = self._driver()
        cached, meta = None, {}
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") == CACHE_FORMAT:
                cached = pd.read_parquet(path)
        except (OSError, ValueError) as err:
            log.debug("no usable run cache in %s (%s): reading every run", self.cache_dir, err)
        watermark = meta.get("watermark")
        if cached is not None and meta.get("driver") != driver:
            # Another driver took the sweep on since: everything it wrote (new runs, and old ones it
            # ended again: duplicates marked, half-logged runs replaced) carries its clock, from its start.
            holder = Holder.parse(driver)
            started = holder.started_ms if holder is not None and holder.started_ms else None
            watermark = None if watermark is None or started is None else min(watermark, started)
        runs = self._full_read() if cached is None else self._refresh(cached, watermark)
        _atomic_parquet(runs, path)
        meta_path.write_text(json.dumps({"format": CACHE_FORMAT, "driver": driver, "watermark": _watermark(runs)}))
        self._runs = runs
        return runs

    def _driver(self) -> str:
        parent = self.store.client.get_run(self.parent_run_id)
        return parent.data.tags.get(DRIVER_TAG, "")

    def _full_read(self) -> pd.DataFrame:
        active = self.store.search_children(self.parent_run_id)
        deleted = self.store.search_children(self.parent_run_id, view=ViewType.DELETED_ONLY)
        return _concat([active, deleted])

    def _refresh(self, cached: pd.DataFrame, watermark: int | None) -> pd.DataFrame:
        store, parent = self.store, self.parent_run_id
        running = store.search_children(parent, "attributes.status = 'RUNNING'")
        since = watermark - END_TIME_MARGIN_MS if watermark else 0
        ended = store.search_children(parent, f"attributes.end_time >= {since}")
        deleted = store.search_children(parent, view=ViewType.DELETED_ONLY)
        seen = set(running["run_id"]) | set(ended["run_id"]) | set(deleted["run_id"])
        was_running = cached.loc[~cached["deleted"] & (cached["run_status"] == "RUNNING"), "run_id"]
        was_deleted = cached.loc[cached["deleted"], "run_id"]
        # Runs that left RUNNING without a recent end, and deleted runs that came back (or were purged).
        moved = [r for r in (*was_running, *was_deleted) if r not in seen]
        fresh = _concat([running, ended, deleted, store.runs_by_id(moved) if moved else schema.runs_table([])])
        gone = set(moved) - set(fresh["run_id"])  # purged for good
        kept = cached[~cached["run_id"].isin(fresh["run_id"]) & ~cached["run_id"].isin(gone)]
        return _concat([kept, fresh])

    # -- histories -----------------------------------------------------------------------------

    def histories(self, run_ids: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
        """Per-epoch `metrics` of FINISHED runs `run_ids`: one row per run x epoch (columns run_id,
        epoch, *metrics; NaN where a run did not log one)."""
        wanted = set(run_ids)
        history_dir = self.cache_dir / "histories"
        files = self.store.history_files(self.parent_run_id) if wanted else []
        missing = [f for f in files if not (history_dir / Path(f).name).exists()]
        if missing:
            self.store.download(self.parent_run_id, missing, history_dir)
        frames = []
        for name in files:
            path = history_dir / Path(name).name
            present = set(pq.read_schema(path).names)  # read only the metrics asked for
            table = pd.read_parquet(path, columns=[c for c in ("run_id", "epoch", *metrics) if c in present])
            table = table[table["run_id"].isin(wanted)]
            if not table.empty:
                frames.append(table.reindex(columns=["run_id", "epoch", *metrics]))
        covered = set().union(*(set(f["run_id"]) for f in frames)) if frames else set()
        uncovered = sorted(wanted - covered)
        if uncovered:
            frames.append(self._history_from_runs(uncovered, metrics))
        if not frames:
            return pd.DataFrame(columns=["run_id", "epoch", *metrics])
        history = pd.concat(frames, ignore_index=True)
        # A round recorded twice (a retried upload) repeats identical rows.
        return history.drop_duplicates(["run_id", "epoch"], keep="last").reset_index(drop=True)

    def _history_from_runs(self, run_ids: list[str], metrics: Sequence[str]) -> pd.DataFrame:
        """Histories of runs no compact file covers, from bulk metric-history reads, cached by run id."""
        path = self.cache_dir / "run-histories.parquet"
        cached = pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=["run_id", "epoch"])
        have = set(cached["run_id"]) if all(m in cached for m in metrics) else set()
        todo = [r for r in run_ids if r not in have]
        if todo:
            points = self.store.client.metric_histories(todo, metrics)
            wide = points.pivot_table(index=["run_id", "step"], columns="key", values="value", aggfunc="last")
            wide = wide.reset_index().rename(columns={"step": "epoch"})
            wide.columns.name = None
            keep = cached[~cached["run_id"].isin(todo)] if have else cached.iloc[0:0]
            parts = [f for f in (keep, wide.reindex(columns=["run_id", "epoch", *metrics])) if not f.empty]
            cached = pd.concat(parts, ignore_index=True) if parts else wide
            _atomic_parquet(cached, path)
        return cached[cached["run_id"].isin(run_ids)].reindex(columns=["run_id", "epoch", *metrics])


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return schema.runs_table([])
    table = pd.concat(frames, ignore_index=True)
    return table.drop_duplicates("run_id", keep="last").reset_index(drop=True)


def _watermark(runs: pd.DataFrame) -> int | None:
    ended = runs.loc[~runs["deleted"], "end_time"].dropna() if "end_time" in runs else []
    return int(ended.max()) if len(ended) else None
