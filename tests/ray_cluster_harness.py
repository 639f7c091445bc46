"""A local Ray cluster of 1-CPU nodes in a process of its own, driven by a test over stdin/stdout.

Run as `python -m tests.ray_cluster_harness [N_NODES]` (default 3), or through `ClusterHarness`. It
prints one JSON line {"address", "nodes"} once the cluster is up, then answers commands, one per line:
  remove PID [PID ...]  remove the first non-head node running one of these worker pids
  add                   add a node; answers {"added": node_id}
  quit                  shut the cluster down and exit

The cluster lives outside the test process so its Ray state never meets the session's `ray.init`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from ray._private import ray_constants
from ray.cluster_utils import Cluster

NODE_ARGS = {"num_cpus": 1, "include_dashboard": False}
REPO = Path(__file__).resolve().parent.parent


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
