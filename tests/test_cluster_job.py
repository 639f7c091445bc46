"""A real two-node Ray cluster on this machine runs a sweep submitted as a Ray job.

The cluster is what `ray up` or KubeRay builds, in miniature: a head started with `ray start --head`
and a second node joined with `ray start --address`, token auth on, the dashboard (and so the Jobs
API) bound to 127.0.0.1. The sweep goes in the way cluster/README.md tells users to submit it:
`ray job submit --working-dir . -- scalesweep run spec.yaml --address auto`.

Other Ray clusters may run on the same machine, so this one uses free ports and a temp dir of its
own and is stopped by the process ids it started, never by `ray stop`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from orchestrator import load_spec
from tests.conftest import REPO, free_port

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
# What a job's working dir must not carry to the cluster (Ray caps an upload at 500 MiB).
UPLOAD_EXCLUDES = [".venv", ".git", "**/__pycache__", "mlruns", "mlartifacts", "reports", "*.db", ".pytest_cache"]


class LocalRayCluster:
    """`ray start --head` plus `ray start --address` nodes, each a `--block` process in its own session."""

    def __init__(self, root: Path):
        self.root = root
        self.token = uuid.uuid4().hex
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.processes: list[subprocess.Popen] = []
        self.logs: list = []
        # Every Ray process and the job driver get the same token, never ~/.ray/auth_token (which other
        # clusters on this machine use); the CLI reads it from here too. Nothing inherited may point a
        # command at another cluster (RAY_ADDRESS) or another token (RAY_AUTH_TOKEN_PATH).
        inherited = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        self.env = {
            **inherited,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "RAY_USAGE_STATS_ENABLED": "0",
        }

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _node_ports(self) -> list[str]:
        """Fresh ports for one node: two nodes on one machine must not share Ray's fixed defaults."""
        ports = {
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--metrics-export-port": free_port(),
        }
        # Port 0: every worker process binds a port the OS picks.
        return [str(a) for item in ports.items() for a in item] + ["--min-worker-port", "0", "--max-worker-port", "0"]

    def _start(self, name: str, args: list[str]) -> None:
        """One node: its own temp dir, as on separate machines (nodes sharing one would share the
        unpacked runtime envs, and one node's cleanup would pull a job's working dir from under another)."""
        log = open(self.root / f"{name}.log", "ab")
        self.logs.append(log)
        command = [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                   "--temp-dir", str(self.root / name),
                   "--object-store-memory", str(100 * 1024**2), "--disable-usage-stats", *self._node_ports(), *args]  # fmt: skip
        self.processes.append(
            subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def start(self, n_workers: int = 1, timeout_s: float = 60) -> None:
        self._start(
            "head",
            ["--head", "--port", str(self.gcs_port),
             "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
             "--ray-client-server-port", str(free_port())],
        )  # fmt: skip
        self.wait_for_nodes(1, timeout_s)
        for i in range(n_workers):
            self._start(f"worker{i}", ["--address", f"127.0.0.1:{self.gcs_port}"])
        self.wait_for_nodes(1 + n_workers, timeout_s)

    def alive_nodes(self) -> list[dict]:
        """The cluster's ALIVE nodes, from the state API behind the dashboard."""
        response = requests.get(f"{self.dashboard_url}/api/v0/nodes", headers=self.headers, timeout=5)
        response.raise_for_status()
        return [n for n in response.json()["data"]["result"]["result"] if n["state"] == "ALIVE"]

    def wait_for_nodes(self, n: int, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[:4]} exited with {process.returncode}; see logs in {self.root}")
            try:
                if len(self.alive_nodes()) >= n:
                    return
            except (requests.RequestException, KeyError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{n} Ray nodes not alive after {timeout_s} s; see logs in {self.root}")

    def own_pids(self) -> set[int]:
        """Processes of this cluster alone: in a process group it started, or naming one of its temp dirs."""
        groups = {p.pid for p in self.processes}
        pids = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if os.getpgid(int(entry.name)) in groups or str(self.root) in cmdline:
                    pids.add(int(entry.name))
            except (OSError, ProcessLookupError):
                pass
        return pids

    def stop(self) -> None:
        """Workers first, then the head: a raylet that lost its GCS waits a minute for it to come back.
        Everything worth keeping is in MLflow already, so a node gets 5 s to stop before it is killed."""
        leftovers = self.own_pids()
        for started in reversed(self.processes):
            if started.poll() is None:
                os.killpg(started.pid, signal.SIGTERM)
            try:
                started.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(started.pid, signal.SIGKILL)
                started.wait()
        deadline = time.time() + 5
        while leftovers and time.time() < deadline:
            leftovers = {pid for pid in leftovers if Path(f"/proc/{pid}").exists()}
            time.sleep(0.2)
        for pid in leftovers & self.own_pids():
            os.kill(pid, signal.SIGKILL)
        for log in self.logs:
            log.close()


@pytest.fixture(scope="module")
def ray_cluster():
    # A short root: Ray's unix socket paths live under the temp dir and must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="ss-cluster-"))
    cluster = LocalRayCluster(root)
    try:
        cluster.start(n_workers=1)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_sweep_submitted_as_ray_job_records_one_finished_run_per_trial(ray_cluster, write_spec, toy_spec):
    spec_path = write_spec({**toy_spec, "name": "cluster-job", "axes": {"n": [10, 100], "d": [100, 1000]}})
    # The toy workload lives in tests/, so the job's working dir is the repository (as a team's own
    # workload package would be); Ray uploads a copy, and the spec travels inside it.
    job_spec = REPO / f".cluster-job-{uuid.uuid4().hex[:8]}.yaml"
    job_spec.write_text(spec_path.read_text())
    submission_id = f"sweep-{uuid.uuid4().hex[:8]}"
    try:
        submit = subprocess.run(
            [RAY, "job", "submit", "--address", ray_cluster.dashboard_url, "--submission-id", submission_id,
             "--working-dir", str(REPO), "--runtime-env-json", json.dumps({"excludes": UPLOAD_EXCLUDES}),
             "--", "scalesweep", "run", job_spec.name, "--address", "auto", "--no-progress"],
            env=ray_cluster.env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    finally:
        job_spec.unlink()
    output = submit.stdout + submit.stderr
    assert submit.returncode == 0, output

    job = requests.get(f"{ray_cluster.dashboard_url}/api/jobs/{submission_id}", headers=ray_cluster.headers, timeout=5)
    assert job.json()["status"] == "SUCCEEDED", output
    assert "4 submitted (4 finished)" in output

    spec = load_spec(spec_path)
    client = MlflowClient(spec.tracking.uri)
    experiment = client.get_experiment_by_name(spec.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("scalesweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("scalesweep.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" and r.data.tags["status"] == "finished" for r in children)
    assert len({r.data.tags["trial_key"] for r in children}) == 4
    assert {(r.data.params["n"], r.data.params["d"]) for r in children} == {
        (n, d) for n in ("10", "100") for d in ("100", "1000")
    }

    # One CPU per node and one CPU per trial: both nodes trained, each in a worker of its own.
    node_ids = {node["node_id"][:8] for node in ray_cluster.alive_nodes()}
    used = {r.data.tags["worker"].split(":")[0] for r in children}
    assert used == node_ids and len(used) == 2


def test_jobs_api_refuses_a_request_without_the_token(ray_cluster):
    assert requests.get(f"{ray_cluster.dashboard_url}/api/jobs/", timeout=5).status_code in (401, 403)
    wrong = {"Authorization": f"Bearer {uuid.uuid4().hex}"}
    assert requests.get(f"{ray_cluster.dashboard_url}/api/jobs/", headers=wrong, timeout=5).status_code in (401, 403)
    assert requests.get(f"{ray_cluster.dashboard_url}/api/jobs/", headers=ray_cluster.headers, timeout=5).ok
