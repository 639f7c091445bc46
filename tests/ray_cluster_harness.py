"""A 3-node local Ray cluster in a process of its own, driven by a test over stdin/stdout.

Run as `python -m tests.ray_cluster_harness`. It prints one JSON line {"address", "nodes"} once the
cluster is up, then answers commands, one per line:
  remove PID [PID ...]  remove the first non-head node running one of these worker pids
  quit                  shut the cluster down and exit

The cluster lives outside the test process so its Ray state never meets the session's `ray.init`.
"""

from __future__ import annotations

import json
import sys

import psutil
from ray._private import ray_constants
from ray.cluster_utils import Cluster

NODE_ARGS = {"num_cpus": 1, "include_dashboard": False}


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


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args=NODE_ARGS)
    for _ in range(2):
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
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
