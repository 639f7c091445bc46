"""The byte-level decoder-only transformer of `workloads/tiny_lm.py`, in nanoGPT's `model.py` layout.

Pre-norm blocks, bias-free linear layers and LayerNorms, a 4x GELU MLP, learned position embeddings
and the output layer tied to the token embedding, so N = L (12 d^2 + 2 d) + d without embeddings
(orchestrator/compute.py counts it). This module imports torch: `workloads.tiny_lm` imports it only
inside its train loop, so reading a spec or planning a sweep never loads torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class GPTConfig:
    """The model's shape: vocab_size tokens, context_len tokens per sequence, n_layers blocks of
    width d_model split into n_heads heads, MLP hidden width mlp_ratio x d_model."""

    vocab_size: int
    context_len: int
    n_layers: int
    d_model: int
    n_heads: int
    mlp_ratio: int = 4

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        heads, head_dim = self.config.n_heads, self.config.head_dim
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (t.view(B, T, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.mlp_ratio * config.d_model, bias=False)
        self.proj = nn.Linear(config.mlp_ratio * config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(config.d_model, bias=False), CausalSelfAttention(config)
        self.ln2, self.mlp = nn.LayerNorm(config.d_model, bias=False), MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context_len, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model, bias=False)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied (Press & Wolf 2017)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                # GPT-2's init: residual projections scaled down by depth.
                std = 0.02 / math.sqrt(2 * config.n_layers) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameters, counted once where tied; without the token and position embeddings by default
        (Kaplan et al. 2020's N), in parameters."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.tok_emb.weight.numel() + self.pos_emb.weight.numel()
        return total
