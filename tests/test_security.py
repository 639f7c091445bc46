"""Safe defaults a test can see: Ray token auth and no dashboard, the MLflow UI on loopback only.

Safe YAML loading and "the workload import path is the only code a spec runs" are covered by the
malformed-spec files in test_spec.py (a !!python tag is refused and runs nothing).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml

from tests.conftest import REPO, free_port

# Starts a new local Ray the way `scalesweep run` does, with RAY_AUTH_MODE unset, and reports what
# it exposes. Run in a process of its own: the test session's Ray has RAY_AUTH_MODE set explicitly.
PROBE = """
import json, psutil, requests, ray
from ray._private import ray_constants
from ray._private.authentication.authentication_token_setup import _get_default_token_path
from ray._raylet import AuthenticationMode, get_authentication_mode
from orchestrator.scheduler import connect

connect(num_cpus=1)
node = ray.nodes()[0]
listening = sorted({
    (c.laddr.ip, c.laddr.port)
    for p in psutil.Process().children(recursive=True)
    for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
})
agent = f"http://{node['NodeManagerAddress']}:{ray_constants.DEFAULT_DASHBOARD_AGENT_LISTEN_PORT}/api/job_agent/jobs/"
token = _get_default_token_path().read_text().strip()
print(json.dumps({
    "token_auth": get_authentication_mode() == AuthenticationMode.TOKEN,
    "dashboard_url": ray._private.worker.global_worker.node.webui_url,
    "listening_ports": [port for _, port in listening],
    "agent_without_token": requests.post(agent, json={}, timeout=10).status_code,
    "agent_with_token": requests.post(agent, json={}, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code,
}))
ray.shutdown()
"""


def test_new_local_ray_has_token_auth_and_no_dashboard():
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env["PYTHONPATH"] = str(REPO)
    probe = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["token_auth"] is True  # RAY_AUTH_MODE unset: Ray turns token auth on for a new cluster
    assert not seen["dashboard_url"]  # no dashboard, so no Jobs API (CVE-2023-48022) at all
    assert 8265 not in seen["listening_ports"]
    # The per-node agent is the one HTTP server Ray still runs: it refuses requests without the token.
    assert seen["agent_without_token"] == 401
    assert seen["agent_with_token"] != 401


def listening_addresses(root: psutil.Process, port: int) -> set[str]:
    found = set()
    for process in [root, *root.children(recursive=True)]:
        try:
            found |= {c.laddr.ip for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        except psutil.Error:
            pass
    return found


def test_scalesweep_ui_listens_on_loopback_only(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "ui",
                "workload": "tests.toy_workloads:PowerLawToy",
                "axes": {"n": [10]},
                "params": {"d": 100},
                "tracking": {"uri": f"sqlite:///{tmp_path / 'ui.db'}"},
            }
        )
    )
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", str(spec), "--port", str(port)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        root = psutil.Process(ui.pid)
        deadline = time.monotonic() + 120
        addresses: set[str] = set()
        while not addresses and time.monotonic() < deadline and ui.poll() is None:
            time.sleep(0.5)
            addresses = listening_addresses(root, port)
        assert addresses == {"127.0.0.1"}
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


# One harmless, read-only call per gRPC service a Ray process serves: a port refuses a request
# without the token when one of them answers UNAUTHENTICATED and none answers anything but that or
# UNIMPLEMENTED (a service this port does not serve).
RAY_GRPC_PROBES = (
    "/ray.rpc.NodeInfoGcsService/GetClusterId",  # GCS
    "/ray.rpc.NodeManagerService/GetSystemConfig",  # raylet
    "/ray.rpc.ObjectManagerService/Pull",  # raylet's object manager
    "/ray.rpc.CoreWorkerService/NumPendingTasks",  # driver and every worker
    "/ray.rpc.ReporterService/HealthCheck",  # node agent
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",  # node agent's metrics intake
)


def listening_sockets(root: psutil.Process) -> dict[tuple[str, int], str]:
    """(address, port) -> process name, for every socket `root` and its descendants listen on."""
    found = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            for c in process.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    found[(c.laddr.ip, c.laddr.port)] = process.name()
        except psutil.Error:
            pass
    return found


def answer_without_token(address: str, port: int) -> str:
    """'refused' when the port turns away a request that carries no token, else what it answered."""
    import grpc
    import requests

    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)
    host = f"[{host}]" if ":" in host else host
    try:
        response = requests.get(f"http://{host}:{port}/", timeout=10)
    except requests.RequestException:
        pass  # not HTTP/1.1: a gRPC server
    else:
        return "refused" if response.status_code in (401, 403) else f"HTTP {response.status_code}"
    codes = []
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        for method in RAY_GRPC_PROBES:
            try:
                channel.unary_unary(method)(b"", timeout=10)
                codes.append(f"{method}: OK")
            except grpc.RpcError as err:
                codes.append(f"{method}: {err.code().name}")
    if any(code.endswith(": UNAUTHENTICATED") for code in codes) and all(
        code.endswith((": UNAUTHENTICATED", ": UNIMPLEMENTED")) for code in codes
    ):
        return "refused"
    return "; ".join(codes)


@pytest.mark.slow
def test_every_port_of_a_running_sweep_refuses_requests_without_the_token(tmp_path):
    hold, pids = tmp_path / "hold", tmp_path / "pids"
    hold.touch()
    pids.mkdir()
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "ports",
                "workload": "tests.toy_workloads:PowerLawToy",
                "axes": {"n": [10, 20]},
                "params": {"d": 100, "epochs": 1, "hold_while_exists": str(hold), "pid_dir": str(pids)},
                "resources_per_trial": {"cpu": 1},
                "execution": {"mode": "single"},
                "tracking": {"uri": f"sqlite:///{tmp_path / 'ports.db'}"},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # as a user runs it: Ray's default
    env["PYTHONPATH"] = str(REPO)
    sweep = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "run", str(spec), "--num-cpus", "2", "--no-progress"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline and sweep.poll() is None:
            time.sleep(0.5)  # both trials are running in their workers, held
        assert len(list(pids.iterdir())) == 2, sweep.communicate(timeout=60)[0][-3000:] if sweep.poll() is not None else "trials did not start"
        sockets = listening_sockets(psutil.Process(sweep.pid))
        answers = {f"{name} {address}:{port}": answer_without_token(address, port) for (address, port), name in sockets.items()}
    finally:
        hold.unlink()
    output, _ = sweep.communicate(timeout=180)
    assert sweep.returncode == 0, output[-3000:]
    names = " ".join(answers)
    assert "gcs_server" in names and "raylet" in names and "DashboardAgent" in names, answers
    assert sum("TrialWorker" in name or "ray::" in name for name in answers) >= 2, answers  # the workers' own ports
    exposed = {where: answer for where, answer in answers.items() if answer != "refused"}
    assert not exposed, exposed


@pytest.mark.slow
def test_basic_auth_recipe_of_the_docs_starts_as_written_and_behaves_as_they_say(tmp_path):
    """docs/security.md's block, run by bash with two workers: logins are needed, READ users cannot
    write into others' experiments but can create their own, and the auth extra is declared."""
    import tomllib

    import requests

    from tests.servers import BasicAuthMlflowServer

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("Flask-WTF") for dep in extras["auth"])
    server = BasicAuthMlflowServer(tmp_path, workers=2)
    server.start()
    try:
        assert requests.get(f"{server.url}/version", timeout=30).status_code == 401
        admin = (server.ADMIN, server.admin_password)
        # Several requests, so both workers answer some: they share the secret key and the user store.
        assert {requests.get(f"{server.url}/version", auth=admin, timeout=30).status_code for _ in range(6)} == {200}
        assert requests.get(f"{server.url}/version", auth=(server.ADMIN, "not-the-password"), timeout=30).status_code == 401
        team = server.admin_request("POST", "/api/2.0/mlflow/experiments/create", json={"name": "team"}).json()["experiment_id"]
        reader = ("reader", server.create_user("reader"))
        write = requests.post(f"{server.url}/api/2.0/mlflow/runs/create", json={"experiment_id": team}, auth=reader, timeout=30)
        assert write.status_code == 403
        read = requests.get(f"{server.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": team}, auth=reader, timeout=30)
        assert read.status_code == 200
        # What the docs warn about: READ does not stop a logged-in user from creating an experiment.
        own = requests.post(f"{server.url}/api/2.0/mlflow/experiments/create", json={"name": "readers-own"}, auth=reader, timeout=30)
        assert own.status_code == 200
        run = requests.post(f"{server.url}/api/2.0/mlflow/runs/create", json={"experiment_id": own.json()["experiment_id"]}, auth=reader, timeout=30)
        assert run.status_code == 200
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert server.admin_password not in log
