"""Ray runs the trials: long-lived worker actors take packs of trials from a queue.

A worker actor imports the workload once and keeps it (and, on a GPU, its CUDA context) for every
pack it runs; it trains a pack with `orchestrator.pack.run_pack` (vmapped where the workload can,
cut to its device's memory). A worker or node that dies takes its pack back to the queue, up to
`max_retries` times; an exception inside a trial is that trial's failure, recorded, not retried.
The scheduler trains nothing itself.

A trial may depend on another's checkpoint (a WSD branch on its trunk, `Trial.depends_on`): it
waits in the `PackQueue` until the checkpoint it starts from exists, then queues while its trunk
goes on. A trunk whose worker died is retried and resumes from its own checkpoint; its branches
wait for it. A trunk that ends (or fails) without a branch's checkpoint fails that branch, with
the reason. The queue's state is plain data, so this policy is tested without Ray.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

import ray
from ray.exceptions import RayError

from orchestrator.grid import Trial
from orchestrator.pack import TrialResult, device_memory_budget, run_pack, run_trial  # noqa: F401 (re-exported)
from orchestrator.spec import Execution, Resources, SpecError

LOCAL_HOST = "127.0.0.1"
LOCAL_METRICS_PORT_VARIABLES = ("AUTOSCALER_METRIC_PORT", "DASHBOARD_METRIC_PORT")


def connect(address: str | None = None, num_cpus: int | None = None, dashboard: bool = False) -> None:
    """Join the Ray cluster at `address`, or start a new local one for this process.

    The local cluster advertises 127.0.0.1 and keeps its dashboard off (or on 127.0.0.1). Ray 2.60's
    gRPC servers still bind every interface, so token auth is what keeps other machines out: with
    RAY_AUTH_MODE unset Ray turns it on for a new local cluster (token in ~/.ray/auth_token); set
    RAY_AUTH_MODE=disabled to opt out. Ray's Prometheus metrics are off: three exporters (the node
    agent's, the autoscaler's and the dashboard head's) would answer anyone over plain HTTP on
    0.0.0.0 without the token (Ray replaces a 127.0.0.1 node address with the machine's, so they
    cannot be kept on loopback), and a sweep records its own numbers in MLflow. docs/security.md
    has the details.
    """
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a laptop sweep reports nothing home
    # The autoscaler's and the dashboard head's exporters have no off switch in Ray 2.60, only a
    # port setting read by those processes; a port that cannot be bound keeps them from starting
    # (each logs the failure to its own file and carries on). Set either variable to keep one.
    for exporter_port in LOCAL_METRICS_PORT_VARIABLES:
        os.environ.setdefault(exporter_port, "-1")
    ray.init(
        # 'local' always starts a new cluster; without it Ray would join whichever cluster this
        # machine started last (another user's `ray start`), ignoring num_cpus.
        address="local",
        num_cpus=num_cpus,
        _node_ip_address=LOCAL_HOST,
        include_dashboard=dashboard,
        dashboard_host=LOCAL_HOST,
        log_to_driver=True,
        configure_logging=True,
        logging_level="WARNING",
        _system_config={"enable_metrics_collection": False},  # the node agent's exporter, and what feeds it
    )


@ray.remote(max_restarts=0, max_task_retries=0)
class TrialWorker:
    """A long-lived process that trains packs of trials of one workload."""

    def __init__(self, workload_ref: str, driver_cwd: str, gpu_share: float = 0.0):
        from orchestrator.driver import die_with_parent

        die_with_parent()  # a worker mid-pack stops with its raylet instead of training on for nobody
        # A team's workload may live in the directory the sweep was started from.
        if driver_cwd not in sys.path:
            sys.path.insert(0, driver_cwd)
        from workloads.api import resolve_workload

        self.workload = resolve_workload(workload_ref)()
        self.gpu_share = gpu_share
        self.name = f"{ray.get_runtime_context().get_node_id()[:8]}:{os.getpid()}"

    def pid(self) -> int:
        return os.getpid()

    def run_pack(self, trials: list[Trial]) -> list[TrialResult]:
        """One result per trial, in order; packed and sized to this worker's device memory now."""
        results = run_pack(self.workload, trials, device_memory_budget(self.gpu_share))
        for result in results:
            result.worker = self.name
        return results


def check_fits_locally(resources: Resources, num_cpus: int | None) -> None:
    """A new local Ray never grows, so a worker it cannot hold would wait forever: refuse the spec
    first, naming the field. (A cluster joined by address, or the Ray this process is already
    connected to, may add nodes; neither is checked.)"""
    if ray.is_initialized():
        return
    cpus = num_cpus or os.cpu_count() or 1
    if resources.cpu > cpus:
        raise SpecError(
            f"resources_per_trial.cpu: {resources.cpu:g} CPUs per worker, but the local Ray has {cpus}; "
            "ask for fewer, or run on a cluster with --address"
        )
    if resources.custom_resources:
        raise SpecError(
            f"resources_per_trial.custom_resources: {', '.join(resources.custom_resources)} per worker, but a new "
            "local Ray has no custom resources; run on a cluster whose nodes advertise them, with --address"
        )
    if resources.gpu != "auto" and resources.gpu > 0:
        import torch

        gpus = torch.cuda.device_count()
        if resources.gpu > gpus:
            raise SpecError(
                f"resources_per_trial.gpu: {resources.gpu:g} GPUs per worker, but torch sees {gpus} on this machine; "
                "use gpu: auto (GPUs when there are any) or 0, or run on a cluster with --address"
            )


def trial_gpus(resources: Resources) -> float:
    """GPUs per worker: an explicit number, or for 'auto' a 1/workers_per_gpu share when Ray has GPUs."""
    if resources.gpu != "auto":
        return float(resources.gpu)
    return 1.0 / resources.workers_per_gpu if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def worker_slots(resources: Resources, gpus: float, cap: int | None) -> int:
    """How many workers the cluster can hold at once, by the scarcest resource."""
    total = ray.cluster_resources()
    slots = int(total.get("CPU", 1) // resources.cpu)
    if gpus > 0:
        slots = min(slots, int(total.get("GPU", 0) / gpus + 1e-9))
    for name, amount in resources.custom_resources.items():
        slots = min(slots, int(total.get(name, 0) / amount + 1e-9))
    slots = max(slots, 1)
    return min(slots, cap) if cap else slots


def checkpoint_exists(trial: Trial) -> bool:
    """Whether the checkpoint a trial starts from is there (a trunk renames it into place whole)."""
    return trial.wsd is not None and trial.wsd.start_checkpoint is not None and Path(trial.wsd.start_checkpoint).is_dir()


class PackQueue:
    """Packs to dispatch, in order, and packs waiting for the checkpoint they start from.

    `queue` holds (pack, attempt) ready to run; `waiting` the packs whose trials depend on a trunk's
    checkpoint that does not exist yet; `pending_trunks` the trunks of this run not yet ended.
    `release()` moves packs whose checkpoints appeared to the back of the queue; `trunk_ended(key)`
    gives back the waiting packs that can never start (their trunk is over and left no checkpoint
    for them). `ready(trial)` says whether a trial's checkpoint exists (on the driver's filesystem,
    which on a cluster is the shared execution.checkpoint_dir).
    """

    def __init__(self, packs: Sequence[list[Trial]], ready: Callable[[Trial], bool] = checkpoint_exists):
        self.ready = ready
        self.queue: deque = deque()
        self.waiting: list[tuple[list[Trial], int]] = []
        self.pending_trunks = {t.key for pack in packs for t in pack if t.is_trunk}
        for pack in packs:
            if pack:
                self.push(list(pack), 1)

    def _blocked(self, pack: list[Trial]) -> bool:
        return any(t.depends_on is not None and not self.ready(t) for t in pack)

    def push(self, pack: list[Trial], attempt: int, front: bool = False) -> None:
        """Queue a pack (a retried one at the front), or hold it while its checkpoint is missing."""
        if self._blocked(pack):
            self.waiting.append((pack, attempt))
        elif front:
            self.queue.appendleft((pack, attempt))
        else:
            self.queue.append((pack, attempt))

    def release(self) -> None:
        """Queue every waiting pack whose checkpoints now exist, in the order they waited."""
        still = []
        for pack, attempt in self.waiting:
            if self._blocked(pack):
                still.append((pack, attempt))
            else:
                self.queue.append((pack, attempt))
        self.waiting = still

    def orphans(self) -> list[tuple[list[Trial], int, str]]:
        """Waiting packs that nothing in this run can unblock: their trunk is not pending (it ended,
        failed, or finished in an earlier run) and their checkpoint is missing, with the reason."""
        self.release()
        lost, still = [], []
        for pack, attempt in self.waiting:
            missing = [t for t in pack if t.depends_on is not None and not self.ready(t)]
            if any(t.depends_on in self.pending_trunks for t in missing):
                still.append((pack, attempt))
                continue
            reasons = [
                f"trunk {t.depends_on} is over without the checkpoint this branch starts from ({t.wsd.start_checkpoint})"
                for t in missing
            ]
            lost.append((pack, attempt, "; ".join(reasons)))
        self.waiting = still
        return lost

    def trunk_ended(self, key: str) -> list[tuple[list[Trial], int, str]]:
        """Note that trunk `key` ended (finished, failed or given up); the packs it leaves stranded."""
        self.pending_trunks.discard(key)
        return self.orphans()

    def __bool__(self) -> bool:
        return bool(self.queue or self.waiting)

    def __len__(self) -> int:
        return len(self.queue) + len(self.waiting)


def check_shared_directory(directory: str) -> None:
    """On a cluster of several nodes, every node must see `directory` (execution.checkpoint_dir),
    where WSD branches read their trunk's checkpoints: the driver writes a file there and a task on
    each alive node looks for it. Raises SpecError naming the nodes that do not see it. (A node that
    joins the cluster later is not checked: a branch there fails, saying which checkpoint it lacks.)"""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
    if len(nodes) < 2:
        return
    root = Path(directory).expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True)
    probe = root / f".shared-probe-{uuid.uuid4().hex}"
    probe.write_text("scalesweep")
    try:
        sees = ray.remote(num_cpus=0)(lambda path: Path(path).is_file())
        found = ray.get(
            [sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(str(probe)) for node in nodes]
        )
    finally:
        probe.unlink(missing_ok=True)
    blind = [node[:8] for node, seen in zip(nodes, found) if not seen]
    if blind:
        raise SpecError(
            f"execution.checkpoint_dir: {root} is not shared: node(s) {', '.join(blind)} of this {len(nodes)}-node cluster "
            "do not see it, and WSD branches there read their trunk's checkpoints from it; put it on storage every "
            "node mounts at the same path (NFS, a cluster file system)"
        )


class Scheduler:
    """Runs packs on a pool of long-lived workers, replacing workers that die and adding workers
    when nodes join the cluster (checked every `grow_every_s` while packs wait). Packs that depend
    on a checkpoint wait in its PackQueue until it exists."""

    def __init__(self, workload_ref: str, resources: Resources, execution: Execution, grow_every_s: float = 5.0):
        self.workload_ref = workload_ref
        self.resources = resources
        self.execution = execution
        self.gpus = trial_gpus(resources)
        self.grow_every_s = grow_every_s
        self.workers: list = []

    @property
    def n_slots(self) -> int:
        """Workers the cluster can hold at once (packs are balanced over this many)."""
        return worker_slots(self.resources, self.gpus, self.execution.max_workers)

    def _new_worker(self):
        options = {"num_cpus": self.resources.cpu, "num_gpus": self.gpus, "resources": dict(self.resources.custom_resources)}
        return TrialWorker.options(**options).remote(self.workload_ref, os.getcwd(), self.gpus)

    def run(
        self,
        packs: Sequence[list[Trial]],
        on_dispatch: Callable[[list[Trial]], None] = lambda pack: None,
        on_result: Callable[[Trial, TrialResult], None] = lambda trial, result: None,
        ready: Callable[[Trial], bool] = checkpoint_exists,
    ) -> list[TrialResult]:
        """Run every pack; return one result per trial, in completion order.

        on_dispatch(pack) runs before a pack is sent to a worker (or is failed without running),
        on_result(trial, result) as each pack's results arrive (and for a pack given up after
        max_retries lost workers, or stranded by its trunk). ready(trial): whether the checkpoint
        a dependent trial starts from exists.
        """
        queue = PackQueue(packs, ready)
        idle: list = []
        inflight: dict = {}
        # Workers join `idle` only once started: after a node is lost the survivors' idle workers
        # may hold every slot, and a pack sent to a worker that cannot be placed waits forever.
        starting: dict = {}
        results: list[TrialResult] = []

        def add_workers(n: int) -> None:
            for _ in range(n):
                worker = self._new_worker()
                self.workers.append(worker)
                starting[worker.pid.remote()] = worker

        def grow() -> None:
            """Start workers for the packs that wait, up to what the cluster holds now."""
            wanted = min(self.n_slots, len(queue) + len(inflight))
            add_workers(max(wanted - len(self.workers), 0))

        grow()
        next_growth = time.monotonic() + self.grow_every_s

        def record(pack: list[Trial], pack_results: list[TrialResult], attempt: int) -> None:
            for trial, result in zip(pack, pack_results):
                result.attempts = attempt
                results.append(result)
                on_result(trial, result)
            for trial in pack:
                if trial.is_trunk:
                    fail_all(queue.trunk_ended(trial.key))

        def fail_all(stranded: list[tuple[list[Trial], int, str]]) -> None:
            for pack, attempt, reason in stranded:
                on_dispatch(pack)  # its runs exist to hold the reason
                record(pack, [TrialResult(t.key, "failed", error=reason) for t in pack], attempt)

        fail_all(queue.orphans())  # branches of trunks that finished in an earlier run and left no checkpoint
        try:
            while queue or inflight:
                queue.release()
                while idle and queue.queue:
                    pack, attempt = queue.queue.popleft()
                    worker = idle.pop()
                    on_dispatch(pack)
                    inflight[worker.run_pack.remote(pack)] = (worker, pack, attempt)
                if queue and time.monotonic() >= next_growth:
                    grow()  # nodes may have joined (an autoscaler, `ray start` on a new machine)
                    next_growth = time.monotonic() + self.grow_every_s
                if queue and not (idle or inflight or starting):
                    reason = "no worker could be started"
                    stranded = [(pack, attempt, reason) for pack, attempt in [*queue.queue, *queue.waiting]]
                    queue.queue.clear()
                    queue.waiting.clear()
                    fail_all(stranded)
                    break
                if queue.waiting and not (queue.queue or inflight or starting):
                    # Nothing queued or running can write the checkpoints the rest wait for.
                    stranded = queue.orphans()
                    stranded += [(pack, attempt, "no trunk left to write its checkpoint") for pack, attempt in queue.waiting]
                    queue.waiting.clear()
                    fail_all(stranded)
                    continue
                ready_refs, _ = ray.wait([*inflight, *starting], num_returns=1, timeout=0.5)
                for ref in ready_refs:
                    if ref in starting:
                        worker = starting.pop(ref)
                        try:
                            ray.get(ref)
                            idle.append(worker)
                        except RayError:
                            self.workers.remove(worker)
                        continue
                    worker, pack, attempt = inflight.pop(ref)
                    try:
                        record(pack, ray.get(ref), attempt)
                        idle.append(worker)
                    except RayError as err:
                        # The worker or its node died: replace the worker, give the pack another go.
                        ray.kill(worker, no_restart=True)
                        self.workers.remove(worker)
                        add_workers(1)
                        if attempt <= self.execution.max_retries:
                            queue.push(pack, attempt + 1, front=True)
                        else:
                            reason = f"gave up after {attempt} attempts: {err.__class__.__name__}: {err}"[:4000]
                            record(pack, [TrialResult(t.key, "failed", error=reason) for t in pack], attempt)
        finally:
            for worker in self.workers:
                ray.kill(worker, no_restart=True)
            self.workers = []
        return results
