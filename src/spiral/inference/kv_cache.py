"""The KV cache: prefill the prompt once, then decode one token at a time.

At step t a causal decoder needs, in every layer, the keys and values of positions 0..t;
those of 0..t−1 do not change when token t arrives, so they are stored, not recomputed:

    prefill:  K, V ← [k_0 .. k_{P−1}], [v_0 .. v_{P−1}]     one full forward of the prompt
    decode:   q_t, k_t, v_t from x_t alone;  K ← [K; k_t], V ← [V; v_t]
              y_t = softmax(q_t Kᵀ/√hd + b_t) V           (1 query against t + 1 keys)

Per token the cache holds K and V for Hkv heads of head_dim in each of L layers:
2·L·Hkv·hd·itemsize bytes (GQA/MQA divide multi-head attention's by H/Hkv).

Positions are absolute: the new token's learned or sinusoidal embedding is that of t, RoPE
rotates q_t and k_t by the angle of t (the cache stores keys already rotated, as vLLM and
Hugging Face do), and ALiBi's bias and the causal mask put the query at the LAST of the
t + 1 key positions (:meth:`MultiHeadAttention.bias`). The uncached forward is untouched:
this module drives the model's own layers (norms, projections, FFN, head) on the new
tokens only. Papers: Pope et al. (2022), "Efficiently Scaling Transformer Inference".
Chapter: stage 17 (inference).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral.autograd import Tensor, no_grad
from spiral.nn import functional as F
from spiral.nn.transformer import Block, MultiHeadAttention

__all__ = ["KVCache", "forward_cached", "run_trunk", "supports_cache"]


class KVCache:
    """Preallocated keys and values, per layer (B, Hkv, capacity, hd), and a fill length.

    >>> c = KVCache(n_layers=2, batch_size=1, n_kv_heads=2, head_dim=4, capacity=8)
    >>> c.bytes_per_token, len(c)
    (128, 0)
    """

    def __init__(self, n_layers: int, batch_size: int, n_kv_heads: int, head_dim: int,
                 capacity: int, dtype: Any = np.float32) -> None:
        if min(n_layers, batch_size, n_kv_heads, head_dim, capacity) < 1:
            raise ValueError("KVCache sizes must all be positive")
        shape = (batch_size, n_kv_heads, capacity, head_dim)
        self.keys = [np.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.values = [np.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.capacity, self.length = capacity, 0

    @classmethod
    def for_model(cls, model: Any, batch_size: int = 1, capacity: int | None = None
                  ) -> KVCache:
        """An empty cache shaped for a :class:`spiral.models.gpt.GPT` (its weights' dtype)."""
        c = model.config
        dtype = model.tok_emb.weight.data.dtype
        return cls(c.n_layers, batch_size, c.kv_heads, c.head_dim,
                   capacity or c.context_length, dtype)

    def __len__(self) -> int:
        return self.length

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    def reserve(self, n: int) -> None:
        """Check that n more positions fit (a paged cache allocates blocks here)."""
        if self.length + n > self.capacity:
            raise ValueError(f"the cache holds {self.capacity} positions; {self.length} are "
                             f"used and {n} more do not fit")

    @property
    def nbytes(self) -> int:
        """Bytes allocated for keys and values (all layers, the full capacity)."""
        return sum(k.nbytes + v.nbytes for k, v in zip(self.keys, self.values))

    @property
    def bytes_per_token(self) -> int:
        """Measured from the arrays: bytes per cached position of one sequence."""
        batch = self.keys[0].shape[0]
        return self.nbytes // (batch * self.capacity)

    def append(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Write k, v (B, Hkv, T, hd) after the cached positions; return all keys and values
        so far (views). The fill length advances once per forward, in :meth:`advance`."""
        t, n = self.length, k.shape[-2]
        self.reserve(n)
        self.keys[layer][:, :, t:t + n] = k
        self.values[layer][:, :, t:t + n] = v
        return self.keys[layer][:, :, :t + n], self.values[layer][:, :, :t + n]

    def advance(self, n: int) -> None:
        self.length += n

    def truncate(self, n: int) -> None:
        """Forget every position from n on (a rejected speculative draft, say)."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} positions to {n}")
        self.length = n

    def reset(self) -> None:
        self.length = 0


def attend_cached(attn: MultiHeadAttention, x: Tensor, cache: Any, layer: int) -> Tensor:
    """One attention sub-layer on the new positions x (B, T, C) against cache + new keys."""
    B, T, _ = x.shape
    q, k, v = attn.split_heads(x)  # q (B, H, T, hd), k and v (B, Hkv, T, hd)
    if attn.rotary is not None:  # rotate by absolute positions t .. t + T − 1
        q, k = attn.rotary(q, k, offset=cache.length)
    # contiguous copies: BLAS then sees the same memory layout whatever the cache's storage
    # (a strided slice of a preallocated buffer, or gathered blocks), so results match bitwise
    keys, values = map(np.ascontiguousarray, cache.append(layer, k.data, v.data))
    n_key = keys.shape[-2]
    qg, mask = attn._grouped(q, attn.bias(T, n_key, q.data.dtype))
    y = F.scaled_dot_product_attention(qg, Tensor(attn._kv(keys)), Tensor(attn._kv(values)),
                                       attn_mask=mask)
    y = y.reshape(B, attn.n_heads, T, attn.head_dim).transpose(1, 2).reshape(B, T, attn.d_model)
    return attn.resid_drop(attn.out_proj(y))


def _embed(model: Any, ids: np.ndarray, offset: int) -> Tensor:
    """Token embeddings plus the positional encoding of positions offset .. offset + T − 1."""
    T = ids.shape[-1]
    x = model.tok_emb(ids)
    if model.pos_emb is not None:
        return x + model.pos_emb(np.arange(offset, offset + T))
    if model.pos_enc is not None:
        return x + model.pos_enc(T, offset=offset)
    return x


def forward_cached(model: Any, ids: np.ndarray, cache: Any) -> np.ndarray:
    """Logits (B, T, V) of the new ids (B, T) at positions len(cache) .. + T − 1; fills the
    cache. The first call is the prefill (the prompt), later calls usually decode T = 1.

    ``cache`` is a :class:`KVCache` or anything with its ``length``, ``batch_size``,
    ``reserve(n)``, ``append(layer, k, v)`` and ``advance(n)`` (a paged sequence, say).
    Runs in eval mode semantics (no dropout, no gradients); the model is left as it was.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 2 or ids.shape[0] != cache.batch_size:
        raise ValueError(f"ids must be (batch={cache.batch_size}, T), got {ids.shape}")
    end = cache.length + ids.shape[1]
    if end > model.context_length:
        raise ValueError(f"position {end - 1} is beyond context_length {model.context_length}")
    cache.reserve(ids.shape[1])
    logits = run_trunk(model, lambda: _embed(model, ids, cache.length),
                       lambda blk, z, i: attend_cached(blk.attn, z, cache, i))
    cache.advance(ids.shape[1])
    return logits


def run_trunk(model: Any, embed: Any, attend: Any) -> np.ndarray:
    """The model's blocks, final norm and head on ``embed()`` (B, T, C), with the attention
    sub-layer of block i replaced by ``attend(block, x, i)``; eval mode, no gradients."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            x = model.drop(embed())
            for i, blk in enumerate(model.blocks):
                assert isinstance(blk, Block)
                x = blk._sublayer(x, lambda z, i=i, blk=blk: attend(blk, z, i), blk.ln1)
                if blk.ffn is not None and blk.ln2 is not None:
                    x = blk._sublayer(x, blk.ffn, blk.ln2)
            if model.final_norm is not None:
                x = model.final_norm(x)
            logits = F.linear(x, model.head_weight).data
    finally:
        model.train(was_training)
    return np.asarray(logits)


def supports_cache(model: Any) -> bool:
    """Whether :func:`forward_cached` can drive ``model`` (a GPT of standard blocks)."""
    blocks = getattr(model, "blocks", None)
    return (hasattr(model, "head_weight") and hasattr(model, "config") and blocks is not None
            and all(isinstance(b, Block) for b in blocks))
