"""Tiled attention kernels on NumPy arrays: two-pass tiles, online softmax, flash attention.

All three compute O = softmax(Q Kᵀ·s + mask) V exactly (not an approximation) while never
holding the N×N score matrix: at most a (Br × S) row block (``tiled_forward``) or a (Br × Bc)
tile (``flash_forward``). The flash kernel's inner loop is the ONLINE SOFTMAX recurrence
(Milakov & Gimelshein, 2018) over key blocks j, per query row:

    m_j = max(m_{j-1}, rowmax(S_j))
    ℓ_j = e^{m_{j-1} - m_j}·ℓ_{j-1} + rowsum(e^{S_j - m_j})
    A_j = e^{m_{j-1} - m_j}·A_{j-1} + e^{S_j - m_j} V_j          O = A_last / ℓ_last

and it saves only O and the log-sum-exp λ = m + log ℓ (N numbers per head, not N²). The
backward pass (FlashAttention-2) RECOMPUTES each probability tile from λ,
P_ij = exp(S_ij - λ_i), and with D_i = rowsum(dO_i ⊙ O_i) = Σ_j P_ij dP_ij:

    dV_j += P_ijᵀ dO_i,  dP_ij = dO_i V_jᵀ,  dS_ij = P_ij ⊙ (dP_ij - D_i),
    dQ_i += s·dS_ij K_j,  dK_j += s·dS_ijᵀ Q_i

(outer loop over key blocks, inner over query blocks). Dropout inside the tiles draws each
tile's keep-mask from a generator seeded by (seed, i0, j0), so the backward pass regenerates
the same mask without storing it — the role Philox's counter-based RNG plays on a GPU.
Arrays are (..., L, E) / (..., S, E) / (..., S, Ev); every op is vectorised over the leading
(batch, head) axes; an :class:`spiral.nn.attention_io.IOCounter` counts the bytes moved.
Papers: Dao et al. (2022); Dao (2023); Rabe & Staats (2021). Chapter: stage 12.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral.nn.attention_io import IOCounter

__all__ = ["tile_mask", "flash_forward", "flash_backward", "tiled_forward"]

Array = np.ndarray


def _tile_bias(mask: Array | None, causal: bool, i0: int, i1: int, j0: int, j1: int,
               dtype: Any) -> Array | None:
    """The additive mask of tile rows [i0, i1) × columns [j0, j1), or None (nothing masked)."""
    bias = None
    if mask is not None:
        bias = mask[..., i0:i1, j0:j1]
    if causal and j1 - 1 > i0:  # some key j > query i in this tile (top-left alignment)
        above = np.arange(j0, j1)[None, :] > np.arange(i0, i1)[:, None]
        c = np.where(above, -np.inf, 0.0).astype(dtype)
        bias = c if bias is None else bias + c
    return bias


def tile_mask(seed: int, i0: int, j0: int, shape: tuple[int, ...], p: float, dtype: Any) -> Array:
    """The dropout keep-mask (scaled by 1/(1-p)) of the tile at (i0, j0): a pure function of
    (seed, i0, j0), so forward and backward draw the same one."""
    r = np.random.default_rng([seed, i0, j0]).random(shape)
    return ((r >= p) / (1.0 - p)).astype(dtype)


def _exp_shift(s: Array, m: Array) -> Array:
    """exp(s - m) with rows whose max is -inf (fully masked so far) giving zeros, not NaN."""
    safe = np.where(np.isfinite(m), m, 0.0).astype(s.dtype)
    return np.exp(s - safe)


def flash_forward(q: Array, k: Array, v: Array, scale: float, *, mask: Array | None = None,
                  causal: bool = False, block_q: int = 64, block_k: int = 64,
                  dropout_p: float = 0.0, seed: int = 0, counter: IOCounter | None = None,
                  trace: list[dict[str, Array]] | None = None,
                  out: Array | None = None) -> tuple[Array, Array]:
    """Online-softmax attention over (block_q × block_k) tiles -> (O, log-sum-exp λ).

    ``trace`` (if a list) receives, per key block of the FIRST query block, the running
    m, ℓ and O = A/ℓ: the recurrence step by step, as the chapter plots it. ``out`` (if
    given) is written tile by tile, whatever its strides (stage 12's lean policy passes a
    sequence-major buffer, so that merging the heads afterwards is a view)."""
    L, S, E, Ev = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    shape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])  # (batch, heads)
    lead = int(np.prod(shape, dtype=np.int64))
    item = q.dtype.itemsize
    out = np.empty(shape + (L, Ev), dtype=q.dtype) if out is None else out
    lse = np.empty(shape + (L,), dtype=q.dtype)
    for i0 in range(0, L, block_q):
        i1 = min(i0 + block_q, L)
        qi = q[..., i0:i1, :]
        m = np.full(shape + (i1 - i0, 1), -np.inf, dtype=q.dtype)
        ell = np.zeros_like(m)
        acc = np.zeros(shape + (i1 - i0, Ev), dtype=q.dtype)
        if counter is not None:
            counter.load(lead * (i1 - i0) * E, itemsize=item)
        for j0 in range(0, S, block_k):
            if causal and j0 > i1 - 1:
                break  # every key in this and later blocks lies above the diagonal
            j1 = min(j0 + block_k, S)
            if counter is not None:
                counter.load(lead * (j1 - j0) * (E + Ev), itemsize=item)
                counter.on_chip((i1 - i0) * (E + Ev + 2) + (j1 - j0) * (E + Ev)
                                + (i1 - i0) * (j1 - j0), itemsize=item)
            s = qi @ np.swapaxes(k[..., j0:j1, :], -1, -2)
            s *= scale
            bias = _tile_bias(mask, causal, i0, i1, j0, j1, q.dtype)
            if bias is not None:
                s = s + bias
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
            alpha = _exp_shift(m, m_new)  # rescales what was summed under the old max
            p = _exp_shift(s, m_new)
            ell = alpha * ell + p.sum(axis=-1, keepdims=True)
            if dropout_p > 0.0:
                p = p * tile_mask(seed, i0, j0, p.shape, dropout_p, q.dtype)
            acc = alpha * acc + p @ v[..., j0:j1, :]
            m = m_new
            if trace is not None and i0 == 0:
                trace.append({"m": m.copy(), "l": ell.copy(), "o": acc / ell})
        out[..., i0:i1, :] = acc / ell
        lse[..., i0:i1] = (m + np.log(ell))[..., 0]
        if counter is not None:
            counter.store(lead * (i1 - i0) * (Ev + 1), itemsize=item)
    return out, lse


def flash_backward(grad: Array, q: Array, k: Array, v: Array, out: Array, lse: Array,
                   scale: float, *, mask: Array | None = None, causal: bool = False,
                   block_q: int = 64, block_k: int = 64, dropout_p: float = 0.0, seed: int = 0,
                   counter: IOCounter | None = None) -> tuple[Array, Array, Array]:
    """dO -> dQ, dK, dV, recomputing every probability tile from the saved λ."""
    L, S, E, Ev = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    shape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    lead = int(np.prod(shape, dtype=np.int64))
    item = q.dtype.itemsize
    d = np.sum(grad * out, axis=-1, keepdims=True)  # D_i = rowsum(dO ⊙ O)
    lam = lse[..., None]
    dq = np.zeros(shape + (L, E), dtype=q.dtype)  # the callers sum broadcast axes away
    dk = np.zeros(shape + (S, E), dtype=q.dtype)
    dv = np.zeros(shape + (S, Ev), dtype=q.dtype)
    if counter is not None:
        counter.load(2 * lead * L * Ev, itemsize=item)
        counter.store(lead * L, itemsize=item)
    for j0 in range(0, S, block_k):
        j1 = min(j0 + block_k, S)
        kj, vj = k[..., j0:j1, :], v[..., j0:j1, :]
        dkj = np.zeros(shape + (j1 - j0, E), dtype=q.dtype)
        dvj = np.zeros(shape + (j1 - j0, Ev), dtype=q.dtype)
        if counter is not None:
            counter.load(lead * (j1 - j0) * (E + Ev), itemsize=item)
        for i0 in range(0, L, block_q):
            i1 = min(i0 + block_q, L)
            if causal and i1 - 1 < j0:
                continue  # the whole tile lies above the diagonal
            if counter is not None:
                counter.load(lead * (i1 - i0) * (2 * E + Ev + 2), itemsize=item)
                counter.store(lead * (i1 - i0) * E, itemsize=item)
                counter.on_chip((j1 - j0) * 2 * (E + Ev) + (i1 - i0) * (2 * E + Ev + 2)
                                + 2 * (i1 - i0) * (j1 - j0), itemsize=item)
            qi, gi = q[..., i0:i1, :], grad[..., i0:i1, :]
            s = qi @ np.swapaxes(kj, -1, -2)
            s *= scale
            bias = _tile_bias(mask, causal, i0, i1, j0, j1, q.dtype)
            if bias is not None:
                s = s + bias
            p = _exp_shift(s, lam[..., i0:i1, :])  # P_ij = exp(S_ij - λ_i), recomputed
            dp = gi @ np.swapaxes(vj, -1, -2)
            if dropout_p > 0.0:
                keep = tile_mask(seed, i0, j0, p.shape, dropout_p, q.dtype)
                dvj += np.swapaxes(p * keep, -1, -2) @ gi
                dp *= keep
            else:
                dvj += np.swapaxes(p, -1, -2) @ gi
            ds = p * (dp - d[..., i0:i1, :])
            ds *= scale
            dq[..., i0:i1, :] += ds @ kj
            dkj += np.swapaxes(ds, -1, -2) @ qi
        dk[..., j0:j1, :] = dkj
        dv[..., j0:j1, :] = dvj
        if counter is not None:
            counter.store(lead * (j1 - j0) * (E + Ev), itemsize=item)
    return dq, dk, dv


def tiled_forward(q: Array, k: Array, v: Array, scale: float, *, mask: Array | None = None,
                  causal: bool = False, block_q: int = 64,
                  out: Array | None = None) -> tuple[Array, Array]:
    """The two-pass softmax one query block at a time: a (block_q × S) row block of scores,
    its max, its sum, then O_i = P_i V. Exact, O(block_q·S) extra memory; -> (O, λ).
    ``out`` (if given) receives O, as in :func:`flash_forward`."""
    L, S, Ev = q.shape[-2], k.shape[-2], v.shape[-1]
    shape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    out = np.empty(shape + (L, Ev), dtype=q.dtype) if out is None else out
    lse = np.empty(shape + (L,), dtype=q.dtype)
    for i0 in range(0, L, block_q):
        i1 = min(i0 + block_q, L)
        s = q[..., i0:i1, :] @ np.swapaxes(k, -1, -2)
        s *= scale
        bias = _tile_bias(mask, causal, i0, i1, 0, S, q.dtype)
        if bias is not None:
            s = s + bias
        m = s.max(axis=-1, keepdims=True)  # pass 1: the row max ...
        p = _exp_shift(s, m)
        ell = p.sum(axis=-1, keepdims=True)  # ... and the row sum; pass 2: normalise
        out[..., i0:i1, :] = (p / ell) @ v
        lse[..., i0:i1] = (np.where(np.isfinite(m), m, 0.0) + np.log(ell))[..., 0]
    return out, lse
