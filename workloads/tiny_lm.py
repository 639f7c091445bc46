"""Byte-level decoder-only transformers: the language-model setting of Kaplan et al. 2020 and
Hoffmann et al. 2022 (Chinchilla), small enough for a CPU.

Model size N is set by width (`d_model`) and depth (`n_layers`): nanoGPT's layout (pre-norm blocks,
bias-free layers, a 4x GELU MLP, learned positions, output layer tied to the token embedding), so
N = L (12 d^2 + 2 d) + d without embeddings, see orchestrator/compute.py. The model's classes live in
workloads/tiny_lm_model.py, imported only by the train loop: importing this module loads no torch. Data size D is the number of
training tokens seen; a token is a byte (vocabulary 256), so no tokenizer is needed.

Corpus: by default the Python standard library's own sources on this machine (found with `sysconfig`,
no network), read in sorted path order up to `corpus_max_bytes`; `corpus` may name any local file or
folder instead. The text is cut into blocks and every tenth block is held out, a split fixed by the
corpus alone. Because the default corpus is this interpreter's stdlib, losses compare across trials on
one Python version, not across versions.

Metrics, per evaluation (`n_evals` of them, spread evenly over the trial; the reporter's epoch is the
evaluation's index): test_loss is the held-out cross-entropy in bits per byte; test_error the byte
error rate, the fraction of held-out bytes whose most likely prediction is wrong (an LM's analogue of
a classifier's error); train_loss and train_error the same over the training batches since the last
evaluation. Also tokens_seen, tokens_per_s (training throughput, evaluation excluded), lr,
resumed_from_step (the step this attempt started from: 0 unless resumed from a checkpoint) and mfu
where the GPU's peak FLOP/s is known (orchestrator/compute.py).

Training: AdamW, linear warmup then cosine decay to `min_lr_ratio * lr`, both scaled to the trial's
own number of steps. Every trial reads the same batches in the same order: batch i is drawn from a
generator seeded by (DATA_SEED, i), independent of the model and seed, so a longer trial sees a
superset of a shorter one's data (repeating the corpus once D exceeds it).

Warmup-stable-decay (`train_wsd`, Hägele et al. 2024): linear warmup over `schedule.warmup` tokens,
the peak rate held, then a cooldown over the last `cooldown_fraction` of the trial's tokens to
`min_lr_ratio * lr`, linear or 1-sqrt (`warmup_fraction` is not used). A trunk never cools down; it
writes a checkpoint at each of its branches' cooldown starts and evaluates wherever a branch would, so
a branch, which starts from that checkpoint, reports the history of a whole WSD run of its length
(the same batches, the same steps: equal to it bit for bit on a CPU).

Checkpoints: with a `CheckpointPolicy` from the reporter, the trial writes model, optimizer, step,
every evaluation so far and its running training totals (float64, since step 0) every `every_s`
seconds (atomically), and a retry after a crash resumes from there, replaying the earlier evaluations
to the reporter; the finished trial leaves its final weights. train_loss over any stretch between
two evaluations is a difference of running totals, which is what lets a branch rebuild its trunk's
part of its history.

Packing: trials of one shape (same d_model, n_layers, context, batch size) differing only in seed can
train together with stacked weights (torch.func.functional_call + vmap). One catch, checked with torch
2.13: vmap has no batching rule for scaled_dot_product_attention's CPU kernel and falls back to a
per-member loop (with a warning), so a packed model should fold the pack into attention's batch
dimension instead (attention holds no weights; only the linear layers need per-member weights, an
einsum over the stacked matrices). Trials that differ only in D could share a pack too, each with its
own LR schedule, leaving as its step count runs out. An IsoFLOP sweep gains little: within a budget
every trial has a different shape, so only its seeds pack. Not implemented: one trial per call.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator import compute
from workloads.api import (
    CheckpointPolicy,
    Reporter,
    TrialSize,
    Workload,
    WorkloadError,
    WSDPart,
    WSDSchedule,
    branch_checkpoint_dir,
)

VOCAB_SIZE = 256  # bytes
MLP_RATIO = 4
DATA_SEED = 1234  # fixes the batch order of every trial
HELDOUT_EVERY = 10  # every tenth block of the corpus is held out
MAX_BLOCK_BYTES = 65_536
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idlelib"}
CHECKPOINT_FILE = "checkpoint.pt"


class TinyLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    d_model: int = Field(gt=0, le=8192, description="width d: channels of the residual stream")
    n_layers: int = Field(default=2, ge=1, le=96, description="transformer blocks L")
    head_dim: int = Field(default=16, gt=0, description="channels per attention head; heads = d_model / head_dim")
    context_len: int = Field(default=128, ge=2, le=8192, description="tokens (bytes) per sequence T")
    n_tokens: int = Field(gt=0, description="training tokens D (bytes seen, repeats counted); rounded down to whole steps")
    batch_size: int = Field(default=32, gt=0, description="sequences per optimizer step")
    lr: float = Field(default=3e-3, gt=0, description="peak learning rate")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="final learning rate as a fraction of lr")
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1, description="share of the trial's steps spent warming up")
    weight_decay: float = Field(default=0.1, ge=0)
    grad_clip: float = Field(default=1.0, ge=0, description="max global gradient norm; 0 turns clipping off")
    n_evals: int = Field(default=8, ge=1, description="held-out evaluations over the trial (the reported epochs)")
    eval_tokens: int = Field(default=32_768, gt=0, description="held-out tokens per evaluation")
    corpus: str = Field(default="stdlib", description="'stdlib' (this Python's stdlib sources) or a local file or folder")
    corpus_max_bytes: int = Field(default=8_000_000, gt=0, description="bytes of the corpus read, at most")
    seed: int = Field(default=0, ge=0, description="model initialization")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(default="auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")

    @model_validator(mode="after")
    def _shape_fits(self) -> TinyLMConfig:
        if self.d_model % self.head_dim:
            raise ValueError(f"d_model={self.d_model} is not a multiple of head_dim={self.head_dim}")
        step_tokens = self.batch_size * self.context_len
        if self.n_tokens < step_tokens:
            raise ValueError(
                f"n_tokens={self.n_tokens} is fewer than one step of batch_size x context_len = {step_tokens} tokens"
            )
        return self

    @property
    def n_heads(self) -> int:
        return self.d_model // self.head_dim

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context_len

    @property
    def n_steps(self) -> int:
        return self.n_tokens // self.tokens_per_step


# -- accounting --------------------------------------------------------------------------------


def matmul_params(config: TinyLMConfig) -> int:
    """Parameters in a per-token matmul: the blocks and the tied output layer (V x d), in parameters."""
    return compute.transformer_params_without_embeddings(config.n_layers, config.d_model, MLP_RATIO) + VOCAB_SIZE * config.d_model


def flops_per_token_with_attention(config: TinyLMConfig) -> float:
    """Training FLOPs per token, 6 N + 12 L d T (PaLM, appendix B), N = matmul_params."""
    return compute.train_flops_with_attention(matmul_params(config), 1, config.n_layers, config.d_model, config.context_len)


def trial_size(config: TinyLMConfig) -> TrialSize:
    """N without embeddings (Kaplan), D = tokens actually seen (whole steps), C = 6 N D and with attention."""
    n_params = compute.transformer_params_without_embeddings(config.n_layers, config.d_model, MLP_RATIO)
    tokens = config.n_steps * config.tokens_per_step
    return TrialSize(
        n_params=n_params,
        n_samples=tokens,
        train_flops=compute.train_flops(n_params, tokens),
        n_params_with_embeddings=compute.transformer_params_with_embeddings(
            config.n_layers, config.d_model, VOCAB_SIZE, config.context_len, MLP_RATIO
        ),
        train_flops_with_attention=compute.train_flops_with_attention(
            matmul_params(config), tokens, config.n_layers, config.d_model, config.context_len
        ),
    )


def lr_at(step: int, config: TinyLMConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine to min_lr_ratio * lr."""
    warmup = max(1, round(config.warmup_fraction * config.n_steps))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.n_steps - warmup)
    floor = config.min_lr_ratio * config.lr
    return floor + 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * (config.lr - floor)


def eval_steps(config: TinyLMConfig) -> list[int]:
    """The step counts after which the held-out set is evaluated, evenly spread, ending at the last step."""
    return sorted({max(1, round(config.n_steps * k / config.n_evals)) for k in range(1, config.n_evals + 1)})


# -- corpus ------------------------------------------------------------------------------------


def corpus_files(source: str) -> list[Path]:
    """The corpus's files in a fixed order: sorted relative paths ('stdlib': *.py, tests left out)."""
    if source == "stdlib":
        root, pattern = Path(sysconfig.get_paths()["stdlib"]), ".py"
    else:
        root, pattern = Path(source).expanduser(), ""
        if root.is_file():
            return [root]
        if not root.is_dir():
            raise WorkloadError(f"corpus {source!r} is neither 'stdlib' nor an existing file or folder")
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        files += [Path(folder) / n for n in names if n.endswith(pattern) and not n.startswith(".")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


@functools.lru_cache(maxsize=2)
def load_corpus(source: str, max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) byte arrays (uint8): the first max_bytes of the corpus, every tenth block held out."""
    chunks, total = [], 0
    for path in corpus_files(source):
        data = path.read_bytes()[: max_bytes - total]
        chunks.append(data)
        total += len(data)
        if total >= max_bytes:
            break
    text = np.frombuffer(b"".join(chunks), dtype=np.uint8)
    block = min(MAX_BLOCK_BYTES, max(1, len(text) // (2 * HELDOUT_EVERY)))
    index = np.arange(len(text)) // block
    held = index % HELDOUT_EVERY == HELDOUT_EVERY - 1
    return text[~held].copy(), text[held].copy()


def batch_offsets(step: int, n_positions: int, batch_size: int) -> np.ndarray:
    """Start positions of step `step`'s sequences: the same for every trial of one batch shape."""
    return np.random.default_rng([DATA_SEED, step]).integers(0, n_positions, size=batch_size)


# -- model (nanoGPT's layout, in workloads/tiny_lm_model.py) -------------------------------------


def build_model(config: TinyLMConfig):
    """The trial's TinyGPT, initialized from torch's current RNG state (imports torch)."""
    from workloads.tiny_lm_model import GPTConfig, TinyGPT

    shape = GPTConfig(VOCAB_SIZE, config.context_len, config.n_layers, config.d_model, config.n_heads, MLP_RATIO)
    return TinyGPT(shape)


# -- training ----------------------------------------------------------------------------------

# 2: checkpoints hold every evaluation and running training totals (1 kept a window since the last).
CHECKPOINT_FORMAT = 2


@dataclass(frozen=True)
class RunPlan:
    """What one call of the train loop does, all in optimizer steps.

    lr: the learning rate of each step (0-based). evals: the steps after which the held-out set is
    evaluated; reported: those that become the reporter's epochs (a trunk evaluates where its branches
    would and reports them all; a branch reports its own). branch_saves: step -> folder a trunk fills
    there for its branches. identity: what a checkpoint must hold to be resumed by this call.
    start_from: for a branch, reads the trunk's state it starts from when it has no checkpoint of its own.
    """

    lr: Callable[[int], float]
    evals: frozenset[int]
    reported: frozenset[int]
    identity: dict
    branch_saves: dict[int, Path] = field(default_factory=dict)
    start_from: Callable[[], dict] | None = None


def wsd_lr_at(step: int, config: TinyLMConfig, schedule: WSDSchedule, decay_start: int | None) -> float:
    """Learning rate of step `step` (0-based) under warmup-stable-decay: linear warmup over
    schedule.warmup tokens, the peak held, and from step `decay_start` (None: never) a cooldown
    shaped by schedule.cooldown_shape that reaches min_lr_ratio * lr at the trial's last step."""
    warmup = max(1, round(schedule.warmup / config.tokens_per_step))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if decay_start is None or step < decay_start:
        return config.lr
    floor = config.min_lr_ratio * config.lr
    progress = (step + 1 - decay_start) / max(1, config.n_steps - decay_start)
    return floor + schedule.cooldown_factor(progress) * (config.lr - floor)


def cooldown_start_step(config: TinyLMConfig, schedule: WSDSchedule) -> int:
    """The step after which a run of this config's length starts to cool down (its branch point)."""
    return schedule.cooldown_start(config.n_tokens) // config.tokens_per_step


def _wsd_identity(config: TinyLMConfig, part: WSDPart) -> dict:
    schedule = part.schedule
    return {
        "config": config.model_dump(mode="json"),
        "wsd": {"kind": part.kind, "warmup": schedule.warmup, "cooldown_fraction": schedule.cooldown_fraction,
                "cooldown_shape": schedule.cooldown_shape, "branch_sizes": list(part.branch_sizes)},
    }  # fmt: skip


def wsd_plan(config: TinyLMConfig, part: WSDPart, directory: str | None) -> RunPlan:
    """The RunPlan of a trunk, a branch or a whole WSD run (see workloads.api.WSDPart); `directory`
    is the trial's own checkpoint folder (a trunk's branch folders go there)."""
    schedule, identity = part.schedule, _wsd_identity(config, part)
    if part.kind == "trunk":
        if directory is None:
            raise WorkloadError("a WSD trunk needs a checkpoint folder for its branches (execution.checkpoint_dir)")
        evals, saves = {config.n_steps}, {}
        for size in part.branch_sizes:
            branch = config.model_copy(update={"n_tokens": size})
            start = cooldown_start_step(branch, schedule)
            if not 0 < start <= config.n_steps:
                raise WorkloadError(f"branch of n_tokens={size} starts at step {start}, outside this trunk's {config.n_steps} steps")
            evals |= {s for s in eval_steps(branch) if s <= start}  # so its history is a whole run's
            saves[start] = branch_checkpoint_dir(directory, schedule.cooldown_start(size))
        lr = functools.partial(wsd_lr_at, config=config, schedule=schedule, decay_start=None)
        return RunPlan(lr, frozenset(evals), frozenset(evals), identity, saves)
    start = cooldown_start_step(config, schedule)
    if not 0 < start < config.n_steps:
        raise WorkloadError(f"n_tokens={config.n_tokens}: the cooldown starts at step {start} of {config.n_steps}; no steps to cool down")
    lr = functools.partial(wsd_lr_at, config=config, schedule=schedule, decay_start=start)
    own = frozenset(eval_steps(config))
    if part.kind == "scratch":
        return RunPlan(lr, own, own, identity)
    if part.trunk_directory is None:
        raise WorkloadError("a WSD branch needs its trunk's checkpoint folder")
    folder = branch_checkpoint_dir(part.trunk_directory, schedule.cooldown_start(config.n_tokens))
    return RunPlan(lr, own, own, identity, start_from=functools.partial(read_branch_start, folder, config, schedule.warmup, start))


class _Checkpointer:
    """Writes and reads one trial's checkpoint file atomically, at most every `every_s` seconds."""

    def __init__(self, policy: CheckpointPolicy | None):
        self.path = Path(policy.directory) / CHECKPOINT_FILE if policy else None
        self.every_s = policy.every_s if policy else math.inf
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.path is not None and time.monotonic() - self.last >= self.every_s

    def save(self, state: dict) -> None:
        if self.path is None:
            return
        write_checkpoint(self.path, state)
        self.last = time.monotonic()

    def load(self, identity: dict) -> dict | None:
        """The checkpoint of this very trial, or None (none yet, or another config or schedule wrote it)."""
        if self.path is None or not self.path.exists():
            return None
        state = read_checkpoint(self.path)
        return state if state.get("format") == CHECKPOINT_FORMAT and state.get("identity") == identity else None


def write_checkpoint(path: Path, state: dict) -> None:
    """torch.save, atomically: a kill mid-write leaves the previous file whole."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    # writer_pid: which process to blame, or to kill in a test.
    torch.save({**state, "format": CHECKPOINT_FORMAT, "writer_pid": os.getpid()}, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def write_branch_checkpoint(folder: Path, state: dict) -> None:
    """A trunk's checkpoint for the branches starting at its step: filled aside, then renamed into place,
    so the folder exists only once whole (the scheduler starts the branches when it appears)."""
    if folder.is_dir():
        return  # an earlier attempt of this trunk got here: the same weights, deterministically
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_checkpoint(tmp / CHECKPOINT_FILE, state)
    try:
        os.replace(tmp, folder)
    except OSError:  # another attempt renamed its copy first
        shutil.rmtree(tmp, ignore_errors=True)


def read_branch_start(folder: Path, config: TinyLMConfig, warmup: int, step: int) -> dict:
    """The trunk's state at a branch's start, checked to be the trunk of this branch."""
    path = folder / CHECKPOINT_FILE
    if not path.exists():
        raise WorkloadError(
            f"no trunk checkpoint at {path} on this machine: a branch starts once its trunk got there, "
            "on a node that shares execution.checkpoint_dir"
        )
    state = read_checkpoint(path)
    trunk = state.get("identity", {})
    ours = {k: v for k, v in config.model_dump(mode="json").items() if k != "n_tokens"}
    theirs = {k: v for k, v in trunk.get("config", {}).items() if k != "n_tokens"}
    wsd = trunk.get("wsd", {})
    if (state.get("format"), wsd.get("kind"), wsd.get("warmup"), theirs, state.get("step")) != (
        CHECKPOINT_FORMAT, "trunk", warmup, ours, step
    ):
        raise WorkloadError(f"{path} is not the checkpoint of this branch's trunk at step {step}")
    return state


def history_row(mark: dict, previous: dict | None, epoch: int, config: TinyLMConfig) -> dict:
    """The reporter's row for evaluation `mark`: training metrics over the steps since `previous`
    (the last reported evaluation, None: since step 0), from the running totals both hold."""
    before = previous or {"step": 0, "bits": 0.0, "wrong": 0.0, "train_s": 0.0}
    tokens = (mark["step"] - before["step"]) * config.tokens_per_step
    tokens_per_s = tokens / max(mark["train_s"] - before["train_s"], 1e-9)
    row = {
        "epoch": epoch,
        "train_loss": (mark["bits"] - before["bits"]) / tokens,
        "train_error": (mark["wrong"] - before["wrong"]) / tokens,
        "test_loss": mark["test_loss"],
        "test_error": mark["test_error"],
        "tokens_seen": mark["step"] * config.tokens_per_step,
        "tokens_per_s": tokens_per_s,
        "lr": mark["lr"],
        "resumed_from_step": mark["resumed_from_step"],
    }
    if mark.get("peak_flops_per_s"):
        row["mfu"] = compute.model_flops_utilization(flops_per_token_with_attention(config), tokens_per_s, mark["peak_flops_per_s"])
    return row


def train_run(config: TinyLMConfig, reporter: Reporter, plan: RunPlan) -> None:
    """The train loop: `plan`'s schedule, evaluations and checkpoints, resumed where a checkpoint allows.

    The training totals (bits, errors, seconds) run from step 0 in float64, and each evaluation keeps
    them, so any run's windowed train_loss can be rebuilt from the evaluations a trunk left behind.
    """
    import torch
    import torch.nn.functional as F

    on_gpu = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if on_gpu else "cpu")
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    peak = compute.peak_flops_per_s(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    T, B = config.context_len, config.batch_size

    train_bytes, held_bytes = load_corpus(config.corpus, config.corpus_max_bytes)
    for name, part in (("training", train_bytes), ("held-out", held_bytes)):
        if len(part) < T + 2:
            raise WorkloadError(f"corpus {config.corpus!r}: {name} split has {len(part)} bytes, fewer than context_len + 2")
    windows = np.lib.stride_tricks.sliding_window_view(train_bytes, T + 1)
    held_windows = np.lib.stride_tricks.sliding_window_view(held_bytes, T + 1)
    n_eval = max(1, config.eval_tokens // T)
    held = torch.from_numpy(held_windows[np.linspace(0, len(held_windows) - 1, n_eval).astype(np.int64)].astype(np.int64))

    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)  # noqa: E731

    def bits_and_errors(logits, targets):
        nats = F.cross_entropy(logits.float().reshape(-1, VOCAB_SIZE), targets.reshape(-1), reduction="sum")
        wrong = (logits.argmax(-1) != targets).sum()
        return nats / math.log(2), wrong

    def evaluate() -> tuple[float, float]:
        model.eval()
        bits = wrong = 0.0
        with torch.no_grad(), autocast():
            for start in range(0, len(held), B):
                seqs = held[start : start + B].to(device)
                b, w = bits_and_errors(model(seqs[:, :-1]), seqs[:, 1:])
                bits, wrong = bits + b.item(), wrong + w.item()
        model.train()
        n = len(held) * T
        return bits / n, wrong / n

    checkpointer = _Checkpointer(reporter.checkpoint)
    state = checkpointer.load(plan.identity)
    if state is None and plan.start_from is not None:
        state = plan.start_from()
    step, marks, totals = 0, [], (0.0, 0.0, 0.0)
    if state is not None:
        model.load_state_dict(state["model"])
        step, marks, totals = state["step"], list(state["marks"]), state["totals"]
    start_step = step

    reported: list[dict] = []  # the marks that became the reporter's epochs

    def report(mark: dict) -> None:
        row = history_row(mark, reported[-1] if reported else None, len(reported) + 1, config)
        reported.append(mark)
        reporter.report(**row)

    for mark in marks:  # a resumed run replays what it reported before; a branch, its trunk's part
        if mark["step"] in plan.reported:
            report(mark)
    if state is not None:
        if state.get("finished"):
            return
        optimizer.load_state_dict(state["optimizer"])

    def snapshot(finished: bool = False) -> dict:
        saved = {"identity": plan.identity, "step": step, "model": model.state_dict(), "marks": marks,
                 "totals": (bits_total.item(), wrong_total.item(), train_s)}  # fmt: skip
        return {**saved, "finished": True} if finished else {**saved, "optimizer": optimizer.state_dict()}

    bits_total = torch.tensor(float(totals[0]), dtype=torch.float64, device=device)
    wrong_total = torch.tensor(float(totals[1]), dtype=torch.float64, device=device)
    train_s = totals[2]
    tic = time.perf_counter()
    while step < config.n_steps:
        for group in optimizer.param_groups:
            group["lr"] = plan.lr(step)
        seqs = torch.from_numpy(windows[batch_offsets(step, len(windows), B)].astype(np.int64)).to(device)
        with autocast():
            logits = model(seqs[:, :-1])
        bits, wrong = bits_and_errors(logits, seqs[:, 1:])
        loss = bits * math.log(2) / (B * T)  # mean nats per token
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        bits_total += bits.detach()
        wrong_total += wrong.detach()

        if step in plan.evals:
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_s += time.perf_counter() - tic
            test_loss, test_error = evaluate()
            marks.append(
                {"step": step, "bits": bits_total.item(), "wrong": wrong_total.item(), "train_s": train_s,
                 "test_loss": test_loss, "test_error": test_error, "lr": plan.lr(step - 1),
                 "resumed_from_step": start_step, "peak_flops_per_s": peak}  # fmt: skip
            )
            if step in plan.reported:
                report(marks[-1])
            tic = time.perf_counter()
        if step in plan.branch_saves or (checkpointer.due() and step < config.n_steps):
            train_s += time.perf_counter() - tic  # writing a checkpoint is not training
            if step in plan.branch_saves:
                write_branch_checkpoint(plan.branch_saves[step], snapshot())
            if step < config.n_steps:
                checkpointer.save(snapshot())  # a retried trunk resumes at least from here
            tic = time.perf_counter()
    # The finished trial keeps its final weights (no optimizer state) and its history.
    checkpointer.save(snapshot(finished=True))


class TinyLM(Workload):
    """Byte-level GPT-style language models; N = non-embedding parameters, D = training tokens (bytes)."""

    Config = TinyLMConfig
    model_size_param = "d_model"
    data_size_param = "n_tokens"
    data_unit = "tokens"
    n_params_meaning = "non-embedding parameters"
    fit_metric = "test_loss"
    metric_units = {
        "test_loss": "bits per byte",
        "train_loss": "bits per byte",
        "test_error": "fraction of bytes mispredicted",
        "train_error": "fraction of bytes mispredicted",
    }

    def size(self, config: TinyLMConfig) -> TrialSize:
        return trial_size(config)

    def train(self, config: TinyLMConfig, reporter: Reporter) -> None:
        """Warmup and cosine decay over the trial's own length (lr_at)."""
        evals = frozenset(eval_steps(config))
        identity = {"config": config.model_dump(mode="json"), "wsd": None}
        train_run(config, reporter, RunPlan(functools.partial(lr_at, config=config), evals, evals, identity))

    def train_wsd(self, config: TinyLMConfig, reporter: Reporter, part: WSDPart) -> None:
        """A WSD trunk, branch or whole run (workloads.api.WSDPart); warmup_fraction is not used."""
        directory = reporter.checkpoint.directory if reporter.checkpoint else None
        train_run(config, reporter, wsd_plan(config, part, directory))
