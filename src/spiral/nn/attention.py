"""Single-head self-attention: a learned, content-addressed weighted average over positions.

Every position t of a sequence x (T, d_model) asks a question (query), every position s
advertises what it holds (key) and what it hands over (value), all three linear maps of x:

    Q = x W_Qᵀ,  K = x W_Kᵀ,  V = x W_Vᵀ                       (T, head_dim) each
    A = softmax(Q Kᵀ · s + M)     rows sum to one                (T, T)
    y = (A V) W_Oᵀ                                               (T, d_model)

with s = 1/√head_dim (the variance argument of the chapter: for independent unit-variance
components Var(q·k) = head_dim, so the scale brings the logits back to unit variance) and
M the causal mask, 0 where s ≤ t and −∞ where s > t, added *before* the softmax so that
exp(−∞) = 0 gives the future exactly zero weight and exactly zero gradient.

One convention for every mask the models build (:func:`causal_mask`, and the ALiBi and RoPE
offsets of stage 9): with T_q queries and T_k ≥ T_q keys, the queries are the LAST T_q
positions, query i sits at position t = T_k − T_q + i and may see keys s ≤ t (torch's
``causal_lower_right``). That is what a KV cache needs: one new query against T_k cached keys
sees all of them. (``F.scaled_dot_product_attention(is_causal=True)`` keeps torch's own
upper-left alignment, which agrees when T_q = T_k.)

The softmax and the weighted sum run as ONE fused autograd node, stage 3's
:func:`spiral.nn.functional.scaled_dot_product_attention` (hand-derived backward). Stage 8
runs several such heads side by side (multi-head attention) on the same kernel.
Paper: Vaswani et al., *Attention Is All You Need* (2017), eq. 1; Bahdanau, Cho & Bengio
(2015) for attention as soft alignment. Chapter: stage 7 (attention from first principles).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.nn import functional as F
from spiral.nn import kernels as K
from spiral.nn.layers import Linear
from spiral.nn.module import Module

__all__ = ["SelfAttention", "attention_scale", "causal_mask"]


def causal_mask(n_query: int, n_key: int | None = None, dtype: Any = np.float32) -> np.ndarray:
    """Additive (n_query, n_key) mask, queries aligned to the LAST n_query of n_key positions.

    Query i sits at position t = n_key − n_query + i; key s gets 0 if s ≤ t, −∞ otherwise.

    >>> causal_mask(2, 4)
    array([[  0.,   0.,   0., -inf],
           [  0.,   0.,   0.,   0.]], dtype=float32)
    """
    n_key = n_query if n_key is None else n_key
    if n_query > n_key:
        raise ValueError(f"{n_query} queries cannot be the last positions of only {n_key} keys")
    m = np.zeros((n_query, n_key), dtype=dtype)
    m[np.triu_indices(n_query, k=1 + n_key - n_query, m=n_key)] = -np.inf
    return m


def attention_scale(scale: bool | float, head_dim: int) -> float:
    """The factor on QKᵀ: True -> 1/√head_dim, False -> 1 (the ablation), a float -> itself.

    >>> attention_scale(True, 64), attention_scale(False, 64), attention_scale(0.5, 64)
    (0.125, 1.0, 0.5)
    """
    if scale is True:
        return 1.0 / math.sqrt(head_dim)
    if scale is False:
        return 1.0
    return float(scale)


class SelfAttention(Module):
    """One attention head with Q/K/V and output projections: (B, T, d_model) -> (B, T, d_model).

    ``causal`` adds the −∞ mask above the diagonal; ``scale`` is True (1/√head_dim), False
    (no scaling, for the experiment) or a number; ``forward(x, need_weights=True)`` also
    returns the attention weights A (B, T, T) as a NumPy array (detached: for inspection).

    >>> attn = SelfAttention(8, 4, rng=np.random.default_rng(0))
    >>> y, w = attn(Tensor(np.ones((2, 5, 8), dtype=np.float32)), need_weights=True)
    >>> y.shape, w.shape
    ((2, 5, 8), (2, 5, 5))
    """

    def __init__(self, d_model: int, head_dim: int | None = None, *, causal: bool = True,
                 scale: bool | float = True, bias: bool = False,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        super().__init__()
        self.d_model = d_model
        self.head_dim = d_model if head_dim is None else head_dim
        self.causal = causal
        self.scale = attention_scale(scale, self.head_dim)
        # three separate maps: what to look for, what to be found by, what to hand over
        self.q_proj = Linear(d_model, self.head_dim, bias=bias, rng=rng, dtype=dtype)
        self.k_proj = Linear(d_model, self.head_dim, bias=bias, rng=rng, dtype=dtype)
        self.v_proj = Linear(d_model, self.head_dim, bias=bias, rng=rng, dtype=dtype)
        self.out_proj = Linear(self.head_dim, d_model, bias=bias, rng=rng, dtype=dtype)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, d_model) -> Q, K, V, each (B, T, head_dim)."""
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def mask(self, n_query: int, n_key: int, attn_mask: Any = None,
             dtype: Any = np.float32) -> np.ndarray | None:
        """The additive (n_query, n_key) mask: :func:`causal_mask` (queries last) plus ``attn_mask``
        (boolean, True = may attend, or additive floats, as torch), or None."""
        m = causal_mask(n_query, n_key, dtype) if self.causal else None
        if attn_mask is None:
            return m
        extra = attn_mask.data if isinstance(attn_mask, Tensor) else np.asarray(attn_mask)
        if extra.dtype == np.bool_:
            extra = np.where(extra, 0.0, -np.inf)
        extra = extra.astype(dtype)
        return extra if m is None else m + extra

    def weights(self, q: np.ndarray, k: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """softmax(Q Kᵀ · s + M) as an array: q (..., T, hd), k (..., S, hd) -> (..., T, S)."""
        # (..., T, hd) @ (..., hd, S) -> (..., T, S)
        scores = q @ np.swapaxes(k, -1, -2) * self.scale
        if mask is not None:
            scores = scores + mask
        return np.asarray(K.softmax_forward(scores, -1))

    def forward(self, x: Tensor, need_weights: bool = False,
                attn_mask: Any = None) -> Tensor | tuple[Tensor, np.ndarray]:
        """x (B, T, d_model) -> y (B, T, d_model) [, A (B, T, T)]."""
        q, k, v = self.project(x)
        mask = self.mask(q.shape[-2], k.shape[-2], attn_mask, q.dtype)
        # the fused stage-3 node: softmax(Q Kᵀ s + M) V, (B, T, hd) -> (B, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        out = self.out_proj(y)  # (B, T, head_dim) -> (B, T, d_model)
        if not need_weights:
            return out
        return out, self.weights(q.data, k.data, mask)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, head_dim={self.head_dim}, causal={self.causal}, "
                f"scale={self.scale:.4g}")
