"""Counting the compute of a GPT: every matmul of the forward pass, and the 6·N·D rule.

A matmul (m × k) @ (k × n) costs 2·m·k·n FLOPs (one multiply and one add per term). For one
sequence of T tokens through :class:`spiral.models.gpt.GPT` (C = d_model, H query heads and
Hkv key/value heads of width hd, FFN width h, vocabulary V, L layers), per layer:

    QKV projection     2·T·C·(H + 2·Hkv)·hd
    scores Q Kᵀ        2·H·T·T·hd              (the full T × T square, as our kernel runs it)
    weighted sum A V   2·H·T·T·hd
    output projection  2·T·C·C
    FFN                2·T·C·h·2  (GELU: two matrices)   or   2·T·C·h·3  (SwiGLU: three)

and once, the head 2·T·C·V. Embedding lookups, norms, softmax and activations are not
matmuls and are left out (O(T·C) each, a few per cent at our sizes). Every weight matrix W
of the forward pass is used once per token, so the non-attention part is exactly 2·N_mm·T
with N_mm the matmul parameters (the head counts even when tied; embeddings do not).

The backward pass costs two forward passes (one matmul for the input's gradient and one for
the weight's), so training on D tokens costs

    C_train = 3 · forward = 6·N_mm·D + 12·L·T·(H·hd)·D                         (Kaplan et al.,
    2020, Table 1; Hoffmann et al., 2022, Appendix F count the attention the same way)

:func:`approx_training_flops` is the textbook 6·N·D plus this attention term.
Chapter: stage 14 (scaling laws).
"""

from __future__ import annotations

from typing import Any

__all__ = ["matmul_parameters", "non_embedding_parameters", "forward_flops",
           "training_flops", "approx_training_flops", "attention_flops_per_token"]


def _shape(config: Any) -> tuple[int, int, int, int, int, int, int]:
    c = config
    hd = c.d_model // c.n_heads
    kv = c.n_heads if getattr(c, "n_kv_heads", None) is None else c.n_kv_heads
    return c.d_model, c.n_heads, kv, hd, c.hidden, c.vocab_size, c.n_layers


def matmul_parameters(config: Any) -> int:
    """N_mm: the weights the forward pass multiplies each token by (all Linear matrices and
    the output head; no embeddings, norms or biases)."""
    C, H, Hkv, hd, h, V, L = _shape(config)
    n_ffn = (3 if config.ffn_type == "swiglu" else 2) * C * h if config.ffn else 0
    return L * (C * (H + 2 * Hkv) * hd + C * C + n_ffn) + C * V


def non_embedding_parameters(config: Any) -> int:
    """Kaplan et al.'s N: every parameter except the token and position embeddings (the
    head's V·C is dropped too when it is tied to the token embedding)."""
    from spiral.models.gpt import count_parameters

    n = count_parameters(config) - config.vocab_size * config.d_model
    return n - (config.context_length * config.d_model if config.positional == "learned" else 0)


def attention_flops_per_token(config: Any, seq_len: int | None = None) -> int:
    """The forward FLOPs of Q Kᵀ and A V per token: 4·L·T·H·hd (full T × T scores)."""
    C, H, _, hd, _, _, L = _shape(config)
    T = config.context_length if seq_len is None else seq_len
    return 4 * L * T * H * hd


def forward_flops(config: Any, seq_len: int | None = None, batch: int = 1) -> int:
    """Matmul FLOPs of one forward pass over ``batch`` sequences of ``seq_len`` tokens."""
    T = config.context_length if seq_len is None else seq_len
    if T < 1 or batch < 1:
        raise ValueError(f"seq_len and batch must be positive, got {T} and {batch}")
    return batch * T * (2 * matmul_parameters(config) + attention_flops_per_token(config, T))


def training_flops(config: Any, tokens: float, seq_len: int | None = None) -> float:
    """Forward + backward (= 3 forward passes) over ``tokens`` tokens in windows of seq_len."""
    T = config.context_length if seq_len is None else seq_len
    return 3.0 * forward_flops(config, T) / T * tokens


def approx_training_flops(n_params: float, tokens: float, *, n_layers: int = 0,
                          context: int = 0, d_attn: int = 0) -> float:
    """C ≈ 6·N·D + 12·L·T·d_attn·D (the second term is zero unless the shape is given).

    >>> round(approx_training_flops(70e9, 1.4e12) / 1e23, 3)  # Chinchilla: 70 B on 1.4 T
    5.88
    """
    if n_params <= 0 or tokens <= 0:
        raise ValueError(f"n_params and tokens must be positive, got {n_params} and {tokens}")
    return 6.0 * n_params * tokens + 12.0 * n_layers * context * d_attn * tokens
