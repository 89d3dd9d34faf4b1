"""One decode step for many sequences at once: shared matmuls, per-sequence attention.

A batch of B sequences of different lengths t_1 .. t_B, each decoding one token, shares
every weight matrix: the projections, the FFN and the head run as one (B, C) @ (C, ·)
matmul, so the weights are read from memory once per step instead of B times — the reason
batching raises decode throughput (stage 17's roofline). Only attention differs per row:
sequence b's query meets its own t_b + 1 cached keys (its own positions, RoPE angle and
ALiBi bias), gathered from its own cache (a :class:`~spiral.inference.kv_cache.KVCache` of
batch 1 or a :class:`~spiral.inference.paged.PagedSequence`):

    X (B, C) -> Q, K, V = X W_qkv  (one matmul)
    y_b = softmax(q_b K_bᵀ/√hd + bias_b) V_b      for each b  (t_b differs per row)
    Y (B, C) -> Y W_o, FFN, head                 (one matmul each)

This is what continuous batching (Yu et al., 2022, Orca's iteration-level scheduling) runs
every iteration. Chapter: stage 17 (inference).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.nn import functional as F
from spiral.nn.positional import rope_rotate
from spiral.nn.transformer import MultiHeadAttention

__all__ = ["forward_batch"]


def _attend_rows(attn: MultiHeadAttention, x: Tensor, caches: Sequence[Any],
                 layer: int) -> Tensor:
    """Attention of (B, T, C) new positions, row b against caches[b] plus its new keys.

    Rows have different key counts n_b, so keys and values are padded to the longest and
    the padding is masked with −∞ (it gets weight exp(−∞) = 0): one attention call for the
    batch, as a paged-attention kernel does, instead of one per row."""
    B, T, _ = x.shape
    q, k, v = attn.split_heads(x)
    qd, kd, vd = q.data, k.data, v.data
    if attn.rotary is not None:  # rotate row b by its own positions len_b .. len_b + T − 1
        cs = [attn.rotary.cos_sin(T, c.length, qd.dtype) for c in caches]
        cos = np.stack([c for c, _ in cs])[:, None]  # (B, 1, T, hd/2)
        sin = np.stack([s for _, s in cs])[:, None]
        qd = rope_rotate(qd, cos, sin, attn.rotary.convention)
        kd = rope_rotate(kd, cos, sin, attn.rotary.convention)
    rows = [cache.append(layer, kd[b:b + 1], vd[b:b + 1]) for b, cache in enumerate(caches)]
    n_max = max(kb.shape[-2] for kb, _ in rows)
    keys = np.zeros((B, attn.n_kv_heads, n_max, attn.head_dim), dtype=qd.dtype)
    values = np.zeros_like(keys)
    mask = np.full((B, attn.n_heads, T, n_max), -np.inf, dtype=qd.dtype)
    # the queries are the last T of a row's n keys, so its causal mask or ALiBi bias (which
    # depend on key − query offsets only) is the last n columns of the n_max-key one
    bias = attn.bias(T, n_max, qd.dtype)
    for b, (kb, vb) in enumerate(rows):
        n = kb.shape[-2]
        keys[b, :, :n], values[b, :, :n] = kb[0], vb[0]
        mask[b, :, :, :n] = 0.0 if bias is None else bias[..., n_max - n:]
    G = attn.n_rep
    if G > 1:  # GQA: (B, Hkv, G, T, ·) queries and mask against (B, Hkv, 1, n, hd) keys
        qd = qd.reshape(B, attn.n_kv_heads, G, T, attn.head_dim)
        mask = mask.reshape(B, attn.n_kv_heads, G, T, n_max)
    y = F.scaled_dot_product_attention(Tensor(qd), Tensor(attn._kv(keys)),
                                       Tensor(attn._kv(values)), attn_mask=mask)
    y = y.reshape(B, attn.n_heads, T, attn.head_dim).transpose(1, 2).reshape(B, T, attn.d_model)
    return attn.resid_drop(attn.out_proj(y))


def _embed_rows(model: Any, ids: np.ndarray, caches: Sequence[Any]) -> Tensor:
    from spiral.inference.kv_cache import _embed

    return Tensor(np.concatenate([_embed(model, ids[b:b + 1], c.length).data
                                  for b, c in enumerate(caches)]))


def forward_batch(model: Any, ids: np.ndarray, caches: Sequence[Any]) -> np.ndarray:
    """Logits (B, T, V) of ids (B, T), row b at positions len(caches[b]) .. + T − 1; each
    cache (batch size 1) is filled. Row b's logits equal ``forward_cached(model,
    ids[b:b+1], caches[b])``'s up to the summation order of the batched matmuls.

    >>> from spiral.models.gpt import GPT, GPTConfig
    >>> from spiral.inference.kv_cache import KVCache
    >>> m = GPT(GPTConfig(vocab_size=5, context_length=8, n_layers=1, n_heads=1, d_model=4),
    ...         rng=np.random.default_rng(0))
    >>> cs = [KVCache.for_model(m) for _ in range(3)]
    >>> forward_batch(m, np.zeros((3, 2), dtype=np.int64), cs).shape, cs[0].length
    ((3, 2, 5), 2)
    """
    from spiral.inference.kv_cache import run_trunk

    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 2 or ids.shape[0] != len(caches) or not caches:
        raise ValueError(f"ids must be (len(caches)={len(caches)}, T), got {ids.shape}")
    T = ids.shape[1]
    for c in caches:
        if c.batch_size != 1:
            raise ValueError("forward_batch needs one cache of batch size 1 per row")
        if c.length + T > model.context_length:
            raise ValueError(f"position {c.length + T - 1} is beyond context_length "
                             f"{model.context_length}")
    for c in caches:
        c.reserve(T)
    logits = run_trunk(model, lambda: _embed_rows(model, ids, caches),
                       lambda blk, z, i: _attend_rows(blk.attn, z, caches, i))
    for c in caches:
        c.advance(T)
    return logits
