"""Multi-head attention, the feed-forward network and the transformer block.

Multi-head attention splits d_model into ``n_heads`` subspaces of ``head_dim = d_model /
n_heads`` and runs one attention in each, in parallel, then mixes the heads back:

    [Q | K | V] = x W_qkvᵀ                          (B, T, 3·d_model)   one fused projection
    head_h = softmax(Q_h K_hᵀ / √head_dim + M) V_h   (B, T, head_dim)    h = 1..n_heads
    MHA(x) = Concat(head_1, ..., head_H) W_Oᵀ        (B, T, d_model)

Q_h = x W_Q,hᵀ reads only the h-th block of rows of W_Q: the heads are H independent
attention patterns over H orthogonal coordinate subspaces of the query/key/value spaces,
and W_O = [W_O,1 ... W_O,H] sums their contributions, MHA(x) = Σ_h head_h W_O,hᵀ. The cost
in parameters and matmul FLOPs is the same as ONE head of width d_model; what changes is
that each position gets H attention distributions instead of one.

The block (GPT-2's pre-LN placement by default; Vaswani et al.'s post-LN as an option):

    pre-LN:   x ← x + MHA(LN₁(x));   x ← x + FFN(LN₂(x))
    post-LN:  x ← LN₁(x + MHA(x));   x ← LN₂(x + FFN(x))
    FFN(x) = W₂ GELU(W₁ x),   W₁: d_model -> expansion·d_model   (4× in GPT)

The block's switches ``residual``, ``norm`` and ``ffn`` exist for the chapter's ablations.
Attention runs as stage 3's fused node :func:`spiral.nn.functional.scaled_dot_product_attention`.
Papers: Vaswani et al. (2017); Radford et al. (2019) for pre-LN in GPT-2; Xiong et al. (2020).
Chapter: stage 8 (multi-head attention and the transformer).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.nn import functional as F
from spiral.nn import kernels as K
from spiral.nn.layers import Dropout, Linear
from spiral.nn.module import Module
from spiral.nn.norm import LayerNorm
from spiral.nn.positional import ROPE_CONVENTIONS, RotaryEmbedding, alibi_bias
from spiral.nn.residual import FeedForward as _PositionwiseMLP

__all__ = ["MultiHeadAttention", "FeedForward", "Block"]


class MultiHeadAttention(Module):
    """Causal multi-head self-attention with one fused QKV projection.

    (B, T, d_model) -> (B, T, d_model); ``forward(x, need_weights=True)`` also returns the
    per-head attention weights (B, n_heads, T, T) as a detached NumPy array.

    >>> mha = MultiHeadAttention(8, 2, rng=np.random.default_rng(0))
    >>> y, w = mha(Tensor(np.ones((1, 5, 8), dtype=np.float32)), need_weights=True)
    >>> y.shape, w.shape
    ((1, 5, 8), (1, 2, 5, 5))
    """

    def __init__(self, d_model: int, n_heads: int, *, bias: bool = False, causal: bool = True,
                 dropout: float = 0.0, rng: np.random.Generator | None = None,
                 dtype: Any = np.float32, positional: str = "learned") -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.causal, self.dropout = causal, dropout
        self.rng = rng if rng is not None else np.random.default_rng()
        # rows [0, C) of the weight make Q, [C, 2C) make K, [2C, 3C) make V; inside each,
        # rows [h·hd, (h+1)·hd) belong to head h
        self.qkv_proj = Linear(d_model, 3 * d_model, bias=bias, rng=rng, dtype=dtype)
        self.out_proj = Linear(d_model, d_model, bias=bias, rng=rng, dtype=dtype)
        self.resid_drop = Dropout(dropout, rng=self.rng)
        # stage 9: RoPE rotates q and k, ALiBi biases the scores; other encodings act outside
        self.positional = positional
        self.rotary: RotaryEmbedding | None = None
        if positional in ROPE_CONVENTIONS:
            self.rotary = RotaryEmbedding(self.head_dim,
                                          convention=ROPE_CONVENTIONS[positional])

    def _position_qk(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, np.ndarray | None]:
        """Stage 9: rotated (q, k) for RoPE; the ALiBi bias (+ causal mask) as attn_mask."""
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        if self.positional != "alibi":
            return q, k, None
        return q, k, alibi_bias(self.n_heads, q.shape[-2], k.shape[-2], causal=self.causal,
                                dtype=q.data.dtype)  # (H, T, T)

    def split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, d_model) -> Q, K, V, each (B, n_heads, T, head_dim)."""
        B, T, _ = x.shape
        qkv = self.qkv_proj(x)  # (B, T, 3C)
        # (B, T, 3C) -> (B, T, 3, H, hd) -> (3, B, H, T, hd)
        qkv = qkv.reshape(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def forward(self, x: Tensor, need_weights: bool = False
                ) -> Tensor | tuple[Tensor, np.ndarray]:
        B, T, C = x.shape
        q, k, v = self.split_heads(x)
        q, k, mask = self._position_qk(q, k)  # stage 9 (unchanged q, k and None by default)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                           is_causal=self.causal and mask is None,
                                           rng=self.rng if p else None)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, H, T, hd) -> (B, T, H, hd) -> (B, T, C)
        out = self.resid_drop(self.out_proj(y))
        if not need_weights:
            return out
        return out, self.weights(q.data, k.data)

    def weights(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        """softmax(Q Kᵀ/√hd + M) per head: q, k (B, H, T, hd) -> (B, H, T, T)."""
        scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(self.head_dim)  # (B, H, T, T)
        if self.positional == "alibi":  # stage 9: q, k arrive already rotated for RoPE
            scores = scores + alibi_bias(self.n_heads, q.shape[-2], k.shape[-2],
                                         causal=self.causal, dtype=scores.dtype)
        elif self.causal:
            scores = scores + K.causal_mask(q.shape[-2], k.shape[-2], scores.dtype)
        return np.asarray(K.softmax_forward(scores, -1))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, head_dim={self.head_dim}"


class FeedForward(_PositionwiseMLP):
    """Position-wise W₂ GELU(W₁ x): (..., d_model) -> (..., expansion·d_model) -> (..., d_model).

    Stage 6's MLP sub-layer with GPT's knobs: an expansion ratio (4 in GPT-2; a float is
    rounded to an integer width), optional biases and dropout on the output.

    >>> FeedForward(8, 2.0, rng=np.random.default_rng(0))(Tensor(np.ones((3, 8)))).shape
    (3, 8)
    """

    def __init__(self, d_model: int, expansion: float = 4.0, *, bias: bool = False,
                 activation: str = "gelu", dropout: float = 0.0,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        d_hidden = max(1, int(round(expansion * d_model)))
        super().__init__(d_model, d_hidden, activation, bias=bias, rng=rng, dtype=dtype)
        self.expansion = expansion
        self.drop = Dropout(dropout, rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(super().forward(x))


class _Identity(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class Block(Module):
    """One transformer block: attention then FFN, each a residual sub-layer with a norm.

    ``placement`` is ``"pre"`` (GPT-2) or ``"post"`` (the 2017 original). The ablation
    switches: ``residual=False`` drops both skip connections, ``norm=False`` replaces the
    norms by the identity, ``ffn=False`` removes the feed-forward sub-layer.

    >>> blk = Block(8, 2, rng=np.random.default_rng(0))
    >>> blk(Tensor(np.ones((1, 4, 8), dtype=np.float32))).shape
    (1, 4, 8)
    """

    def __init__(self, d_model: int, n_heads: int, *, expansion: float = 4.0,
                 placement: str = "pre", bias: bool = False, dropout: float = 0.0,
                 residual: bool = True, norm: bool = True, ffn: bool = True,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32,
                 positional: str = "learned") -> None:
        super().__init__()
        if placement not in ("pre", "post"):
            raise ValueError(f"placement must be 'pre' or 'post', got {placement!r}")
        self.placement, self.residual = placement, residual

        def make_norm() -> Module:
            return LayerNorm(d_model, bias=bias, dtype=dtype) if norm else _Identity()

        self.ln1 = make_norm()
        self.attn = MultiHeadAttention(d_model, n_heads, bias=bias, dropout=dropout, rng=rng,
                                       dtype=dtype, positional=positional)  # stage 9
        self.ln2: Module | None = make_norm() if ffn else None
        self.ffn: FeedForward | None = None
        if ffn:
            self.ffn = FeedForward(d_model, expansion, bias=bias, dropout=dropout, rng=rng,
                                   dtype=dtype)

    def _sublayer(self, x: Tensor, f: Any, norm: Module) -> Tensor:
        if self.placement == "pre":
            h = f(norm(x))
            return x + h if self.residual else h
        h = f(x)
        return norm(x + h if self.residual else h)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d_model) -> (B, T, d_model)."""
        x = self._sublayer(x, self.attn, self.ln1)
        if self.ffn is not None and self.ln2 is not None:
            x = self._sublayer(x, self.ffn, self.ln2)
        return x

    def attention_weights(self, x: Tensor) -> tuple[Tensor, np.ndarray]:
        """The block's output and its attention weights (B, n_heads, T, T)."""
        box: list[np.ndarray] = []

        def attn(z: Tensor) -> Tensor:
            out, w = self.attn(z, need_weights=True)
            box.append(w)
            return out

        x = self._sublayer(x, attn, self.ln1)
        if self.ffn is not None and self.ln2 is not None:
            x = self._sublayer(x, self.ffn, self.ln2)
        return x, box[0]

    def extra_repr(self) -> str:
        return f"placement={self.placement!r}, residual={self.residual}"
