"""The scheduler on a real local Ray: long-lived workers reused across packs, results as they arrive."""

from __future__ import annotations

from orchestrator import parse_spec
from orchestrator.grid import expand_grid
from orchestrator.scheduler import Scheduler


def test_workers_are_reused_across_packs_and_results_arrive_per_pack(ray_local):
    spec = parse_spec(
        {
            "name": "s",
            "workload": "tests.toy_pack_workloads:PackedPowerLawToy",
            "axes": {"n": [10, 20, 30, 40, 50, 60], "d": [100, 200]},
            "params": {"epochs": 1},
            "execution": {"max_workers": 2},
        }
    )
    trials = expand_grid(spec)
    packs = [trials[i : i + 2] for i in range(0, len(trials), 2)]  # six packs of two
    scheduler = Scheduler(spec.workload, spec.resources_per_trial, spec.execution)
    dispatched, arrived = [], []
    results = scheduler.run(packs, dispatched.append, lambda trial, result: arrived.append((trial.key, result.pack_size)))
    assert len(dispatched) == 6
    assert sorted(arrived) == sorted((t.key, 2) for t in trials)  # each pack trained together
    assert len({r.worker for r in results}) == 2  # two worker processes did all six packs
    assert {r.status for r in results} == {"finished"}
    assert scheduler.workers == []  # and are gone once the sweep is over
