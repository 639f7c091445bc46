"""Real parts for tests: a local Ray with 2 CPUs, `mlflow server` processes on SQLite and on a real
PostgreSQL (tests/servers.py)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import yaml

from tests.servers import MlflowServer, PostgresServer, free_port  # noqa: F401 (tests import free_port from here)

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
