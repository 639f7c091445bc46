"""Real parts for tests: a local Ray with 2 CPUs and an `mlflow server` process on SQLite."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

# Explicit, so no test depends on whether ~/.ray/auth_token happens to exist.
os.environ["RAY_AUTH_MODE"] = "token"

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}")
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"mlflow server at {url} not healthy after {timeout_s} s")


class MlflowServer:
    """An `mlflow server` subprocess with a SQLite backend on 127.0.0.1; can be stopped and restarted."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        log = open(self.root / "server.log", "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_healthy(self.url, self.process)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # On a loaded machine the server's workers can outlast a graceful shutdown.
                os.killpg(self.process.pid, 9)
                self.process.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


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
def write_spec(tmp_path, mlflow_server):
    """Write a spec YAML whose tracking points at the test server, in an experiment of its own."""

    def write(body: dict, name: str = "spec.yaml") -> Path:
        body = dict(body)
        body.setdefault("name", "sweep")
        body.setdefault("tracking", {"uri": mlflow_server.url, "experiment": f"test-{uuid.uuid4().hex[:8]}"})
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
