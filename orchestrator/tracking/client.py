"""The MLflow client every tracking call goes through: retries through outages, SQLite setup, bulk reads.

Every call goes through `RetryingClient`: while a tracking server is down the call waits with
exponential backoff (holding the results it was logging, so they arrive once the server is back) up
to `max_outage_s`, then raises `TrackingUnavailable` and the sweep stops, resumable. Reads retry the
same way as writes.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Iterable
from urllib.parse import urlparse

import pandas as pd
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

# MLflow's own HTTP retries default to 7 with a factor-2 backoff (minutes) and a 120 s timeout;
# RetryingClient owns the waiting instead, so an outage is bounded by tracking.max_outage_s.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
# The server's bulk history route: at most this many runs and points per call (mlflow/server/handlers.py).
BULK_HISTORY_MAX_RUNS = 100
BULK_HISTORY_MAX_POINTS = 25_000

log = logging.getLogger(__name__)


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached or opened."""


def is_remote(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def with_sqlite_busy_timeout(uri: str, seconds: int = 60) -> str:
    """SQLite locks the whole file per write; wait for a reader or writer instead of failing."""
    if uri.startswith("sqlite:///") and "timeout=" not in uri:
        return f"{uri}{'&' if '?' in uri else '?'}timeout={seconds}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def use_write_ahead_log(db: Path) -> None:
    """Put a SQLite store in WAL mode (kept in the file): readers such as the MLflow UI or
    `scalesweep status` no longer block the sweep's writes, and each commit costs about half."""
    try:
        with closing(sqlite3.connect(db, timeout=10)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as err:  # a store another process holds locked keeps its mode; still usable
        log.debug("could not switch %s to WAL mode: %s", db, err)


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any trial launches, when a tracking server does not answer."""
    if not is_remote(uri):
        return
    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except requests.RequestException as err:
        raise TrackingUnavailable(f"MLflow tracking server {uri} is unreachable: {err.__class__.__name__}") from None
    if response.status_code != 200:
        raise TrackingUnavailable(f"MLflow tracking server {uri} answered /health with HTTP {response.status_code}")


def is_transient(err: BaseException) -> bool:
    """True for errors a tracking server outage causes: refused or dropped connections, timeouts, 502-504."""
    if isinstance(err, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    if isinstance(err, MlflowException):
        # mlflow.utils.rest_utils wraps connection-level failures as "... failed with exception ...".
        return "failed with exception" in err.message or err.get_http_status_code() in (502, 503, 504)
    return False


def _short(err: BaseException) -> str:
    text = getattr(err, "message", None) or str(err)
    return f"{err.__class__.__name__}: {text[:300]}"


class RetryingClient:
    """An MlflowClient whose calls wait out a tracking server outage with exponential backoff.

    A call that fails with a transient error is retried after 0.5 s, 1 s, 2 s ... (at most
    `max_delay_s` apart) until it succeeds or `max_outage_s` seconds have passed since its first
    failure; then it raises TrackingUnavailable. Other errors (a bad request, a missing run) are
    raised at once. The caller keeps what it was logging until the call returns, which is what
    buffers a trial's metrics across an outage.
    """

    def __init__(self, client: MlflowClient, max_outage_s: float = 300.0, first_delay_s: float = 0.5, max_delay_s: float = 8.0):
        self.raw = client
        self.max_outage_s = max_outage_s
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s

    def __getattr__(self, name: str):
        attr = getattr(self.raw, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            return self.call(attr, *args, **kwargs)

        return call

    def call(self, fn, *args, **kwargs):
        delay, deadline = self.first_delay_s, None
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if not is_transient(err):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.max_outage_s
                    log.warning("MLflow at %s did not answer (%s); retrying for up to %.0f s", self.raw.tracking_uri, _short(err), self.max_outage_s)
                if now >= deadline:
                    raise TrackingUnavailable(
                        f"MLflow tracking server {self.raw.tracking_uri} has not answered for {self.max_outage_s:g} s "
                        f"(tracking.max_outage_s): {_short(err)}. The sweep stopped; run the same command again "
                        "once the server is back to resume it"
                    ) from None
                time.sleep(min(delay, deadline - now))
                delay = min(2 * delay, self.max_delay_s)

    # -- bulk reads ----------------------------------------------------------------------------

    @property
    def backend(self):
        """The tracking store object behind the client (a SqlAlchemyStore, a RestStore, ...)."""
        return self.raw._tracking_client.store

    def metric_histories(self, run_ids: list[str], keys: Iterable[str]) -> pd.DataFrame:
        """Every logged point of `keys` for `run_ids`: columns run_id, key, step, value (exact, never sampled).

        In-process SQL stores answer from `get_metric_history_bulk`; a tracking server from its
        get-history-bulk route, 100 runs per call; anything else one run at a time.
        """
        frames = []
        for key in keys:
            for chunk, points in self._history_chunks(run_ids, key):
                frames.append(pd.DataFrame(points, columns=["run_id", "key", "step", "value"]))
        if not frames:
            return pd.DataFrame(columns=["run_id", "key", "step", "value"])
        return pd.concat(frames, ignore_index=True)

    def _history_chunks(self, run_ids: list[str], key: str):
        backend = self.backend
        if hasattr(backend, "get_metric_history_bulk"):
            for start in range(0, len(run_ids), 1000):
                chunk = run_ids[start : start + 1000]
                metrics = self.call(backend.get_metric_history_bulk, chunk, key, max_results=2**62)
                yield chunk, [(m.run_id, key, m.step, m.value) for m in metrics]
        elif hasattr(backend, "get_host_creds"):
            yield from self._server_bulk_history(backend, run_ids, key, BULK_HISTORY_MAX_RUNS)
        else:
            for run_id in run_ids:
                yield [run_id], [(run_id, key, m.step, m.value) for m in self.get_metric_history(run_id, key)]

    def _server_bulk_history(self, backend, run_ids: list[str], key: str, per_call: int):
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        endpoint = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
        for start in range(0, len(run_ids), per_call):
            chunk = run_ids[start : start + per_call]
            params = {"run_id": chunk, "metric_key": key, "max_results": BULK_HISTORY_MAX_POINTS}

            def fetch():
                response = http_request(backend.get_host_creds(), endpoint, "GET", params=params)
                return verify_rest_response(response, endpoint).json().get("metrics", [])

            points = self.call(fetch)
            if len(points) >= BULK_HISTORY_MAX_POINTS and len(chunk) > 1:
                # The route stops at its point limit: ask again for fewer runs per call.
                yield from self._server_bulk_history(backend, chunk, key, max(1, len(chunk) // 4))
                continue
            yield chunk, [(p["run_id"], key, int(p.get("step", 0)), float(p["value"])) for p in points]


def open_client(tracking_uri: str, max_outage_s: float = 300.0) -> RetryingClient:
    """A RetryingClient on `tracking_uri`, checked reachable; a SQLite file is created in WAL mode.

    MLflow's usage telemetry stays off unless the user asked for it; against a server, MLflow's own
    retries give way to RetryingClient's (see MLFLOW_HTTP_DEFAULTS).
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    check_reachable(tracking_uri)
    db = sqlite_path(tracking_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        use_write_ahead_log(db)
    if is_remote(tracking_uri):
        for name, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
    return RetryingClient(MlflowClient(tracking_uri=with_sqlite_busy_timeout(tracking_uri)), max_outage_s)
