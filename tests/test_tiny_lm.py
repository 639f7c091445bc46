"""The byte-level transformer workload: a real sweep end to end, compute tags, and resume after a killed worker."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from orchestrator import load_spec, parse_spec, run_sweep
from orchestrator.cli import app
from orchestrator.grid import expand_grid
from orchestrator.sweep import Sweep
from workloads.api import CheckpointPolicy, Reporter, WSDPart, WSDSchedule, branch_checkpoint_dir
from workloads.tiny_lm import CHECKPOINT_FILE, TinyLM, batch_offsets, eval_steps, load_corpus, lr_at, wsd_lr_at

# Small enough for a shared 2-core CI box: one layer, 32-byte contexts, 300 steps of 16 sequences.
TINY = {
    "n_layers": 1,
    "head_dim": 8,
    "context_len": 32,
    "batch_size": 16,
    "n_tokens": 16 * 32 * 300,
    "lr": 1e-2,
    "n_evals": 2,
    "eval_tokens": 4096,
    "corpus_max_bytes": 1_000_000,
}


def tiny_spec(tmp_path: Path, **overrides) -> dict:
    spec = {
        "name": "tiny-lm",
        "workload": "tiny_lm",
        "axes": {"d_model": [8, 24, 64]},
        "params": dict(TINY),
        "resources_per_trial": {"cpu": 1},
        "execution": {"checkpoint_dir": str(tmp_path / "checkpoints")},
    }
    spec.update(overrides)
    return spec


def test_tiny_lm_sweep_records_hand_computed_compute_and_loss_falls_with_size(ray_local, write_spec, tmp_path):
    path = write_spec(tiny_spec(tmp_path))
    result = CliRunner().invoke(app, ["run", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output

    spec = load_spec(path)
    sweep = Sweep(spec)
    trials = sweep.results().set_index("d_model").sort_index()
    assert list(trials.index) == [8, 24, 64] and set(trials["status"]) == {"finished"}

    # d = 24, L = 1, T = 32 by hand: block 12 d^2 + 2 d = 6960, final LayerNorm 24, so N = 6984;
    # embeddings 256 d + T d = 6912; D = 300 steps x 16 x 32 = 153600 tokens.
    row = trials.loc[24]
    assert row["n_params"] == 6984
    assert row["n_params_with_embeddings"] == 6984 + 6912
    assert row["n_samples"] == 153_600
    assert row["train_flops"] == pytest.approx(6 * 6984 * 153_600, rel=1e-5)
    # PaLM: (6 N + 12 L d T) per token, N counting the tied output layer (256 d) that runs per token.
    assert row["train_flops_with_attention"] == 6 * (6984 + 256 * 24) * 153_600 + 12 * 1 * 24 * 32 * 153_600

    # Bits per byte on held-out bytes, below the 8 bits of a uniform guess, and falling with size.
    losses = list(trials["test_loss"])
    assert all(2.0 < loss < 8.0 for loss in losses)
    assert losses[0] > losses[1] > losses[2], losses
    assert trials["test_error"].between(0, 1).all()
    assert (trials["tokens_seen"] == 153_600).all() and (trials["tokens_per_s"] > 0).all()
    assert (trials["resumed_from_step"] == 0).all()

    history = sweep.history(trials.reset_index())
    assert sorted(history["epoch"].unique()) == [1, 2]
    # Each finished trial leaves its final weights in its own folder, keyed by trial_key.
    for key in trials["trial_key"]:
        final = torch.load(tmp_path / "checkpoints" / key / CHECKPOINT_FILE, weights_only=False)
        assert final["finished"] and final["step"] == 300 and "optimizer" not in final


def test_killed_worker_trial_resumes_from_its_checkpoint_and_finishes_once(ray_local, write_spec, tmp_path):
    # One trial long enough to be killed mid-run, checkpointing every 0.3 s.
    params = {**TINY, "n_tokens": 16 * 32 * 800, "n_evals": 4}
    body = tiny_spec(tmp_path, axes={"d_model": [16]}, params=params)
    body["execution"]["checkpoint_every_s"] = 0.3
    spec = load_spec(write_spec(body))
    (trial,) = expand_grid(spec)
    checkpoint = Path(trial.checkpoint.directory) / CHECKPOINT_FILE
    killed: dict = {}

    def kill_the_worker_after_its_first_checkpoint() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and "pid" not in killed:
            if checkpoint.exists():
                state = torch.load(checkpoint, weights_only=False)
                if not state.get("finished"):
                    killed.update(pid=state["writer_pid"], step=state["step"])
                    os.kill(state["writer_pid"], signal.SIGKILL)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_worker_after_its_first_checkpoint, daemon=True)
    killer.start()
    outcome = run_sweep(spec, progress=False)
    killer.join(timeout=5)
    assert "pid" in killed, "the trial finished before a checkpoint could be killed"
    assert outcome.ok and outcome.counts == {"finished": 1}

    client = MlflowClient(spec.tracking.uri)
    runs = client.search_runs([Sweep(spec).store.experiment_id], filter_string=f"tags.trial_key = '{trial.key}'")
    assert [r.info.status for r in runs] == ["FINISHED"]  # the retry reused the trial's run: one record
    run = runs[0]
    assert run.data.tags["attempts"] == "2"
    resumed = [m.value for m in client.get_metric_history(run.info.run_id, "resumed_from_step")]
    assert max(resumed) >= killed["step"] > 0  # the retry started from the checkpoint, not step 0
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "test_loss")) == [1, 2, 3, 4]


def test_direct_rerun_after_a_crash_resumes_and_replays_history(tmp_path):
    """Without Ray: a trial that dies after a checkpoint resumes in a new call and reports every evaluation."""
    workload = TinyLM()
    config = workload.validate_config({**TINY, "d_model": 8, "n_tokens": 16 * 32 * 40, "n_evals": 4})
    policy = CheckpointPolicy(directory=str(tmp_path / "trial"), every_s=1e-9)  # checkpoint after every step

    class Crash(Exception):
        pass

    class CrashingReporter(Reporter):
        def report(self, epoch, **metrics):
            super().report(epoch, **metrics)
            if epoch == 2:
                raise Crash

    with pytest.raises(Crash):
        workload.train(config, CrashingReporter(checkpoint=policy))
    resumed = Reporter(checkpoint=policy)
    workload.train(config, resumed)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4]
    # The crash came while reporting step 20's evaluation, so the last checkpoint holds step 19.
    assert [row["resumed_from_step"] for row in resumed.history] == [0, 19, 19, 19]
    assert resumed.history[1]["tokens_seen"] == 20 * 512

    # It ends where an uninterrupted trial ends: same batches in the same order, optimizer state restored.
    uninterrupted = Reporter()
    workload.train(config, uninterrupted)
    for after_resume, straight in zip(resumed.history[1:], uninterrupted.history[1:]):
        assert after_resume["test_loss"] == pytest.approx(straight["test_loss"], rel=1e-5)
        assert after_resume["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-5)


def test_schedule_and_data_order_are_fixed_by_the_trial_length_alone():
    config = TinyLM().validate_config({**TINY, "d_model": 8, "n_tokens": 16 * 32 * 100, "warmup_fraction": 0.1})
    lrs = [lr_at(step, config) for step in range(config.n_steps)]
    assert lrs[9] == pytest.approx(config.lr)  # warmup ends after 10% of the steps
    assert lrs[0] == pytest.approx(config.lr / 10)
    assert lrs[-1] == pytest.approx(config.lr * config.min_lr_ratio, rel=1e-2)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[9:], lrs[10:]))  # cosine decay never rises
    assert eval_steps(config) == [50, 100]
    # Batch i is the same for every trial (any model, any seed, any length).
    assert (batch_offsets(7, 10_000, 16) == batch_offsets(7, 10_000, 16)).all()
    assert not (batch_offsets(7, 10_000, 16) == batch_offsets(8, 10_000, 16)).all()


def test_corpus_is_this_pythons_stdlib_by_default_or_any_local_file(tmp_path):
    train, held = load_corpus("stdlib", 200_000)
    assert len(train) + len(held) == 200_000
    assert 0.05 < len(held) / 200_000 < 0.15  # every tenth block is held out
    assert b"def " in train.tobytes() and b"import" in held.tobytes()
    text = tmp_path / "notes.txt"
    text.write_bytes(b"abcdefghij" * 1000)
    train, held = load_corpus(str(text), 10**6)
    assert len(train) == 9000 and len(held) == 1000


def test_checkpoint_folder_is_the_trials_own_and_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tiny_spec(tmp_path, execution={"checkpoint_every_s": 30})
    trials = expand_grid(parse_spec(spec))
    assert {t.checkpoint.directory for t in trials} == {str(tmp_path / "checkpoints" / t.key) for t in trials}
    assert {t.checkpoint.every_s for t in trials} == {30}
    spec["execution"] = {"checkpoint_dir": None}
    assert all(t.checkpoint is None for t in expand_grid(parse_spec(spec)))


def test_importing_the_workload_loads_neither_torch_nor_the_tracking_stack():
    """A spec is read and a sweep planned without torch; a Ray worker never imports mlflow, scipy or pandas."""
    import subprocess
    import sys

    code = "import sys, workloads.tiny_lm; print(sorted({'torch', 'mlflow', 'scipy', 'pandas', 'ray'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_model_classes_live_at_module_level_in_nanogpts_layout():
    from workloads.tiny_lm import build_model
    from workloads.tiny_lm_model import MLP, Block, CausalSelfAttention, GPTConfig, TinyGPT

    config = TinyLM().validate_config({**TINY, "d_model": 24, "n_layers": 2})
    model = build_model(config)
    assert isinstance(model, TinyGPT) and model.config == GPTConfig(256, 32, 2, 24, 3, 4)
    assert isinstance(model.blocks[0], Block) and isinstance(model.blocks[0].attn, CausalSelfAttention)
    assert isinstance(model.blocks[1].mlp, MLP)
    assert model.get_num_params() == TinyLM().size(config).n_params  # Kaplan's N, as orchestrator/compute.py counts it
    assert model.get_num_params(non_embedding=False) == TinyLM().size(config).n_params_with_embeddings
    assert model.head.weight is model.tok_emb.weight
    logits = model(torch.zeros(2, 32, dtype=torch.long))
    assert logits.shape == (2, 32, 256)


# -- warmup-stable-decay: trunks, branches and whole runs ----------------------------------------

STEP = 16 * 32  # tokens per optimizer step of TINY


@pytest.fixture
def one_torch_thread():
    """Train in this process as a Ray worker would (Ray gives a 1-CPU worker one thread): on a shared
    2-core machine a second thread spins more than it helps these small models."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def wsd_config(n_tokens: int):
    return TinyLM().validate_config({**TINY, "d_model": 16, "n_evals": 4, "n_tokens": n_tokens})


def test_wsd_learning_rate_warms_up_holds_then_cools_down_linearly_or_as_one_minus_sqrt():
    config = wsd_config(100 * STEP)
    for shape in ("linear", "1-sqrt"):
        schedule = WSDSchedule(warmup=10 * STEP, cooldown_fraction=0.2, cooldown_shape=shape)
        lrs = [wsd_lr_at(step, config, schedule, decay_start=80) for step in range(100)]
        assert lrs[0] == pytest.approx(config.lr / 10) and lrs[9] == pytest.approx(config.lr)
        assert set(lrs[10:80]) == {config.lr}  # stable
        assert lrs[-1] == pytest.approx(config.lr * config.min_lr_ratio)  # the cooldown ends at the floor
        assert all(a > b for a, b in zip(lrs[79:], lrs[80:]))
        floor, span = config.lr * config.min_lr_ratio, config.lr * (1 - config.min_lr_ratio)
        halfway = (lrs[89] - floor) / span  # 10 of 20 cooldown steps done
        assert halfway == pytest.approx(0.5 if shape == "linear" else 1 - 0.5**0.5)
    # A trunk never decays.
    assert wsd_lr_at(10**6, config, schedule, decay_start=None) == config.lr


def train_trunk(directory: Path, schedule: WSDSchedule, sizes: tuple[int, ...], reporter_class=Reporter) -> Reporter:
    trunk = wsd_config(max(schedule.cooldown_start(size) for size in sizes))
    reporter = reporter_class(checkpoint=CheckpointPolicy(directory=str(directory), every_s=1e9))
    TinyLM().train_wsd(trunk, reporter, WSDPart("trunk", schedule, sizes))
    return reporter


def test_a_branch_from_a_trunk_ends_exactly_where_a_whole_wsd_run_of_its_length_ends(tmp_path, one_torch_thread):
    """Same seed, same batches, a shared prefix: every evaluation of a branch, those it took over
    from its trunk and those of its own cooldown, equals the whole run's (bit for bit on this CPU)."""
    schedule = WSDSchedule(warmup=5 * STEP, cooldown_fraction=0.2, cooldown_shape="1-sqrt")
    sizes = (40 * STEP, 80 * STEP)
    trunk = train_trunk(tmp_path / "trunk", schedule, sizes)
    # The trunk evaluated where each branch evaluates before its cooldown (steps 10, 20, 30 and 20, 40, 60), and at its end.
    assert [row["tokens_seen"] // STEP for row in trunk.history] == [10, 20, 30, 40, 60, 64]
    assert {row["lr"] for row in trunk.history} == {TINY["lr"]}
    for size in sizes:
        folder = branch_checkpoint_dir(str(tmp_path / "trunk"), schedule.cooldown_start(size))
        assert torch.load(folder / CHECKPOINT_FILE, weights_only=False)["step"] == size // STEP * 4 // 5

        branch = Reporter(checkpoint=CheckpointPolicy(directory=str(tmp_path / f"branch-{size}"), every_s=1e9))
        TinyLM().train_wsd(wsd_config(size), branch, WSDPart("branch", schedule, trunk_directory=str(tmp_path / "trunk")))
        whole = Reporter()
        TinyLM().train_wsd(wsd_config(size), whole, WSDPart("scratch", schedule))

        assert [row["epoch"] for row in branch.history] == [1, 2, 3, 4]
        assert branch.history[-1]["resumed_from_step"] == size // STEP * 4 // 5  # it trained only the cooldown
        assert branch.history[-1]["lr"] == pytest.approx(TINY["lr"] * 0.1)
        for mine, theirs in zip(branch.history, whole.history, strict=True):
            for metric in ("test_loss", "test_error", "train_loss", "train_error", "tokens_seen", "lr"):
                assert mine[metric] == pytest.approx(theirs[metric], rel=1e-6, abs=1e-9), (size, mine["epoch"], metric)


def test_a_crashed_trunk_resumes_from_its_own_checkpoint_and_its_branches_still_match(tmp_path, one_torch_thread):
    schedule = WSDSchedule(warmup=5 * STEP, cooldown_fraction=0.25, cooldown_shape="linear")
    sizes = (40 * STEP, 80 * STEP)

    class Crash(Exception):
        pass

    class CrashAfterTheFirstBranchPoint(Reporter):
        def report(self, epoch, **metrics):
            super().report(epoch, **metrics)
            if metrics["tokens_seen"] >= 40 * STEP:
                raise Crash

    with pytest.raises(Crash):
        train_trunk(tmp_path / "trunk", schedule, sizes, CrashAfterTheFirstBranchPoint)
    first = branch_checkpoint_dir(str(tmp_path / "trunk"), schedule.cooldown_start(sizes[0]))
    assert first.is_dir() and not branch_checkpoint_dir(str(tmp_path / "trunk"), schedule.cooldown_start(sizes[1])).exists()
    resumed = train_trunk(tmp_path / "trunk", schedule, sizes)
    assert resumed.history[-1]["resumed_from_step"] == 30  # its checkpoint at the first branch point, not step 0

    branch = Reporter()
    TinyLM().train_wsd(wsd_config(sizes[1]), branch, WSDPart("branch", schedule, trunk_directory=str(tmp_path / "trunk")))
    whole = Reporter()
    TinyLM().train_wsd(wsd_config(sizes[1]), whole, WSDPart("scratch", schedule))
    assert branch.history[-1]["test_loss"] == pytest.approx(whole.history[-1]["test_loss"], rel=1e-6)


def test_a_branch_refuses_a_checkpoint_that_is_not_its_trunks(tmp_path, one_torch_thread):
    from workloads.api import WorkloadError

    schedule = WSDSchedule(warmup=5 * STEP, cooldown_fraction=0.2)
    train_trunk(tmp_path / "trunk", schedule, (40 * STEP,))
    other_seed = wsd_config(40 * STEP).model_copy(update={"seed": 7})
    with pytest.raises(WorkloadError, match="not the checkpoint of this branch's trunk"):
        TinyLM().train_wsd(other_seed, Reporter(), WSDPart("branch", schedule, trunk_directory=str(tmp_path / "trunk")))
    with pytest.raises(WorkloadError, match="no trunk checkpoint"):
        TinyLM().train_wsd(wsd_config(80 * STEP), Reporter(), WSDPart("branch", schedule, trunk_directory=str(tmp_path / "trunk")))
