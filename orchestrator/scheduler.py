"""Ray runs the trials: long-lived worker actors take packs of trials from a queue.

A worker actor imports the workload once and keeps it (and, on a GPU, its CUDA context) for every
pack it runs. A worker or node that dies takes its pack back to the queue, up to `max_retries`
times; an exception inside a trial is that trial's failure, recorded, not retried. The scheduler
trains nothing itself.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import ray
from ray.exceptions import RayError

from orchestrator.grid import Trial
from orchestrator.spec import Execution, Resources

LOCAL_HOST = "127.0.0.1"


@dataclass
class TrialResult:
    """What a trial left behind: status (finished, failed, diverged), per-epoch metrics, timing."""

    trial_key: str
    status: str
    history: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0
    attempts: int = 1
    worker: str = ""


def connect(address: str | None = None, num_cpus: int | None = None, dashboard: bool = False) -> None:
    """Join the Ray cluster at `address`, or start a local one that listens on 127.0.0.1 only.

    With RAY_AUTH_MODE unset, Ray turns token auth on for a new local cluster (a token in
    ~/.ray/auth_token); set RAY_AUTH_MODE=disabled to opt out.
    """
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    ray.init(
        num_cpus=num_cpus,
        _node_ip_address=LOCAL_HOST,
        include_dashboard=dashboard,
        dashboard_host=LOCAL_HOST,
        log_to_driver=True,
        configure_logging=True,
        logging_level="WARNING",
    )


def run_trial(workload, trial: Trial) -> TrialResult:
    """Train one trial inside a worker; its own exceptions become a failed (or diverged) result."""
    from workloads.api import Reporter, TrialDiverged

    reporter = Reporter()
    start = time.perf_counter()
    try:
        workload.train(workload.validate_config(trial.config), reporter)
        status, error = "finished", None
    except TrialDiverged as err:
        status, error = "diverged", str(err)
    except Exception:
        status, error = "failed", traceback.format_exc(limit=20)
    return TrialResult(trial.key, status, reporter.history, error, time.perf_counter() - start)


@ray.remote(max_restarts=0, max_task_retries=0)
class TrialWorker:
    """A long-lived process that trains packs of trials of one workload."""

    def __init__(self, workload_ref: str, driver_cwd: str):
        # A team's workload may live in the directory the sweep was started from.
        if driver_cwd not in sys.path:
            sys.path.insert(0, driver_cwd)
        from workloads.api import resolve_workload

        self.workload = resolve_workload(workload_ref)()
        self.name = f"{ray.get_runtime_context().get_node_id()[:8]}:{os.getpid()}"

    def pid(self) -> int:
        return os.getpid()

    def run_pack(self, trials: list[Trial]) -> list[TrialResult]:
        results = []
        for trial in trials:
            result = run_trial(self.workload, trial)
            result.worker = self.name
            results.append(result)
        return results


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
    slots = max(slots, 1)
    return min(slots, cap) if cap else slots


class Scheduler:
    """Runs packs on a pool of long-lived workers, replacing workers that die."""

    def __init__(self, workload_ref: str, resources: Resources, execution: Execution):
        self.workload_ref = workload_ref
        self.resources = resources
        self.execution = execution
        self.gpus = trial_gpus(resources)
        self.workers: list = []

    def _new_worker(self):
        options = {"num_cpus": self.resources.cpu, "num_gpus": self.gpus}
        return TrialWorker.options(**options).remote(self.workload_ref, os.getcwd())

    def run(
        self,
        packs: Sequence[list[Trial]],
        on_dispatch: Callable[[list[Trial]], None] = lambda pack: None,
        on_result: Callable[[Trial, TrialResult], None] = lambda trial, result: None,
    ) -> list[TrialResult]:
        """Run every pack; return one result per trial, in completion order."""
        queue = deque((list(pack), 1) for pack in packs if pack)
        n_workers = min(worker_slots(self.resources, self.gpus, self.execution.max_workers), len(queue))
        idle = [self._new_worker() for _ in range(n_workers)]
        self.workers = list(idle)
        inflight: dict = {}
        # Replacements join `idle` only once started: after a node is lost the survivors' idle
        # workers may hold every slot, and a pack sent to a worker that cannot be placed waits forever.
        starting: dict = {}
        results: list[TrialResult] = []

        def record(pack: list[Trial], pack_results: list[TrialResult], attempt: int) -> None:
            for trial, result in zip(pack, pack_results):
                result.attempts = attempt
                results.append(result)
                on_result(trial, result)

        try:
            while queue or inflight:
                while idle and queue:
                    pack, attempt = queue.popleft()
                    worker = idle.pop()
                    on_dispatch(pack)
                    inflight[worker.run_pack.remote(pack)] = (worker, pack, attempt)
                if queue and not (idle or inflight or starting):
                    reason = "no worker could be started"
                    while queue:
                        pack, attempt = queue.popleft()
                        record(pack, [TrialResult(t.key, "failed", error=reason) for t in pack], attempt)
                    break
                ready, _ = ray.wait([*inflight, *starting], num_returns=1, timeout=0.5)
                for ref in ready:
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
                        replacement = self._new_worker()
                        self.workers.append(replacement)
                        starting[replacement.pid.remote()] = replacement
                        if attempt <= self.execution.max_retries:
                            queue.appendleft((pack, attempt + 1))
                        else:
                            reason = f"gave up after {attempt} attempts: {err.__class__.__name__}: {err}"[:4000]
                            record(pack, [TrialResult(t.key, "failed", error=reason) for t in pack], attempt)
        finally:
            for worker in self.workers:
                ray.kill(worker, no_restart=True)
            self.workers = []
        return results
