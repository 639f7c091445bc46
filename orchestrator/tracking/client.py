"""The MLflow client every tracking call goes through: retries through outages, SQLite setup, bulk reads.

Every call goes through `RetryingClient`: while a tracking server is down the call waits with
exponential backoff (holding the results it was logging, so they arrive once the server is back) up
to `max_outage_s`, then raises `TrackingUnavailable` and the sweep stops, resumable. Reads retry the
same way as writes.

An answer that waiting cannot change is told apart from an outage and raised at once as
`TrackingRefused`: HTTP 401 or 403, a server that is not MLflow, a full disk, a read-only or
non-SQLite database file, a database driver that is not installed. `open_client` checks the store
before anything launches: a server must answer MLflow's /version, a SQLite file must take a write
lock, a database must accept a connection, each within seconds. Messages show URIs without passwords.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import os
import re
import sqlite3
import time
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterable
from urllib.parse import urlparse

import pandas as pd
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.redact import redact_uri

# MLflow's own HTTP retries default to 7 with a factor-2 backoff (minutes) and a 120 s timeout;
# RetryingClient owns the waiting instead, so an outage is bounded by tracking.max_outage_s.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
# MlflowClient's calls that store files on a run (in the artifact store, not the database).
ARTIFACT_WRITES = frozenset({"log_artifact", "log_artifacts", "log_dict", "log_text", "log_figure", "log_image", "log_table"})
# How long a check before anything launches may wait (seconds): to connect, and for an answer (a
# basic-auth server hashes the password of each request; on a busy machine that takes seconds).
CHECK_CONNECT_S = 5.0
CHECK_ANSWER_S = 20.0
# The server's bulk history route: at most this many runs and points per call (mlflow/server/handlers.py).
BULK_HISTORY_MAX_RUNS = 100
BULK_HISTORY_MAX_POINTS = 25_000

log = logging.getLogger(__name__)


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached or opened."""


class TrackingRefused(TrackingUnavailable):
    """The store was reached and gave an answer retrying cannot change (no login, no permission,
    not MLflow, disk full, read-only, not a database, no driver); the message says which."""


class ArtifactUploadFailed(TrackingRefused):
    """Files could not be stored on a run (a read-only or full artifact store, no permission);
    what was computed from them is still valid."""


def is_remote(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def shown(uri: str) -> str:
    """A tracking URI as messages show it: no password, no query string."""
    return redact_uri(uri.split("?", 1)[0])


def tracking_user(uri: str) -> str | None:
    """The user MLflow logs in as against `uri`: from the URI, else MLFLOW_TRACKING_USERNAME."""
    return urlparse(uri).username or os.environ.get("MLFLOW_TRACKING_USERNAME") or None


def with_sqlite_busy_timeout(uri: str, seconds: int = 60) -> str:
    """SQLite locks the whole file per write; wait for a reader or writer instead of failing."""
    if uri.startswith("sqlite:///") and "timeout=" not in uri:
        return f"{uri}{'&' if '?' in uri else '?'}timeout={seconds}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


@contextmanager
def locked_sqlite_file(db: Path, uri: str):
    """Hold an exclusive flock of the SQLite file's folder (created if need be): MLflow creates or
    upgrades a store's tables when a client first opens it, and two processes doing it at once race
    in alembic. The folder, never the file: closing any descriptor of a SQLite file drops the POSIX
    locks SQLite holds on it in this process. A folder that cannot be made is refused here."""
    if db.parent.exists() and not db.parent.is_dir():
        raise TrackingRefused(f"SQLite store {shown(uri)}: {db.parent} is a file, not a folder")
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrackingRefused(f"SQLite store {shown(uri)}: cannot create the folder {db.parent} ({err.strerror})") from None
    folder = os.open(db.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the flock


def prepare_sqlite(db: Path, uri: str) -> None:
    """Check a SQLite store can be written, and put it in WAL mode (kept in the file).

    A file that is not SQLite or cannot be written fails here in milliseconds, where MLflow's
    engine setup would retry for minutes. WAL: readers such as the MLflow UI or `scalesweep
    status` no longer block the sweep's writes, and a commit costs half.
    """
    if not db.exists():
        try:
            db.touch()  # an empty file is an empty SQLite database; nothing holds locks on it yet
        except OSError as err:
            reason = _PERMANENT_ERRNOS.get(err.errno, err.strerror)
            raise TrackingRefused(f"SQLite store {shown(uri)}: cannot create {db}: {reason}") from None
    try:
        with closing(sqlite3.connect(db, timeout=10)) as conn:
            conn.execute("PRAGMA schema_version")  # reads the header: 'file is not a database'
            conn.execute("BEGIN IMMEDIATE")  # takes the write lock: 'attempt to write a readonly database'
            conn.rollback()
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as err:
        if "locked" in str(err):  # another process is writing: MLflow waits for it (busy timeout)
            return
        raise TrackingRefused(f"SQLite store {shown(uri)}: {permanent_reason(err) or err}") from None
    except sqlite3.DatabaseError as err:
        raise TrackingRefused(f"SQLite store {shown(uri)}: {permanent_reason(err) or err}") from None


def check_server(uri: str, connect_s: float | None = None, answer_s: float | None = None) -> None:
    """Fail fast, before any trial launches, unless `uri` is an MLflow tracking server that lets us in.

    Asks /health (open to all) and /version (behind the login on a basic-auth server) with the
    credentials MLflow itself would send; an HTML page, a 404 or a refused login end it here.
    """
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    connect_s, answer_s = connect_s or CHECK_CONNECT_S, answer_s or CHECK_ANSWER_S
    where = f"MLflow tracking server {shown(uri)}"
    creds = get_default_host_creds(uri)
    for endpoint in ("/health", "/version"):
        try:
            response = http_request(creds, endpoint, "GET", max_retries=0, timeout=(connect_s, answer_s), raise_on_status=False)
        except (requests.RequestException, MlflowException) as err:
            raise TrackingUnavailable(f"{where} is unreachable: {connection_problem(err, connect_s, answer_s)}") from None
        reason = http_refusal(response.status_code, response.text, uri)
        if reason:
            raise TrackingRefused(f"{where}: {reason} (GET {endpoint})")
        if response.status_code in (502, 503, 504):
            raise TrackingUnavailable(f"{where} answered {endpoint} with HTTP {response.status_code}; is it starting up?")
        if response.status_code != 200:
            raise TrackingRefused(f"{where} answered {endpoint} with HTTP {response.status_code}; is this an MLflow server?")
    if not re.fullmatch(r"\d+\.\d+[\w.+-]*", response.text.strip()):
        raise TrackingRefused(
            f"{where} is not an MLflow server: /version answered {_body_kind(response.text)} instead of a version number"
        )


def check_database(uri: str, timeout_s: float = CHECK_CONNECT_S) -> None:
    """For a database URI (postgresql://, mysql://, ...): its driver is installed and it accepts a
    connection within `timeout_s`, so a missing driver or a database that is down fails at once
    instead of after MLflow's engine retries."""
    import sqlalchemy

    url = sqlalchemy.engine.make_url(uri)
    try:
        url.get_dialect().import_dbapi()
    except ImportError as err:
        raise TrackingRefused(
            f"tracking store {shown(uri)}: the database driver for {url.drivername!r} is not installed ({err}); "
            "install it (psycopg[binary] for postgresql://, mysqlclient for mysql://, pyodbc for mssql://) "
            "or name a driver you have in the URI (e.g. postgresql+psycopg://)"
        ) from None
    timeout_arg = {"postgresql": "connect_timeout", "mysql": "connect_timeout", "mssql": "timeout"}.get(url.get_backend_name())
    engine = sqlalchemy.create_engine(url, connect_args={timeout_arg: int(timeout_s)} if timeout_arg else {})
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = permanent_reason(err)
        if reason:
            raise TrackingRefused(f"tracking store {shown(uri)}: {reason}") from None
        raise TrackingUnavailable(f"tracking store {shown(uri)} is unreachable: {first_line(getattr(err, 'orig', None) or err)}") from None
    finally:
        engine.dispose()


def connection_problem(err: BaseException, connect_s: float, answer_s: float) -> str:
    """What went wrong reaching a server, in a few words (requests' own message runs to lines)."""
    text = str(err)
    for words, problem in (
        ("Read timed out", f"no answer within {answer_s:g} s"),
        ("timed out", f"no connection within {connect_s:g} s"),
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host"),
        ("Failed to resolve", "unknown host"),
        ("CERTIFICATE_VERIFY_FAILED", "its TLS certificate is not trusted"),
    ):
        if words in text:
            return problem
    return first_line(err)


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:300]


def _body_kind(text: str) -> str:
    return "an HTML page" if "<html" in text[:2000].lower() or "<!doctype" in text[:200].lower() else repr(text.strip()[:60])


def http_refusal(status: int | None, body: str, uri: str) -> str | None:
    """Why an HTTP answer from a tracking server is final (a login refused, no permission, no such
    API, not MLflow), or None when it is not."""
    user = tracking_user(uri)
    if status == 401:
        if not user:
            return "HTTP 401: the server wants a login; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        return f"HTTP 401: the server refused the login of user {user!r} (check the password)"
    if status == 403:
        return f"HTTP 403: user {user or '(none)'!r} lacks the permission for this; a sweep needs EDIT on its experiment"
    if status == 404:
        return "HTTP 404: no MLflow API at this URL; is the path right, and is it an MLflow server?"
    if status == 200 and _body_kind(body) == "an HTML page":
        return "it answered with an HTML page, not MLflow's API; is this a login page, or another service on that port?"
    return None


def http_status(err: BaseException) -> int | None:
    """The HTTP status a tracking call failed with: MLflow's REST errors, and the artifact
    repository's requests errors (uploads to a server's mlflow-artifacts)."""
    if isinstance(err, MlflowException):
        return err.get_http_status_code()
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None) if isinstance(err, requests.HTTPError) else None


def _missing_entity(err: BaseException) -> bool:
    """A 404 that means 'no such run or experiment' (an answer of MLflow's API), not 'no API here'."""
    return isinstance(err, MlflowException) and err.error_code == "RESOURCE_DOES_NOT_EXIST"


def refusal(err: Exception, uri: str, operation: str) -> TrackingRefused | None:
    """`err` (from a call of `operation` on the store at `uri`) as a TrackingRefused when it is an
    answer retrying cannot change, else None.

    A failed upload of files (`log_artifact*`, `log_dict`, ...) that is not an outage is always
    final, and an ArtifactUploadFailed: the caller may go on without the files.
    """
    reason = None
    status = http_status(err)  # the server's own answer first: its body may say 'Permission denied'
    if status in (401, 403) or (status == 404 and not _missing_entity(err)):
        reason = http_refusal(status, "", uri)
    reason = reason or permanent_reason(err)
    uploading = operation in ARTIFACT_WRITES
    if uploading and reason is None and not is_transient(err):
        reason = _short(err)
    if reason is None:
        return None
    where = f"MLflow at {shown(uri)}"
    if uploading:
        return ArtifactUploadFailed(f"{where}: storing files on a run failed: {reason} (in {operation})")
    return TrackingRefused(f"{where}: {reason} (in {operation})")


# Database and file-system errors no retry can fix, by the words their drivers use.
_PERMANENT_DATABASE_ERRORS = (
    ("database or disk is full", "the disk holding the database is full"),
    ("no space left on device", "the disk holding the store is full"),
    ("could not extend file", "the disk holding the database is full"),
    ("disk quota exceeded", "the disk quota of the store is used up"),
    ("attempt to write a readonly database", "the database file is read-only"),
    ("read-only file system", "the store is on a read-only file system"),
    ("file is not a database", "the file is not a SQLite database"),
    ("unable to open database file", "the database file cannot be opened or created (a missing or read-only folder?)"),
    ("password authentication failed", "the database refused the login"),
    ("permission denied", "the database refused access (permission denied)"),
)
_PERMANENT_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def permanent_reason(err: BaseException) -> str | None:
    """Why `err` is an answer retrying cannot change, or None (an outage, or not the store's doing)."""
    chain, seen = [], err
    while seen is not None and len(chain) < 8:  # the error and what caused it (MLflow wraps SQLAlchemy wraps sqlite3)
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for cause in chain:
        if isinstance(cause, OSError) and cause.errno in _PERMANENT_ERRNOS and not isinstance(cause, ConnectionError):
            where = f": {cause.filename}" if cause.filename else ""
            return f"{_PERMANENT_ERRNOS[cause.errno]}{where}"
    text = " ".join(str(getattr(cause, "message", cause)) for cause in chain).lower()
    for words, reason in _PERMANENT_DATABASE_ERRORS:
        if words in text:
            return reason
    if isinstance(err, MlflowException) and "not in a valid json format" in text:
        return "it answered something other than MLflow's JSON API; is this an MLflow server?"
    return None


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
            except TrackingUnavailable:
                raise
            except Exception as err:
                refused = refusal(err, self.raw.tracking_uri, getattr(fn, "__name__", "a tracking call"))
                if refused is not None:
                    raise refused from None
                if not is_transient(err):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.max_outage_s
                    log.warning("MLflow at %s did not answer (%s); retrying for up to %.0f s", shown(self.raw.tracking_uri), _short(err), self.max_outage_s)
                if now >= deadline:
                    raise TrackingUnavailable(
                        f"MLflow tracking server {shown(self.raw.tracking_uri)} has not answered for {self.max_outage_s:g} s "
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
    """A RetryingClient on `tracking_uri`, checked (see the module docstring); a SQLite file is created in WAL mode.

    MLflow's usage telemetry and its "View run at" line per ended run stay off unless the user asked
    for them; against a server, MLflow's own retries give way to RetryingClient's (see
    MLFLOW_HTTP_DEFAULTS).
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a line per run ended would bury the output
    db = sqlite_path(tracking_uri)
    scheme = urlparse(tracking_uri).scheme.split("+", 1)[0]
    if is_remote(tracking_uri):
        for name, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        check_server(tracking_uri)
    elif scheme in ("postgresql", "mysql", "mssql"):
        check_database(tracking_uri)
    if db is None:
        return RetryingClient(new_mlflow_client(tracking_uri), max_outage_s)
    with locked_sqlite_file(db, tracking_uri):
        prepare_sqlite(db, tracking_uri)
        client = RetryingClient(new_mlflow_client(tracking_uri), max_outage_s)
        client.search_experiments(max_results=1)  # MLflow creates or upgrades the tables here
    return client


def new_mlflow_client(tracking_uri: str) -> MlflowClient:
    """An MlflowClient; it opens a database store at once, so a store that refuses is raised typed."""
    try:
        return MlflowClient(tracking_uri=with_sqlite_busy_timeout(tracking_uri))
    except Exception as err:
        refused = refusal(err, tracking_uri, "opening the store")
        if refused is None:
            raise
        raise refused from None
