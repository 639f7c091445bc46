"""A workload that travels in a job's working dir (it is not in scalesweep's wheel), for the cluster test.

Each trial records which node it ran on and where its process imported scalesweep from, then waits
(up to `wait_s`) until trials have started on `nodes` distinct Ray nodes, so every node trains some
however late its workers come up. Its loss follows a known law, reached over `epochs`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import ray
from pydantic import BaseModel, ConfigDict, Field

import orchestrator
from workloads.api import Reporter, TrialSize, Workload


class TracedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(gt=0, description="model size (parameters)")
    d: int = Field(gt=0, description="data size (samples)")
    epochs: int = Field(default=2, gt=0)
    trace_dir: str = Field(description="folder for one JSON trace per trial")
    nodes: int = Field(default=2, ge=1, description="distinct nodes to wait for before training")
    wait_s: float = Field(default=120.0, ge=0, description="longest wait for them (seconds)")


def started_nodes(trace_dir: Path) -> set[str]:
    return {json.loads(p.read_text())["node_id"] for p in trace_dir.glob("*.json")}


class TracedToy(Workload):
    Config = TracedConfig
    model_size_param = "n"
    data_size_param = "d"

    def size(self, config: TracedConfig) -> TrialSize:
        return TrialSize(n_params=config.n, n_samples=config.d, train_flops=6.0 * config.n * config.d * config.epochs)

    def train(self, config: TracedConfig, reporter: Reporter) -> None:
        trace_dir = Path(config.trace_dir)
        trace = {
            "node_id": ray.get_runtime_context().get_node_id(),
            "orchestrator": orchestrator.__file__,
            "python": sys.executable,
            "pid": os.getpid(),
        }
        partial = trace_dir / f".n{config.n}-d{config.d}.tmp"
        partial.write_text(json.dumps(trace))
        os.replace(partial, trace_dir / f"n{config.n}-d{config.d}.json")  # readers never see half a file
        deadline = time.monotonic() + config.wait_s
        while len(started_nodes(trace_dir)) < config.nodes and time.monotonic() < deadline:
            time.sleep(0.2)
        final = 0.5 + 8.0 / config.n**0.5 + 30.0 / config.d**0.4
        for epoch in range(1, config.epochs + 1):
            loss = final * (1 + 1.0 / epoch - 1.0 / config.epochs)
            error = min(loss / 10, 1.0)
            reporter.report(epoch, train_loss=loss, train_error=error, test_loss=loss, test_error=error)
