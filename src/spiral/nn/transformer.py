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

The block's switches ``residual``, ``norm`` and ``ffn`` exist for the chapter's ablations;
stage 14 adds the Llama family's (Touvron et al., 2023): RMSNorm for LayerNorm, SwiGLU for
the GELU MLP (:mod:`spiral.nn.ffn`), RoPE, no biases, and grouped-query attention
(Ainslie et al., 2023): H query heads share Hkv ≤ H key/value heads (Hkv = 1 is Shazeer's
2019 multi-query attention), shrinking the K/V projections and the KV cache by H/Hkv.
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
from spiral.nn.activations import GELU
from spiral.nn.attention import causal_mask
from spiral.nn.ffn import FeedForward, SwiGLUFeedForward, make_ffn
from spiral.nn.layers import Dropout, Linear
from spiral.nn.lean import SAVED_POLICIES, LeanGELU, LeanLayerNorm, LeanRMSNorm, residual_linear
from spiral.nn.module import Module
from spiral.nn.norm import LayerNorm, RMSNorm
from spiral.nn.positional import ROPE_CONVENTIONS, RotaryEmbedding, alibi_bias

__all__ = ["MultiHeadAttention", "FeedForward", "Block", "NORM_TYPES", "make_block_norm"]

NORM_TYPES = ("layernorm", "rmsnorm")


class MultiHeadAttention(Module):
    """Causal multi-head self-attention with one fused QKV projection; MHA, GQA or MQA.

    (B, T, d_model) -> (B, T, d_model); ``forward(x, need_weights=True)`` also returns the
    per-head attention weights (B, n_heads, T, T) as a detached NumPy array. ``n_kv_heads``
    (default ``n_heads``) sets how many key/value heads the query heads share: query head h
    reads kv head h // (n_heads / n_kv_heads), as ``repeat_interleave`` on the kv heads.

    >>> mha = MultiHeadAttention(8, 2, rng=np.random.default_rng(0))
    >>> y, w = mha(Tensor(np.ones((1, 5, 8), dtype=np.float32)), need_weights=True)
    >>> y.shape, w.shape
    ((1, 5, 8), (1, 2, 5, 5))
    """

    sdpa: Any = None  # stage 12: an attention function (spiral.nn.attention_kernels)

    def __init__(self, d_model: int, n_heads: int, *, bias: bool = False, causal: bool = True,
                 dropout: float = 0.0, rng: np.random.Generator | None = None,
                 dtype: Any = np.float32, positional: str = "learned",
                 n_kv_heads: int | None = None, rope_theta: float = 10000.0,
                 rope_scaling: dict[str, Any] | None = None) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        n_kv = n_heads if n_kv_heads is None else n_kv_heads
        if n_kv < 1 or n_heads % n_kv:
            raise ValueError(f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.n_kv_heads, self.n_rep = n_kv, n_heads // n_kv
        self.causal, self.dropout = causal, dropout
        self.rng = rng if rng is not None else np.random.default_rng()
        # rows [0, H·hd) of the weight make Q, the next Hkv·hd make K, the last Hkv·hd make V;
        # inside each, rows [h·hd, (h+1)·hd) belong to head h (for MHA: [Q; K; V], 3C rows)
        qkv_out = (n_heads + 2 * n_kv) * self.head_dim
        self.qkv_proj = Linear(d_model, qkv_out, bias=bias, rng=rng, dtype=dtype)
        self.out_proj = Linear(d_model, d_model, bias=bias, rng=rng, dtype=dtype)
        self.resid_drop = Dropout(dropout, rng=self.rng)
        # stage 9: RoPE rotates q and k, ALiBi biases the scores; other encodings act outside
        self.positional = positional
        self.rotary: RotaryEmbedding | None = None
        if positional in ROPE_CONVENTIONS:
            self.rotary = RotaryEmbedding(self.head_dim, base=rope_theta,
                                          convention=ROPE_CONVENTIONS[positional],
                                          scaling=rope_scaling)

    def split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, d_model) -> Q (B, H, T, hd), K and V (B, Hkv, T, hd)."""
        B, T, _ = x.shape
        H, Hkv, hd = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.qkv_proj(x)  # (B, T, (H + 2·Hkv)·hd)
        if Hkv == H:  # (B, T, 3C) -> (B, T, 3, H, hd) -> (3, B, H, T, hd)
            qkv = qkv.reshape(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
            return qkv[0], qkv[1], qkv[2]
        # (B, T, H + 2·Hkv, hd) -> (B, H + 2·Hkv, T, hd), then split along the head axis
        heads = qkv.reshape(B, T, H + 2 * Hkv, hd).transpose(1, 2)
        return heads[:, :H], heads[:, H:H + Hkv], heads[:, H + Hkv:]

    def bias(self, n_query: int, n_key: int, dtype: Any) -> np.ndarray | None:
        """The additive mask: ALiBi's (H, Tq, Tk) bias, or the causal (Tq, Tk) mask, or None.

        Queries are the last n_query of the n_key positions (:func:`causal_mask`)."""
        if self.positional == "alibi":
            return alibi_bias(self.n_heads, n_query, n_key, causal=self.causal, dtype=dtype)
        return causal_mask(n_query, n_key, dtype) if self.causal else None

    def _grouped(self, q: Tensor | np.ndarray, mask: np.ndarray | None
                 ) -> tuple[Any, np.ndarray | None]:
        """GQA without copies: q (B, H, T, hd) -> (B, Hkv, G, T, hd); an (H, Tq, Tk) mask
        -> (Hkv, G, Tq, Tk). K and V then enter as (B, Hkv, 1, Tk, hd) and broadcast."""
        if self.n_rep == 1:
            return q, mask
        B, _, T, hd = q.shape
        q = q.reshape(B, self.n_kv_heads, self.n_rep, T, hd)
        if mask is not None and mask.ndim == 3:
            mask = mask.reshape(self.n_kv_heads, self.n_rep, *mask.shape[1:])
        return q, mask

    def _kv(self, t: Any) -> Any:
        return t if self.n_rep == 1 else t.reshape(t.shape[0], self.n_kv_heads, 1,
                                                   *t.shape[2:])

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Positions, mask and attention: q (B, H, Tq, hd), k, v (B, Hkv, Tk, hd), Tq ≤ Tk
        (queries are the LAST Tq positions) -> (B, Tq, d_model) before the output projection."""
        B, _, Tq, _ = q.shape
        if self.rotary is not None:  # stage 9: rotate by absolute positions
            q, k = self.rotary(q, k)
        qg, mask = self._grouped(q, self.bias(Tq, k.shape[-2], q.data.dtype))
        p = self.dropout if self.training else 0.0
        sdpa = self.sdpa or F.scaled_dot_product_attention  # stage 12: another kernel
        y = sdpa(qg, self._kv(k), self._kv(v), attn_mask=mask, dropout_p=p,
                 rng=self.rng if p else None)
        # (B, [Hkv, G,] Tq, hd) -> (B, H, Tq, hd) -> (B, Tq, H, hd) -> (B, Tq, C)
        y = y.reshape(B, self.n_heads, Tq, self.head_dim)
        return y.transpose(1, 2).reshape(B, Tq, self.d_model)

    def forward(self, x: Tensor, need_weights: bool = False
                ) -> Tensor | tuple[Tensor, np.ndarray]:
        q, k, v = self.split_heads(x)
        out = self.resid_drop(self.out_proj(self.attend(q, k, v)))
        if not need_weights:
            return out
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        return out, self.weights(q.data, k.data)

    def weights(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        """softmax(Q Kᵀ/√hd + M) per head: q (B, H, Tq, hd), k (B, Hkv, Tk, hd) (already
        rotated for RoPE) -> (B, H, Tq, Tk)."""
        qg, mask = self._grouped(q, self.bias(q.shape[-2], k.shape[-2], q.dtype))
        scores = qg @ np.swapaxes(self._kv(k), -1, -2) / np.sqrt(self.head_dim)
        if mask is not None:
            scores = scores + mask
        w = np.asarray(K.softmax_forward(scores, -1))
        return w.reshape(q.shape[0], self.n_heads, q.shape[-2], k.shape[-2])

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, "
                f"n_kv_heads={self.n_kv_heads}, head_dim={self.head_dim}")


def make_block_norm(norm_type: str, d_model: int, *, bias: bool = False, eps: float = 1e-5,
                    dtype: Any = np.float32, lean: bool = False) -> Module:
    """LayerNorm (GPT-2; with a bias if ``bias``) or RMSNorm (Llama; never a bias); ``lean``
    (stage 12): the twin that keeps the per-row statistics, not x̂ (:mod:`spiral.nn.lean`)."""
    if norm_type == "layernorm":
        return (LeanLayerNorm if lean else LayerNorm)(d_model, eps=eps, bias=bias, dtype=dtype)
    if norm_type == "rmsnorm":
        return (LeanRMSNorm if lean else RMSNorm)(d_model, eps=eps, dtype=dtype)
    raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")


class _Identity(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class Block(Module):
    """One transformer block: attention then FFN, each a residual sub-layer with a norm.

    ``placement`` is ``"pre"`` (GPT-2) or ``"post"`` (the 2017 original). The ablation
    switches: ``residual=False`` drops both skip connections, ``norm=False`` replaces the
    norms by the identity, ``ffn=False`` removes the feed-forward sub-layer. Stage 14's
    switches: ``norm_type`` ("layernorm" | "rmsnorm") with ``norm_eps``, ``ffn_type``
    ("gelu" | "swiglu") with ``gelu_approximate``, ``ffn_hidden`` and ``ffn_multiple_of``,
    ``n_kv_heads`` (MHA / GQA / MQA) and ``rope_theta``.

    >>> blk = Block(8, 2, rng=np.random.default_rng(0))
    >>> blk(Tensor(np.ones((1, 4, 8), dtype=np.float32))).shape
    (1, 4, 8)
    """

    def __init__(self, d_model: int, n_heads: int, *, expansion: float = 4.0,
                 placement: str = "pre", bias: bool = False, dropout: float = 0.0,
                 residual: bool = True, norm: bool = True, ffn: bool = True,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32,
                 positional: str = "learned", norm_type: str = "layernorm",
                 norm_eps: float = 1e-5, ffn_type: str = "gelu", gelu_approximate: str = "none",
                 ffn_hidden: int | None = None, ffn_multiple_of: int = 8,
                 n_kv_heads: int | None = None, rope_theta: float = 10000.0,
                 rope_scaling: dict[str, Any] | None = None, saved: str = "all") -> None:
        super().__init__()
        if placement not in ("pre", "post"):
            raise ValueError(f"placement must be 'pre' or 'post', got {placement!r}")
        if saved not in SAVED_POLICIES:
            raise ValueError(f"saved must be one of {SAVED_POLICIES}, got {saved!r}")
        self.placement, self.residual, self.saved = placement, residual, saved
        lean = saved == "lean"

        def make_norm() -> Module:
            if not norm:
                return _Identity()
            return make_block_norm(norm_type, d_model, bias=bias, eps=norm_eps, dtype=dtype,
                                   lean=lean)

        self.ln1 = make_norm()
        self.attn = MultiHeadAttention(d_model, n_heads, bias=bias, dropout=dropout, rng=rng,
                                       dtype=dtype, positional=positional,  # stage 9
                                       n_kv_heads=n_kv_heads, rope_theta=rope_theta,
                                       rope_scaling=rope_scaling)
        self.ln2: Module | None = make_norm() if ffn else None
        self.ffn: Any = None  # FeedForward (GELU) | SwiGLUFeedForward | None
        if ffn:
            self.ffn = make_ffn(ffn_type, d_model, expansion, bias=bias,
                                gelu_approximate=gelu_approximate, hidden=ffn_hidden,
                                multiple_of=ffn_multiple_of, dropout=dropout, rng=rng,
                                dtype=dtype)
            if lean and isinstance(self.ffn.act, GELU):  # stage 12: keep x, recompute Φ(x)
                self.ffn.act = LeanGELU(self.ffn.act.approximate)

    def _sublayer(self, x: Tensor, f: Any, norm: Module) -> Tensor:
        if self.placement == "pre":
            h = f(norm(x))
            return x + h if self.residual else h
        h = f(x)
        return norm(x + h if self.residual else h)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d_model) -> (B, T, d_model)."""
        if self.saved == "lean" and self.placement == "pre" and self.residual:
            return self._lean_forward(x)
        x = self._sublayer(x, self.attn, self.ln1)
        if self.ffn is not None and self.ln2 is not None:
            x = self._sublayer(x, self.ffn, self.ln2)
        return x

    def _lean_forward(self, x: Tensor) -> Tensor:
        """Pre-LN with each residual branch's projection, dropout and sum as ONE node
        (:func:`spiral.nn.lean.residual_linear`): the same ops, fewer arrays kept."""
        attn = self.attn
        x = residual_linear(x, attn.attend(*attn.split_heads(self.ln1(x))), attn.out_proj,
                            attn.resid_drop)
        if self.ffn is not None and self.ln2 is not None:
            f, z = self.ffn, self.ln2(x)
            if isinstance(f, SwiGLUFeedForward):  # W₂ (SiLU(W₁z) ⊙ W₃z)
                x = residual_linear(x, f.act(f.w1(z)) * f.w3(z), f.w2, f.drop)
            elif isinstance(f.act, GELU):  # W₂ GELU(W₁z): GELU inside the node
                x = residual_linear(x, f.fc(z), f.proj, f.drop, gelu=f.act.approximate)
            else:  # W₂ act(W₁z)
                x = residual_linear(x, f.act(f.fc(z)), f.proj, f.drop)
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
