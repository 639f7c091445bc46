"""Real parts for tests: a local Ray with 2 CPUs, `mlflow server` processes on SQLite and on a real
PostgreSQL, MLflow's basic-auth server as docs/security.md starts it (tests/servers.py), small
file systems (tmpfs) that fill up or are read-only, and a fake HTTP server that is not MLflow."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.servers import BasicAuthMlflowServer, MlflowServer, PostgresServer, free_port  # noqa: F401 (tests import free_port from here)

# Explicit, so no test depends on whether ~/.ray/auth_token happens to exist.
os.environ["RAY_AUTH_MODE"] = "token"

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of the session's own (see tests/servers.py)."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_mlflow_server(tmp_path_factory, postgres):
    """An `mlflow server` whose backend store is a database on the real PostgreSQL, as cluster/ recommends."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-pg"), postgres.create_database("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def spec_server(request):
    """The tracking server `write_spec` points at: the SQLite-backed one, unless a test asks for each
    backend with `@on_each_backend`."""
    backend = getattr(request, "param", "sqlite")
    return request.getfixturevalue("mlflow_server" if backend == "sqlite" else "postgres_mlflow_server")


# Runs a test against an `mlflow server` on SQLite and one on a real PostgreSQL.
on_each_backend = pytest.mark.parametrize("spec_server", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def own_mlflow_server(tmp_path):
    """A server of the test's own, for tests that stop and restart it."""
    root = tmp_path / "own-mlflow"
    root.mkdir()
    server = MlflowServer(root)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session, 2 CPUs, bound to 127.0.0.1."""
    import ray

    from orchestrator.scheduler import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def write_spec(tmp_path, spec_server):
    """Write a spec YAML whose tracking points at the test server, in an experiment of its own."""

    def write(body: dict, name: str = "spec.yaml") -> Path:
        body = dict(body)
        body.setdefault("name", "sweep")
        body.setdefault("tracking", {"uri": spec_server.url, "experiment": f"test-{uuid.uuid4().hex[:8]}"})
        path = tmp_path / name
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        return path

    return write


@pytest.fixture
def toy_spec():
    """A small grid of the toy law workload."""
    return {
        "workload": "tests.toy_workloads:PowerLawToy",
        "axes": {"n": [10, 100, 1000], "d": [100, 1000]},
        "params": {"epochs": 3},
        "resources_per_trial": {"cpu": 1},
    }


@pytest.fixture(scope="session")
def basic_auth_server(tmp_path_factory):
    """MLflow's basic-auth server, started by docs/security.md's recipe; admin adds users."""
    # One worker: on a busy machine uvicorn's supervisor restarts workers that answer its health
    # check late; test_security.py starts the recipe with two on its own.
    server = BasicAuthMlflowServer(tmp_path_factory.mktemp("basic-auth"), workers=1)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def launches(monkeypatch) -> list[str]:
    """Records any attempt to start or join Ray during the test, which sees no Ray started before it."""
    import ray

    import orchestrator.scheduler

    calls: list[str] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(orchestrator.scheduler, "connect", lambda *a, **k: calls.append("connect"))
    monkeypatch.setattr(ray, "init", lambda *a, **k: calls.append("ray.init"))
    return calls


@contextmanager
def mounted_tmpfs(path: Path, size: str, read_only: bool = False):
    """A tmpfs of `size` at `path` (a disk that really fills up, or a read-only one); needs root."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs on this machine ({mounted.stderr.strip()}): run as root for the disk tests")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], capture_output=True)


def remount(path: Path, read_only: bool) -> None:
    """Make a tmpfs from mounted_tmpfs read-only, or writable again."""
    subprocess.run(["mount", "-o", "remount," + ("ro" if read_only else "rw"), str(path)], check=True, capture_output=True)


def fill_disk(folder: Path) -> None:
    """Write zeros into `folder` until its file system has no byte left."""
    with open(folder / "filler", "wb") as filler:
        try:
            while True:
                filler.write(bytes(1 << 16))
                filler.flush()
        except OSError:
            pass
    os.sync()


class FakeHttpServer:
    """An HTTP server on 127.0.0.1 that is not MLflow: every request gets `status`, `content_type` and
    `body`, or with `silent` no answer at all; `requests` lists what was asked ("GET /health")."""

    def __init__(self, status: int = 200, content_type: str = "text/html", body: str = "", silent: bool = False):
        fake = self
        self.requests: list[str] = []
        self.release = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self):
                fake.requests.append(f"{self.command} {self.path.split('?')[0]}")
                if silent:
                    fake.release.wait(60)
                    return
                payload = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = answer

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_http_server():
    """Start FakeHttpServer(...) instances for the test; all are closed after it."""
    servers: list[FakeHttpServer] = []

    def start(**answer) -> FakeHttpServer:
        servers.append(FakeHttpServer(**answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
