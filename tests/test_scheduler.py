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


def test_a_node_that_joins_mid_sweep_gets_workers(write_spec, tmp_path):
    """A one-node cluster (1 CPU) runs one trial at a time until a second node joins; then two."""
    from tests.ray_cluster_harness import ClusterHarness
    from tests.test_faults import assert_each_trial_finished_once, read_pids, toy_body, wait_for

    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    hold = tmp_path / "hold"  # every trial waits at its start while this exists
    hold.touch()
    path = write_spec(toy_body(pid_dir, n=[10, 100, 1000], epochs=2, sleep_s=0.1, hold_while_exists=str(hold)))
    with ClusterHarness(tmp_path / "cluster.log", n_nodes=1) as cluster:
        cluster.start_driver(path, tmp_path / "driver.log")
        wait_for(lambda: len(read_pids(pid_dir)) == 1, 90, "the first trial on the only node")
        added = cluster.ask("add")["added"]
        wait_for(lambda: len(read_pids(pid_dir)) == 2, 60, "a second trial on the new node")
        hold.unlink()
        cluster.wait_driver(timeout_s=120)

    runs = assert_each_trial_finished_once(path, epochs=2)
    nodes = {run.data.tags["worker"].split(":")[0] for run in runs.values()}
    assert added[:8] in nodes and len(nodes) == 2
