"""Positional information: sinusoidal, learned, rotary (RoPE), ALiBi, and none (NoPE).

Attention without positions is permutation-equivariant (stage 9 proves it), so a model
must be told where each token sits. Five answers, each a small function or module:

* sinusoidal (Vaswani et al., 2017), added to the token embeddings::

      PE(pos, 2i) = sin(pos · ω_i),  PE(pos, 2i+1) = cos(pos · ω_i),  ω_i = base^(-2i/d)

  PE(pos + k) = R(k) PE(pos) with R(k) block-diagonal 2×2 rotations by k·ω_i.
* learned (GPT-1/2): a trained table P ∈ ℝ^{max_len × d}, added to the embeddings; it has no
  row for positions ≥ max_len, so longer inputs are refused, never clamped.
* RoPE (Su et al., 2021): rotate each 2-D pair of q and k by the angle m·θ_i at position m,
  θ_i = base^(-2i/d_head). As complex numbers z_i = q_{2i} + i q_{2i+1}:
  RoPE(q, m)_i = z_i e^{i m θ_i}, so ⟨RoPE(q, m), RoPE(k, n)⟩ = Re Σ_i q_i k̄_i e^{i(m-n)θ_i}
  depends on m - n only. Two layouts of the pairs exist: ``"interleaved"`` pairs
  (2i, 2i+1) as in the paper, ``"halves"`` pairs (i, i + d/2) as in GPT-NeoX / Llama code;
  they agree up to a fixed permutation of dimensions, and must never be mixed in one model.
* ALiBi (Press et al., 2022): no embedding; head h adds -m_h · (i - j) to the score of
  query i on key j ≤ i, with slopes m_h = 2^(-8h/n) for h = 1..n when n is a power of two.
* none (NoPE): nothing; a causal mask alone still leaks order (the chapter discusses it).

Chapter: stage 9 (positional information).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spiral.autograd import Function, Tensor
from spiral.nn.attention import causal_mask
from spiral.nn.layers import Embedding
from spiral.nn.module import Module

__all__ = [
    "ENCODINGS", "ROPE_CONVENTIONS", "sinusoidal_table", "sinusoidal_shift_matrix",
    "wavelengths", "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding",
    "rope_frequencies", "rope_angles", "rope_rotate", "apply_rope", "rope_complex",
    "halves_permutation", "RotaryEmbedding", "alibi_slopes", "alibi_bias",
    "rope_llama3_frequencies",
]

ENCODINGS = ("learned", "sinusoidal", "rope", "rope_halves", "alibi", "none")
ROPE_CONVENTIONS = {"rope": "interleaved", "rope_halves": "halves"}


# =================================================================== sinusoidal
def _frequencies(d: int, base: float) -> np.ndarray:
    """ω_i = base^(-2i/d), i = 0 .. d/2 - 1 (float64)."""
    if d % 2:
        raise ValueError(f"the dimension must be even, got {d}")
    return base ** (-np.arange(0, d, 2, dtype=np.float64) / d)  # (d/2,)


def sinusoidal_table(n_positions: int, d_model: int, base: float = 10000.0,
                     offset: int = 0) -> np.ndarray:
    """PE for positions offset .. offset + n - 1: (n_positions, d_model) float64.

    Even columns hold sin(pos·ω_i), odd columns cos(pos·ω_i) (Vaswani et al.'s layout).
    """
    pos = np.arange(offset, offset + n_positions, dtype=np.float64)[:, None]  # (n, 1)
    angle = pos * _frequencies(d_model, base)[None, :]  # (n, d/2)
    pe = np.empty((n_positions, d_model))
    pe[:, 0::2], pe[:, 1::2] = np.sin(angle), np.cos(angle)
    return pe


def sinusoidal_shift_matrix(k: int, d_model: int, base: float = 10000.0) -> np.ndarray:
    """The (d, d) matrix M_k with PE(pos + k) = M_k PE(pos) for every pos.

    Per pair (sin a, cos a) with b = k·ω_i:  sin(a+b) =  cos b · sin a + sin b · cos a
                                             cos(a+b) = -sin b · sin a + cos b · cos a,
    a rotation; M_k does not depend on pos and M_k is orthogonal.
    """
    b = k * _frequencies(d_model, base)
    m = np.zeros((d_model, d_model))
    ev, od = np.arange(0, d_model, 2), np.arange(1, d_model, 2)
    m[ev, ev], m[ev, od] = np.cos(b), np.sin(b)
    m[od, ev], m[od, od] = -np.sin(b), np.cos(b)
    return m


def wavelengths(d_model: int, base: float = 10000.0) -> np.ndarray:
    """Wavelength (in positions) of each sin/cos pair: 2π / ω_i, from 2π up to ~2π·base."""
    return 2 * math.pi / _frequencies(d_model, base)


class SinusoidalPositionalEncoding(Module):
    """Fixed sinusoidal table, computed for any length: forward(T) -> (T, d_model) constant.

    >>> SinusoidalPositionalEncoding(8)(5).shape
    (5, 8)
    """

    def __init__(self, d_model: int, base: float = 10000.0, dtype: Any = np.float32,
                 amplitude: float = 1.0) -> None:
        super().__init__()
        self.d_model, self.base, self.dtype = d_model, base, dtype
        self.amplitude = amplitude  # 1 in the paper; the table is multiplied by it
        self._table = sinusoidal_table(0, d_model, base).astype(dtype)

    def forward(self, n_positions: int, offset: int = 0) -> Tensor:
        end = offset + n_positions
        if end > len(self._table):  # grow the cache; no length limit
            self._table = sinusoidal_table(end, self.d_model, self.base).astype(self.dtype)
        table = self._table[offset:end]  # (T, d_model), no gradient
        if self.amplitude != 1.0:
            table = table * np.asarray(self.amplitude, table.dtype)
        return Tensor(table)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, base={self.base:g}, amplitude={self.amplitude:g}"


class LearnedPositionalEmbedding(Embedding):
    """A trained table (max_len, d_model); positions ≥ max_len are refused, never clamped.

    >>> LearnedPositionalEmbedding(4, 3, rng=np.random.default_rng(0))(np.arange(4)).shape
    (4, 3)
    """

    def forward(self, ids: Tensor | np.ndarray) -> Tensor:
        idx = ids.data if isinstance(ids, Tensor) else np.asarray(ids)
        if idx.size and idx.max() >= self.num_embeddings:
            raise ValueError(
                f"learned positions exist for 0..{self.num_embeddings - 1} only; position "
                f"{int(idx.max())} is not applicable (no trained row; never clamped)")
        return super().forward(ids)


# ========================================================================= RoPE
def rope_frequencies(head_dim: int, base: float = 10000.0) -> np.ndarray:
    """θ_i = base^(-2i/head_dim), i = 0 .. head_dim/2 - 1."""
    return _frequencies(head_dim, base)


def rope_llama3_frequencies(freqs: np.ndarray, factor: float, low_freq_factor: float,
                            high_freq_factor: float,
                            original_max_position_embeddings: int) -> np.ndarray:
    """Llama 3.1's RoPE scaling (Meta, 2024). With wavelength λ_i = 2π/θ_i and L the
    original context: θ_i stays for λ_i < L/high_freq_factor, becomes θ_i/factor for
    λ_i > L/low_freq_factor, and in between s·θ_i + (1 − s)·θ_i/factor with
    s = (L/λ_i − low_freq_factor) / (high_freq_factor − low_freq_factor)."""
    L, low, high = float(original_max_position_embeddings), low_freq_factor, high_freq_factor
    wavelen = 2 * math.pi / freqs
    s = (L / wavelen - low) / (high - low)
    out = np.where(wavelen > L / low, freqs / factor, (1 - s) * freqs / factor + s * freqs)
    return np.where(wavelen < L / high, freqs, out)


def rope_angles(positions: np.ndarray, head_dim: int, base: float = 10000.0) -> np.ndarray:
    """m·θ_i for each position m: (T,) -> (T, head_dim/2) float64."""
    return np.asarray(positions, dtype=np.float64)[:, None] * rope_frequencies(head_dim, base)


def _pairs(d: int, convention: str) -> tuple[slice, slice]:
    if convention == "interleaved":
        return slice(0, d, 2), slice(1, d, 2)   # pair i = (2i, 2i + 1)
    if convention == "halves":
        return slice(0, d // 2), slice(d // 2, d)  # pair i = (i, i + d/2)
    raise ValueError(f"RoPE convention must be 'interleaved' or 'halves', got {convention!r}")


def rope_rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray,
                convention: str = "interleaved") -> np.ndarray:
    """Rotate each pair (a, b) of x (..., T, d) to (a cos - b sin, a sin + b cos).

    cos, sin: (T, d/2) of the angles m·θ_i.
    """
    a_idx, b_idx = _pairs(x.shape[-1], convention)
    a, b = x[..., a_idx], x[..., b_idx]  # (..., T, d/2) each
    out = np.empty_like(x)
    out[..., a_idx] = a * cos - b * sin
    out[..., b_idx] = a * sin + b * cos
    return out


class RoPEFn(Function):
    """y = R(m) x per position; the backward is the inverse rotation R(m)ᵀ = R(-m) of grad."""

    @staticmethod
    def forward(ctx: Any, x: np.ndarray, cos: np.ndarray, sin: np.ndarray,
                convention: str) -> np.ndarray:
        ctx.cos, ctx.sin, ctx.convention = cos, sin, convention
        return rope_rotate(x, cos, sin, convention)

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        return rope_rotate(grad, ctx.cos, -ctx.sin, ctx.convention), None, None, None


def apply_rope(x: Tensor, positions: np.ndarray | None = None, *, base: float = 10000.0,
               convention: str = "interleaved") -> Tensor:
    """RoPE on x (..., T, head_dim); positions default to 0 .. T - 1."""
    T, d = x.shape[-2], x.shape[-1]
    pos = np.arange(T) if positions is None else np.asarray(positions)
    ang = rope_angles(pos, d, base)  # (T, d/2)
    dt = x.data.dtype
    return RoPEFn.apply(x, np.cos(ang).astype(dt), np.sin(ang).astype(dt), convention)


def rope_complex(x: np.ndarray, positions: np.ndarray, base: float = 10000.0) -> np.ndarray:
    """Reference RoPE (interleaved) as complex multiplication z_i · e^{i m θ_i}."""
    d = x.shape[-1]
    z = x[..., 0::2] + 1j * x[..., 1::2]  # (..., T, d/2) complex
    z = z * np.exp(1j * rope_angles(positions, d, base))
    out = np.empty(x.shape, dtype=np.float64)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def halves_permutation(head_dim: int) -> np.ndarray:
    """perm with rope_halves(x[..., perm]) = rope_interleaved(x)[..., perm]: [0,2,4,..,1,3,..]."""
    return np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])


class RotaryEmbedding(Module):
    """Rotates queries and keys: forward(q, k) with q (B, H, Tq, hd), k (B, Hkv, Tk, hd).

    Keys sit at positions offset .. offset + Tk − 1 and the Tq ≤ Tk queries at the LAST Tq of
    them (the causal-mask convention of :func:`spiral.nn.attention.causal_mask`).

    No parameters; cos/sin are cached per length. ``convention`` is ``"interleaved"`` or
    ``"halves"``; one model uses one convention everywhere.
    """

    def __init__(self, head_dim: int, base: float = 10000.0,
                 convention: str = "interleaved", scaling: dict[str, Any] | None = None) -> None:
        super().__init__()
        _pairs(head_dim, convention)
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
        self.head_dim, self.base, self.convention = head_dim, base, convention
        self.scaling = scaling  # None, or Llama 3's {"rope_type": "llama3", "factor": ...}
        if scaling is not None and scaling.get("rope_type") != "llama3":
            raise ValueError(f"RoPE scaling must be None or rope_type 'llama3', got {scaling!r}")
        self._cache: dict[tuple[int, int, Any], tuple[np.ndarray, np.ndarray]] = {}

    def cos_sin(self, n: int, offset: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
        key = (n, offset, np.dtype(dtype))
        if key not in self._cache:
            ang = rope_angles(np.arange(offset, offset + n), self.head_dim, self.base)
            if self.scaling is not None:
                args = {k: v for k, v in self.scaling.items() if k != "rope_type"}
                freqs = rope_llama3_frequencies(rope_frequencies(self.head_dim, self.base),
                                                **args)
                ang = np.arange(offset, offset + n, dtype=np.float64)[:, None] * freqs
            self._cache[key] = (np.cos(ang).astype(dtype), np.sin(ang).astype(dtype))
        return self._cache[key]

    def forward(self, q: Tensor, k: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
        cq, sq = self.cos_sin(q.shape[-2], offset + k.shape[-2] - q.shape[-2], q.data.dtype)
        ck, sk = self.cos_sin(k.shape[-2], offset, k.data.dtype)
        return (RoPEFn.apply(q, cq, sq, self.convention),
                RoPEFn.apply(k, ck, sk, self.convention))

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base:g}, convention={self.convention!r}"


# ======================================================================== ALiBi
def alibi_slopes(n_heads: int) -> np.ndarray:
    """The paper's head slopes (float64, largest first).

    n a power of two: m_h = 2^(-8h/n), h = 1..n (a geometric sequence starting at and with
    ratio 2^(-8/n)). Otherwise, with p the largest power of two below n: the p slopes for p
    heads, then every other slope of the sequence for 2p heads, the first n - p of them.
    """
    if n_heads < 1:
        raise ValueError(f"n_heads must be positive, got {n_heads}")

    def power_of_two(n: int) -> np.ndarray:
        return 2.0 ** (-8.0 * np.arange(1, n + 1) / n)

    if n_heads & (n_heads - 1) == 0:
        return power_of_two(n_heads)
    p = 2 ** int(math.floor(math.log2(n_heads)))
    return np.concatenate([power_of_two(p), power_of_two(2 * p)[0::2][: n_heads - p]])


def alibi_bias(n_heads: int, n_query: int, n_key: int | None = None, *, causal: bool = True,
               dtype: Any = np.float32) -> np.ndarray:
    """Additive (n_heads, n_query, n_key) bias -m_h·(i - j); -inf on future keys if causal.

    Queries are the last n_query of the n_key positions (so a cached prefix lines up).
    Without the causal mask the bias is -m_h·|i - j|.
    """
    n_key = n_query if n_key is None else n_key
    i = np.arange(n_key - n_query, n_key)[:, None]  # query positions (Lq, 1)
    j = np.arange(n_key)[None, :]                    # key positions   (1, Lk)
    dist = np.abs(i - j).astype(np.float64)          # (Lq, Lk)
    bias = -alibi_slopes(n_heads)[:, None, None] * dist[None]  # (H, Lq, Lk)
    if causal:  # the one causal convention of spiral.nn.attention: queries are the last
        bias = bias + causal_mask(n_query, n_key, np.float64)[None]
    return bias.astype(dtype)
