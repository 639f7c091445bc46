"""Byte-level decoder-only transformers: the language-model setting of Kaplan et al. 2020 and
Hoffmann et al. 2022 (Chinchilla), small enough for a CPU.

Model size N is set by width (`d_model`) and depth (`n_layers`): nanoGPT's layout (pre-norm blocks,
bias-free layers, a 4x GELU MLP, learned positions, output layer tied to the token embedding), so
N = L (12 d^2 + 2 d) + d without embeddings, see orchestrator/compute.py. Data size D is the number of
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

Checkpoints: with a `CheckpointPolicy` from the reporter, the trial writes model, optimizer, step and
reported history every `every_s` seconds (atomically), and a retry after a crash resumes from there,
replaying the earlier evaluations to the reporter; the finished trial leaves its final weights.

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
import sysconfig
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator import compute
from workloads.api import CheckpointPolicy, Reporter, TrialSize, Workload, WorkloadError

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


# -- model (nanoGPT's layout) ------------------------------------------------------------------


def build_model(config: TinyLMConfig):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    d, T = config.d_model, config.context_len

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(d, 3 * d, bias=False)
            self.proj = nn.Linear(d, d, bias=False)

        def forward(self, x):
            B, T_, _ = x.shape
            q, k, v = self.qkv(x).split(d, dim=2)
            q, k, v = (t.view(B, T_, config.n_heads, config.head_dim).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.proj(y.transpose(1, 2).reshape(B, T_, d))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(d, MLP_RATIO * d, bias=False)
            self.proj = nn.Linear(MLP_RATIO * d, d, bias=False)

        def forward(self, x):
            return self.proj(F.gelu(self.fc(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.attn = nn.LayerNorm(d, bias=False), CausalSelfAttention()
            self.ln2, self.mlp = nn.LayerNorm(d, bias=False), MLP()

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class TinyGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_emb = nn.Embedding(VOCAB_SIZE, d)
            self.pos_emb = nn.Embedding(T, d)
            self.blocks = nn.ModuleList(Block() for _ in range(config.n_layers))
            self.ln_f = nn.LayerNorm(d, bias=False)
            self.head = nn.Linear(d, VOCAB_SIZE, bias=False)
            self.head.weight = self.tok_emb.weight  # tied (Press & Wolf 2017)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    # GPT-2's init: residual projections scaled down by depth.
                    std = 0.02 / math.sqrt(2 * config.n_layers) if name.endswith("proj.weight") else 0.02
                    nn.init.normal_(p, mean=0.0, std=std)

        def forward(self, idx):
            x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1], device=idx.device))
            for block in self.blocks:
                x = block(x)
            return self.head(self.ln_f(x))

    return TinyGPT()


# -- training ----------------------------------------------------------------------------------


class _Checkpointer:
    """Writes and reads one trial's checkpoint file atomically, at most every `every_s` seconds."""

    def __init__(self, policy: CheckpointPolicy | None):
        self.path = Path(policy.directory) / CHECKPOINT_FILE if policy else None
        self.every_s = policy.every_s if policy else math.inf
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.path is not None and time.monotonic() - self.last >= self.every_s

    def save(self, state: dict) -> None:
        import torch

        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({**state, "writer_pid": os.getpid()}, tmp)  # which process to blame, or to kill in a test
        os.replace(tmp, self.path)  # a kill mid-write leaves the previous checkpoint whole
        self.last = time.monotonic()

    def load(self, config_dump: dict) -> dict | None:
        """The checkpoint of this very config, or None (none yet, or another config wrote it)."""
        import torch

        if self.path is None or not self.path.exists():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        return state if state.get("config") == config_dump else None


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
        import torch
        import torch.nn.functional as F

        on_gpu = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
        device = torch.device("cuda" if on_gpu else "cpu")
        use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
        peak = compute.peak_flops_per_s(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
        per_token_flops = flops_per_token_with_attention(config)
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

        config_dump = config.model_dump(mode="json")
        checkpointer = _Checkpointer(reporter.checkpoint)
        step, start_step, history = 0, 0, []
        state = checkpointer.load(config_dump)
        if state is not None:
            model.load_state_dict(state["model"])
            step = start_step = state["step"]
            for row in state["history"]:
                reporter.report(**row)
            history = list(state["history"])
            if state.get("finished"):
                return
            optimizer.load_state_dict(state["optimizer"])

        evals = [s for s in eval_steps(config) if s > step]
        # Sums over the training batches since the last evaluation, for train_loss and train_error.
        since_eval = state["since_eval"] if state is not None else (0.0, 0.0, 0, 0.0)
        bits_sum = torch.tensor(float(since_eval[0]), device=device)
        wrong_sum = torch.tensor(float(since_eval[1]), device=device)
        seen_since_eval, train_time = since_eval[2], since_eval[3]
        tic = time.perf_counter()
        while step < config.n_steps:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config)
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
            bits_sum += bits.detach()
            wrong_sum += wrong.detach()
            seen_since_eval += B * T

            if evals and step == evals[0]:
                evals.pop(0)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                train_time += time.perf_counter() - tic
                tokens_per_s = seen_since_eval / max(train_time, 1e-9)
                test_loss, test_error = evaluate()
                row = {
                    "epoch": len(history) + 1,
                    "train_loss": bits_sum.item() / seen_since_eval,
                    "train_error": wrong_sum.item() / seen_since_eval,
                    "test_loss": test_loss,
                    "test_error": test_error,
                    "tokens_seen": step * config.tokens_per_step,
                    "tokens_per_s": tokens_per_s,
                    "lr": lr_at(step - 1, config),
                    "resumed_from_step": start_step,
                }
                if peak:
                    row["mfu"] = compute.model_flops_utilization(per_token_flops, tokens_per_s, peak)
                history.append(row)
                reporter.report(**row)
                bits_sum.zero_()
                wrong_sum.zero_()
                seen_since_eval, train_time = 0, 0.0
                tic = time.perf_counter()
            if checkpointer.due() and step < config.n_steps:
                train_time += time.perf_counter() - tic  # writing the checkpoint is not training
                checkpointer.save(
                    {"config": config_dump, "step": step, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "history": history,
                     "since_eval": (bits_sum.item(), wrong_sum.item(), seen_since_eval, train_time)}  # fmt: skip
                )
                tic = time.perf_counter()
        # The finished trial keeps its final weights (no optimizer state) and its history.
        checkpointer.save(
            {"config": config_dump, "step": step, "model": model.state_dict(), "history": history, "finished": True}
        )
