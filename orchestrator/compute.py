"""Compute accounting: parameter counts, training FLOPs and model FLOPs utilization (MFU).

Every number here comes from a named, cited formula; units are in the names. The transformer counts
are exact for the decoder-only model of `workloads/tiny_lm.py` (nanoGPT's layout: bias-free linear
layers and LayerNorms, a 4x MLP, learned position embeddings, the output layer tied to the token
embedding), so a test can check them against `sum(p.numel() for p in model.parameters())`.

References:
- Kaplan et al. 2020, "Scaling Laws for Neural Language Models", section 2.1: training compute
  C = 6 N D (forward 2 N, backward 4 N FLOPs per token), N without embeddings.
- Chowdhery et al. 2022, "PaLM", appendix B: model FLOPs per token 6 N + 12 L H Q T, where the second
  term is the attention score and value products (L layers, H heads of width Q, so H Q = d_model, and
  context length T). MFU = achieved model FLOPs per second / peak FLOPs per second of the hardware.
"""

from __future__ import annotations

import math

# Multiply-adds per parameter per token: forward 2, backward 4 (Kaplan et al. 2020, section 2.1).
TRAIN_FLOPS_PER_PARAM_PER_TOKEN = 6


def transformer_block_params(d_model: int, mlp_ratio: int = 4) -> int:
    """Parameters of one pre-norm transformer block without biases, in parameters.

    attention: W_q, W_k, W_v and the output projection, 4 d^2; MLP: d -> mlp_ratio d -> d,
    2 mlp_ratio d^2 (8 d^2 for the usual 4x); two LayerNorm scales, 2 d.
    """
    return 4 * d_model**2 + 2 * mlp_ratio * d_model**2 + 2 * d_model


def transformer_params_without_embeddings(n_layers: int, d_model: int, mlp_ratio: int = 4) -> int:
    """Non-embedding parameters N (Kaplan et al. 2020): every block plus the final LayerNorm, in parameters.

    About 12 L d^2 for a 4x MLP; excludes the token and position embeddings (and so the output layer
    tied to the token embedding).
    """
    return n_layers * transformer_block_params(d_model, mlp_ratio) + d_model


def transformer_embedding_params(vocab_size: int, context_len: int, d_model: int) -> int:
    """Token (vocab x d) and learned position (context x d) embeddings, in parameters."""
    return vocab_size * d_model + context_len * d_model


def transformer_params_with_embeddings(
    n_layers: int, d_model: int, vocab_size: int, context_len: int, mlp_ratio: int = 4
) -> int:
    """Every trainable parameter, embeddings included (the tied output layer adds none), in parameters."""
    return transformer_params_without_embeddings(n_layers, d_model, mlp_ratio) + transformer_embedding_params(
        vocab_size, context_len, d_model
    )


def train_flops(n_params: float, n_tokens: float) -> float:
    """Training compute C = 6 N D, in FLOPs (Kaplan et al. 2020, section 2.1).

    n_params: N, parameters; n_tokens: D, tokens (or samples) processed in training, counting repeats.
    """
    return float(TRAIN_FLOPS_PER_PARAM_PER_TOKEN) * n_params * n_tokens


def attention_flops_per_token(n_layers: int, d_model: int, context_len: int) -> float:
    """Training FLOPs per token of the attention products, 12 L d T (PaLM, appendix B; H Q = d_model)."""
    return 12.0 * n_layers * d_model * context_len


def train_flops_with_attention(
    n_params: float, n_tokens: float, n_layers: int, d_model: int, context_len: int
) -> float:
    """Training compute (6 N + 12 L d T) D, in FLOPs (Chowdhery et al. 2022, PaLM, appendix B).

    Pass as N the parameters that take part in a matmul per token: nanoGPT's reading of PaLM, so the
    non-embedding parameters plus a tied output layer, but not a position-embedding table (a lookup).
    """
    per_token = TRAIN_FLOPS_PER_PARAM_PER_TOKEN * n_params + attention_flops_per_token(n_layers, d_model, context_len)
    return per_token * n_tokens


# Dense (no sparsity) peak tensor-core throughput in bf16, FLOP/s, from each vendor data sheet.
# Keyed by a substring of torch.cuda.get_device_name(); the longest matching key wins, so
# "H100 PCIe" is not read as "H100".
PEAK_BF16_FLOPS_PER_S: dict[str, float] = {
    "A100": 312e12,
    "H100": 989e12,  # SXM
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H200": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "L40S": 362e12,
    "L4": 121e12,
    "V100": 125e12,  # fp16: V100 has no bf16 tensor cores
    "T4": 65e12,  # fp16
}


def peak_flops_per_s(device_name: str | None) -> float | None:
    """Peak bf16 FLOP/s of a device by name (e.g. 'NVIDIA H100 80GB HBM3'), or None when unknown (CPUs)."""
    if not device_name:
        return None
    matches = [key for key in PEAK_BF16_FLOPS_PER_S if key.lower() in device_name.lower()]
    if not matches:
        return None
    return PEAK_BF16_FLOPS_PER_S[max(matches, key=len)]


def model_flops_utilization(flops_per_token: float, tokens_per_s: float, peak_per_s: float) -> float:
    """MFU: achieved model FLOPs per second over the hardware's peak, a fraction (PaLM, appendix B)."""
    if peak_per_s <= 0 or not math.isfinite(peak_per_s):
        raise ValueError(f"peak FLOP/s must be positive and finite, got {peak_per_s}")
    return flops_per_token * tokens_per_s / peak_per_s
