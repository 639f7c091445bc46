"""The scheduler on a real local Ray: long-lived workers reused across packs, results as they arrive;
and its queue's policy for trials that start from another trial's checkpoint, without Ray."""

from __future__ import annotations

from pathlib import Path

from orchestrator import parse_spec
from orchestrator.grid import expand_grid
from orchestrator.scheduler import PackQueue, Scheduler


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


# -- trials that start from another trial's checkpoint (WSD branches) ---------------------------------

STEP = 16 * 32
WSD_SPEC = {
    "name": "wsd",
    "workload": "tiny_lm",
    "axes": {"d_model": [8], "n_tokens": [20 * STEP, 40 * STEP, 400 * STEP]},
    "params": {"n_layers": 1, "head_dim": 8, "context_len": 32, "batch_size": 16, "n_evals": 2,
               "eval_tokens": 2048, "corpus_max_bytes": 1_000_000},
    "schedule": {"kind": "wsd", "warmup": 4 * STEP, "cooldown_fraction": 0.2},
}  # fmt: skip


def wsd_trials(tmp_path):
    spec = parse_spec({**WSD_SPEC, "execution": {"checkpoint_dir": str(tmp_path / "checkpoints")}})
    trials = expand_grid(spec)
    trunk = next(t for t in trials if t.is_trunk)
    branches = sorted((t for t in trials if not t.is_trunk), key=lambda t: t.config["n_tokens"])
    return spec, trunk, branches


def keys(entries) -> list[str]:
    return [pack[0].key for pack, *_ in entries]


def test_a_branch_waits_until_its_trunks_checkpoint_exists_then_queues_behind_what_is_ready(tmp_path):
    _, trunk, branches = wsd_trials(tmp_path)
    queue = PackQueue([[trunk], *([b] for b in branches)])
    assert keys(queue.queue) == [trunk.key] and keys(queue.waiting) == [b.key for b in branches]
    queue.queue.popleft()  # the trunk is dispatched
    Path(branches[1].wsd.start_checkpoint).mkdir(parents=True)  # the trunk got past the second branch point first
    queue.release()
    assert keys(queue.queue) == [branches[1].key] and keys(queue.waiting) == [branches[0].key, branches[2].key]
    assert queue.orphans() == []  # the trunk is still pending: nothing is given up


def test_a_trunk_that_ends_without_a_branchs_checkpoint_fails_only_that_branch(tmp_path):
    _, trunk, branches = wsd_trials(tmp_path)
    queue = PackQueue([[trunk], *([b] for b in branches)])
    for branch in branches[:2]:
        Path(branch.wsd.start_checkpoint).mkdir(parents=True)
    # Its worker died: the retried trunk goes first again and its last branch keeps waiting for it.
    queue.queue.popleft()
    queue.push([trunk], 2, front=True)
    queue.release()
    assert keys(queue.queue) == [trunk.key, branches[0].key, branches[1].key] and keys(queue.waiting) == [branches[2].key]
    stranded = queue.trunk_ended(trunk.key)  # it failed for good
    assert keys(stranded) == [branches[2].key]
    assert trunk.key in stranded[0][2] and branches[2].wsd.start_checkpoint in stranded[0][2]
    assert not queue.waiting


def test_branches_of_a_trunk_finished_in_an_earlier_run_start_from_its_checkpoints_or_say_why_not(tmp_path):
    _, trunk, branches = wsd_trials(tmp_path)
    Path(branches[0].wsd.start_checkpoint).mkdir(parents=True)
    queue = PackQueue([[b] for b in branches])  # the trunk has its FINISHED run: not submitted again
    stranded = queue.orphans()
    assert keys(queue.queue) == [branches[0].key]
    assert keys(stranded) == [branches[1].key, branches[2].key]
    assert "is over without the checkpoint this branch starts from" in stranded[0][2]


def test_on_ray_a_branch_starts_while_its_trunk_goes_on(ray_local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec, trunk, branches = wsd_trials(tmp_path)
    scheduler = Scheduler(spec.workload, spec.resources_per_trial, spec.execution)
    events = []
    results = scheduler.run(
        [[trunk], *([b] for b in branches)],
        lambda pack: events.append(("dispatch", pack[0].key)),
        lambda trial, result: events.append(("result", trial.key)),
    )
    assert {r.trial_key: r.status for r in results} == {t.key: "finished" for t in [trunk, *branches]}
    order = [(kind, key) for kind, key in events]
    assert order[0] == ("dispatch", trunk.key)
    assert order.index(("dispatch", branches[0].key)) < order.index(("result", trunk.key))  # while the trunk trained
    history = {r.trial_key: r.history for r in results}
    assert history[branches[0].key][-1]["resumed_from_step"] == 16  # it started from the trunk's step 16
    assert history[branches[2].key][-1]["resumed_from_step"] == 320
