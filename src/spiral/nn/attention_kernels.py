"""Attention four ways behind ``F.scaled_dot_product_attention``'s arguments (stage 12).

    kernel="naive"   S = Q Kᵀ·s + mask and P = softmax(S) materialised (L × S each); P saved
    kernel="tiled"   one (block_q × S) row block at a time, two-pass softmax; λ saved
    kernel="online"  the online-softmax recurrence over key blocks, all queries at once
    kernel="flash"   (block_q × block_k) tiles: online softmax forward, FlashAttention-2
                     backward recomputing P from the saved log-sum-exp λ

All four are exact: outputs and gradients agree to rounding (1e-12 in float64, checked by
the tests). They differ in what they keep — naive saves P, O(L·S) per head; the others save
O and λ, O(L) per head — and in how many bytes they move between on-chip memory and main
memory, which an :class:`~spiral.nn.attention_io.IOCounter` passed as ``counter`` counts
(naive, online and flash kernels). Kernels: :mod:`spiral.nn.flash`.
Papers: Vaswani et al. (2017); Milakov & Gimelshein (2018); Dao et al. (2022); Dao (2023).
Chapter: stage 12 (memory optimization).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.autograd.function import Function
from spiral.nn import functional as F
from spiral.nn import kernels as K
from spiral.nn.attention_io import IOCounter
from spiral.nn.flash import flash_backward, flash_forward, tiled_forward

__all__ = ["KERNELS", "attention_function", "scaled_dot_product_attention"]

KERNELS = ("naive", "tiled", "online", "flash")


class _NaiveFn(Function):
    """Standard attention (Dao et al.'s Algorithm 0), counting what it moves."""

    @staticmethod
    def forward(ctx: Any, q: Any, k: Any, v: Any, mask: Any, scale: float, dropout_p: float,
                rng: Any, counter: IOCounter | None) -> Any:
        out, p, keep = K.attention_forward(q, k, v, mask, scale, dropout_p, rng)
        if counter is not None:
            n, item = int(np.prod(q.shape[:-2])), q.dtype.itemsize
            L, S, E, Ev = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
            counter.load(n * (L * E + S * E), itemsize=item)     # Q, K in
            counter.store(n * L * S, itemsize=item)              # S out
            counter.load(n * L * S, itemsize=item)               # S in
            counter.store(n * L * S, itemsize=item)              # P out
            counter.load(n * (L * S + S * Ev), itemsize=item)    # P, V in
            counter.store(n * L * Ev, itemsize=item)             # O out
        ctx.save_for_backward(q, k, v, p)
        ctx.keep, ctx.scale, ctx.counter = keep, scale, counter
        return out

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
        q, k, v, p = ctx.saved_tensors
        c = ctx.counter
        if c is not None:
            n, item = int(np.prod(q.shape[:-2])), q.dtype.itemsize
            L, S, E, Ev = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
            c.load(n * (L * S + L * Ev), itemsize=item)      # P, dO -> dV
            c.store(n * S * Ev, itemsize=item)
            c.load(n * (L * Ev + S * Ev), itemsize=item)     # dO, V -> dP
            c.store(n * L * S, itemsize=item)
            c.load(n * 2 * L * S, itemsize=item)             # P, dP -> dS
            c.store(n * L * S, itemsize=item)
            c.load(n * (L * S + S * E), itemsize=item)       # dS, K -> dQ
            c.store(n * L * E, itemsize=item)
            c.load(n * (L * S + L * E), itemsize=item)       # dS, Q -> dK
            c.store(n * S * E, itemsize=item)
        dq, dk, dv = K.attention_backward(grad, q, k, v, p, ctx.keep, ctx.scale)
        return dq, dk, dv, None, None, None, None, None


class _TiledFn(Function):
    """tiled / online / flash: save O and λ, recompute P tile by tile in backward."""

    @staticmethod
    def forward(ctx: Any, q: Any, k: Any, v: Any, mask: Any, scale: float, causal: bool,
                kernel: str, block_q: int, block_k: int, dropout_p: float, seed: int,
                counter: IOCounter | None, seq_major: bool = False) -> Any:
        L, S = q.shape[-2], k.shape[-2]
        buf = _seq_major_out(q, k, v) if seq_major else None
        if kernel == "tiled":
            bq, bk = block_q, S
            out, lse = tiled_forward(q, k, v, scale, mask=mask, causal=causal, block_q=bq,
                                     out=buf)
        else:
            bq, bk = (L, block_k) if kernel == "online" else (block_q, block_k)
            out, lse = flash_forward(q, k, v, scale, mask=mask, causal=causal, block_q=bq,
                                     block_k=bk, dropout_p=dropout_p, seed=seed,
                                     counter=counter, out=buf)
        ctx.save_for_backward(q, k, v, out, lse)  # O(L) per head beyond Q, K, V, O
        ctx.args = (mask, scale, causal, bq, bk, dropout_p, seed,
                    None if kernel == "tiled" else counter)  # tiled: not an I/O-aware kernel
        return out

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
        q, k, v, out, lse = ctx.saved_tensors
        mask, scale, causal, bq, bk, p, seed, counter = ctx.args
        dq, dk, dv = flash_backward(grad, q, k, v, out, lse, scale, mask=mask, causal=causal,
                                    block_q=bq, block_k=bk, dropout_p=p, seed=seed,
                                    counter=counter)
        return (_sum_to(dq, q.shape), _sum_to(dk, k.shape), _sum_to(dv, v.shape),
                *([None] * (len(ctx.needs_input_grad) - 3)))


def _seq_major_out(q: Any, k: Any, v: Any) -> np.ndarray:
    """An empty O of shape (B, *heads, L, Ev) whose memory is laid out (B, L, *heads, Ev):
    the sequence axis right after the batch, as torch's CPU flash kernel allocates its
    output. Moving L back next to B (the multi-head merge (B, H, L, hd) -> (B, L, H·hd)) is
    then a view, not a copy."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if not lead:
        return np.empty((q.shape[-2], v.shape[-1]), dtype=q.dtype)
    buf = np.empty((lead[0], q.shape[-2], *lead[1:], v.shape[-1]), dtype=q.dtype)
    return np.moveaxis(buf, 1, -2)


def _sum_to(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return K._unbroadcast(g, shape)


def scaled_dot_product_attention(
    query: Tensor, key: Tensor, value: Tensor, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, *,
    rng: np.random.Generator | None = None, kernel: str = "naive", block_q: int = 64,
    block_k: int = 64, counter: IOCounter | None = None, seq_major: bool = False,
) -> Tensor:
    """softmax(Q Kᵀ·scale + mask) V by ``kernel``; the arguments of
    ``torch.nn.functional.scaled_dot_product_attention`` plus ``rng`` (dropout), the kernel,
    its block sizes and an optional byte counter. ``seq_major`` (tiled, online and flash
    kernels) lays the output out sequence-major, so that merging the heads is a view."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if block_q < 1 or block_k < 1:
        raise ValueError(f"block sizes must be >= 1, got block_q={block_q}, block_k={block_k}")
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal=True, not both (as torch)")
    if dropout_p > 0.0 and rng is None:
        raise ValueError("dropout_p > 0 needs an rng (np.random.Generator)")
    L, S = query.shape[-2], key.shape[-2]
    s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if kernel == "naive":
        if seq_major:
            raise ValueError("seq_major needs a tiled kernel (tiled, online or flash): the "
                             "naive kernel's output is one batched matrix product")
        mask = F._additive_mask(attn_mask, is_causal, L, S, query.dtype)
        return _NaiveFn.apply(query, key, value, mask, s, dropout_p, rng, counter)
    if kernel == "tiled" and dropout_p > 0.0:
        raise ValueError("the tiled kernel has no dropout; use kernel='flash' or 'naive'")
    mask = F._additive_mask(attn_mask, False, L, S, query.dtype)
    if mask is not None and mask.ndim < 2:
        mask = mask.reshape(1, -1)
    seed = int(rng.integers(2**63)) if dropout_p > 0.0 and rng is not None else 0
    if seq_major:
        return _TiledFn.apply(query, key, value, mask, s, bool(is_causal), kernel, block_q,
                              block_k, dropout_p, seed, counter, True)
    return _TiledFn.apply(query, key, value, mask, s, bool(is_causal), kernel, block_q, block_k,
                          dropout_p, seed, counter)


def attention_function(kernel: str = "naive", *, selective: bool = False, block_q: int = 64,
                       block_k: int = 64, seq_major: bool = False) -> Callable[..., Tensor]:
    """An attention with ``F.scaled_dot_product_attention``'s signature for a model to use:
    ``kernel`` picks the algorithm; ``selective`` checkpoints it (Korthikanti et al.'s
    selective recomputation: the scores and probabilities are recomputed in backward, the
    dropout generator replayed); ``seq_major`` (not with naive) lays the output out so that
    the head merge is a view (stage 12's lean policy)."""
    from spiral.nn.checkpoint import checkpoint

    if kernel not in KERNELS:
        raise ValueError(f"attention must be one of {KERNELS}, got {kernel!r}")
    if seq_major and kernel == "naive":
        raise ValueError("seq_major needs a tiled kernel (tiled, online or flash), not naive")

    def attend(query: Tensor, key: Tensor, value: Tensor, attn_mask: Any = None,
               dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, *,
               rng: np.random.Generator | None = None) -> Tensor:
        kw = dict(attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                  rng=rng, kernel=kernel, block_q=block_q, block_k=block_k)
        if seq_major:
            kw["seq_major"] = True
        if selective:
            return checkpoint(scaled_dot_product_attention, query, key, value,
                              rngs=[rng] if rng is not None else [], **kw)
        return scaled_dot_product_attention(query, key, value, **kw)

    return attend
