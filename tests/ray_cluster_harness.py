"""Local Ray clusters for tests, two kinds.

`LocalRayCluster`: what `ray up` or KubeRay builds, in miniature: `ray start --head` and `ray start
--address` processes, token auth on, the dashboard (and so the Jobs API) on 127.0.0.1, each node with
a temp dir of its own as on separate machines; optionally run from `python_without_scalesweep()`, a
Python environment with every dependency of scalesweep but not scalesweep itself.

`ClusterHarness`: a `ray.cluster_utils.Cluster` of 1-CPU nodes in a process of its own, driven by a
test over stdin/stdout, for tests that remove and add nodes.

Run as `python -m tests.ray_cluster_harness [N_NODES]` (default 3), or through `ClusterHarness`. It
prints one JSON line {"address", "nodes"} once the cluster is up, then answers commands, one per line:
  remove PID [PID ...]  remove the first non-head node running one of these worker pids
  add                   add a node; answers {"added": node_id}
  quit                  shut the cluster down and exit

It lives outside the test process so its Ray state never meets the session's `ray.init`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
import venv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from tests.servers import free_port

NODE_ARGS = {"num_cpus": 1, "include_dashboard": False}
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # this environment's scripts: ray, scalesweep


def python_without_scalesweep(root: Path) -> Path:
    """A venv at root with every package of this environment but scalesweep; returns its bin dir.

    Its site-packages links to each entry of this one's except scalesweep's own: its metadata and
    the finder of an editable install. (A .pth line naming this site-packages would be quicker to
    write but leaves scalesweep's metadata visible, and pip then counts scalesweep as installed.)
    Its bin dir gets a `ray` script; `scalesweep` exists there only once someone installs it.
    """
    venv.EnvBuilder(symlinks=True, with_pip=False).create(root)
    ours = Path(sysconfig.get_paths()["purelib"])
    python = root / "bin" / "python"
    theirs = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    for entry in ours.iterdir():
        if not entry.name.startswith(("scalesweep-", "__editable__.scalesweep-", "__editable___scalesweep_")):
            (theirs / entry.name).symlink_to(entry)
    script = root / "bin" / "ray"
    script.write_text(f"#!{python}\nimport sys\nfrom ray.scripts.scripts import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return root / "bin"


class LocalRayCluster:
    """`ray start --head` plus `ray start --address` nodes, each a `--block` process in its own session."""

    def __init__(self, root: Path, bin_dir: Path = BIN):
        self.root = root
        self.ray = str(bin_dir / "ray")
        self.token = uuid.uuid4().hex
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.processes: list[subprocess.Popen] = []
        self.logs: list = []
        # Every Ray process and the job driver get the same token, never ~/.ray/auth_token (which other
        # clusters on this machine use); the CLI reads it from here too. Nothing inherited may point a
        # command at another cluster (RAY_ADDRESS) or another token (RAY_AUTH_TOKEN_PATH), or make the
        # nodes import another environment's packages (PYTHONPATH, VIRTUAL_ENV, this env's scripts).
        inherited = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "PYTHONPATH", "VIRTUAL_ENV")}
        others = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p) not in (BIN, bin_dir)]
        self.env = {
            **inherited,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "PATH": os.pathsep.join([str(bin_dir), *others]),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        if bin_dir != BIN:
            self.env["VIRTUAL_ENV"] = str(bin_dir.parent)

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
        command = [self.ray, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                   "--temp-dir", str(self.root / name),
                   "--object-store-memory", str(100 * 1024**2), "--disable-usage-stats", *self._node_ports(), *args]  # fmt: skip
        self.processes.append(  # cwd outside any checkout: nothing is importable from it
            subprocess.Popen(command, env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def start(self, n_workers: int = 1, timeout_s: float = 60, worker_resources: dict | None = None) -> None:
        """The head, then n_workers nodes; worker_resources: custom resources each worker advertises."""
        self._start(
            "head",
            ["--head", "--port", str(self.gcs_port),
             "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
             "--ray-client-server-port", str(free_port())],
        )  # fmt: skip
        self.wait_for_nodes(1, timeout_s)
        for i in range(n_workers):
            extra = ["--resources", json.dumps(worker_resources)] if worker_resources else []
            self._start(f"worker{i}", ["--address", f"127.0.0.1:{self.gcs_port}", *extra])
        self.wait_for_nodes(1 + n_workers, timeout_s)

    def alive_nodes(self) -> list[dict]:
        """The cluster's ALIVE nodes, from the state API behind the dashboard."""
        response = requests.get(f"{self.dashboard_url}/api/v0/nodes", headers=self.headers, timeout=5)
        response.raise_for_status()
        return [n for n in response.json()["data"]["result"]["result"] if n["state"] == "ALIVE"]

    def node_dirs(self) -> dict[str, Path]:
        """Each node's id and its temp dir (where its runtime envs are unpacked). Ray names a few
        files of a node's session after the node: <temp>/session_latest/runtime_env_agent_port_<id>."""
        dirs = {}
        for started in self.processes:
            temp_dir = Path(started.args[started.args.index("--temp-dir") + 1])
            for marker in (temp_dir / "session_latest").glob("runtime_env_agent_port_*"):
                dirs[marker.name.rsplit("_", 1)[1]] = temp_dir
        return dirs

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



def raylet_pid(node) -> int:
    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def node_of(pid: int, nodes: list) -> object | None:
    """The node whose raylet started worker `pid` (a worker is the raylet's child)."""
    by_raylet = {raylet_pid(node): node for node in nodes}
    try:
        process = psutil.Process(pid)
        for ancestor in [process, *process.parents()]:
            if ancestor.pid in by_raylet:
                return by_raylet[ancestor.pid]
    except psutil.NoSuchProcess:
        return None
    return None


def say(data: dict) -> None:
    print(json.dumps(data), flush=True)


class ClusterHarness:
    """The harness as a subprocess: `with ClusterHarness(log, n_nodes) as cluster:`, then
    `cluster.info["address"]`, `cluster.ask("add")`, and a `scalesweep run` driver joined to it."""

    def __init__(self, log_path: Path, n_nodes: int = 3, start_timeout_s: float = 120):
        self.driver: subprocess.Popen | None = None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.ray_cluster_harness", str(n_nodes)],
            cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log_path, "w"), text=True,
        )  # fmt: skip
        self._reader = ThreadPoolExecutor(1)
        try:
            self.info = self._reply(start_timeout_s)
        except BaseException:
            self.close()
            raise

    def _reply(self, timeout_s: float) -> dict:
        return json.loads(self._reader.submit(self.process.stdout.readline).result(timeout=timeout_s))

    def ask(self, command: str, timeout_s: float = 60) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._reply(timeout_s)

    def start_driver(self, spec_path: Path, log_path: Path) -> subprocess.Popen:
        """`scalesweep run SPEC --address <this cluster>` in a subprocess, its output in log_path."""
        command = [sys.executable, "-m", "orchestrator.cli", "run", str(spec_path), "--address", self.info["address"], "--no-progress"]
        self._driver_log = log_path
        self.driver = subprocess.Popen(command, cwd=REPO, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
        return self.driver

    def wait_driver(self, timeout_s: float) -> None:
        """Wait for the driver to end; it must exit 0."""
        self.driver.wait(timeout=timeout_s)
        assert self.driver.returncode == 0, self._driver_log.read_text()

    def close(self) -> None:
        if self.driver is not None and self.driver.poll() is None:
            self.driver.kill()
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
        self._reader.shutdown(wait=False)

    def __enter__(self) -> ClusterHarness:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main() -> None:
    n_nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    cluster = Cluster(initialize_head=True, head_node_args=NODE_ARGS)
    for _ in range(n_nodes - 1):
        cluster.add_node(**NODE_ARGS)
    cluster.wait_for_nodes()
    say({"address": cluster.address, "nodes": [n.node_id for n in cluster.list_all_nodes()]})
    try:
        for line in sys.stdin:
            command, *args = line.split()
            if command == "quit":
                break
            if command == "remove":
                workers = list(cluster.worker_nodes)
                found = [node_of(int(pid), workers) for pid in args]
                node = next((n for n in found if n is not None), None)
                if node is not None:
                    cluster.remove_node(node, allow_graceful=False)
                say({"removed": node.node_id if node is not None else None})
            if command == "add":
                node = cluster.add_node(**NODE_ARGS)
                cluster.wait_for_nodes()
                say({"added": node.node_id})
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
