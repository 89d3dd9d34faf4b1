"""Hand-derived forward/backward kernels on raw NumPy arrays (stage 3).

Each op is a pair: ``<op>_forward`` computes the output and whatever the backward pass
needs; ``<op>_backward`` turns the upstream gradient ``∂L/∂out`` into ``∂L/∂input`` with the
closed-form Jacobian-vector product derived in the chapter ("local x upstream"):

* linear        Y = X Wᵀ + b          dX = dY W,  dW = dYᵀ X,  db = Σ dY
* softmax       p = exp(x - lse(x))   dx = p ⊙ (g - <g, p>)
* log_softmax   ℓ = x - lse(x)        dx = g - p Σ g
* cross_entropy L = -Σ q log p        dx = (p - q) / n_valid       (q = one-hot, smoothed)
* layer_norm    y = x̂ w + b           dx = rstd (dx̂ - mean dx̂ - x̂ mean(dx̂ ⊙ x̂))
* gelu          y = x Φ(x)            dx = g (Φ(x) + x φ(x))
* attention     O = softmax(QKᵀ s) V  dS = P ⊙ (dP - rowsum(dP ⊙ P)), dQ = s dS K, dK = s dSᵀ Q

No op upcasts: float32 in, float32 out. These kernels are wrapped as autograd ``Function``s
in :mod:`spiral.nn.functional`. Chapter: stage 3, "Backpropagation deep dive".
"""

from __future__ import annotations

import math

import numpy as np

from spiral.nn.blocking import WHOLE, batch_blocks, flat_blocks, pick

try:  # scipy's erf is a fast C loop; the fallback is exact but slow (Python per element)
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - exercised only without scipy
    _erf = np.frompyfunc(math.erf, 1, 1)

Array = np.ndarray


def _rowsum(a: Array, axis: int = -1, scale: float = 1.0) -> Array:
    """scale · Σ over ``axis`` with keepdims. Over the last (contiguous) axis it is a GEMV
    against a constant vector: several times faster than ``np.sum`` on short rows (64–128)."""
    axis %= a.ndim
    if axis != a.ndim - 1 or not a.flags.c_contiguous:
        out = a.sum(axis=axis, keepdims=True)
        return out * scale if scale != 1.0 else out
    w = np.full((a.shape[-1], 1), scale, dtype=a.dtype)
    return (a.reshape(-1, a.shape[-1]) @ w).reshape(*a.shape[:-1], 1)  # (N, n) @ (n, 1)


def _erf_array(x: Array) -> Array:
    return np.asarray(_erf(x), dtype=x.dtype)


# ----------------------------------------------------------------------------- linear
def linear_forward(x: Array, weight: Array, bias: Array | None = None) -> Array:
    """(..., in) @ (out, in)ᵀ + (out,) -> (..., out), as ``torch.nn.functional.linear``."""
    y = x.reshape(-1, x.shape[-1]) @ weight.T  # (N, in) @ (in, out): one GEMM, not a batch
    if bias is not None:
        y += bias
    return y.reshape(*x.shape[:-1], weight.shape[0])  # (N, out) -> (..., out)


def linear_backward(
    grad: Array, x: Array, weight: Array, has_bias: bool
) -> tuple[Array, Array, Array | None]:
    """dY (..., out) -> dX (..., in), dW (out, in), db (out,): the transpose pattern."""
    g2 = grad.reshape(-1, grad.shape[-1])  # (..., out) -> (N, out)
    x2 = x.reshape(-1, x.shape[-1])  # (..., in) -> (N, in)
    dx = (g2 @ weight).reshape(x.shape)  # (N, out) @ (out, in) -> (N, in) -> (..., in)
    dw = g2.T @ x2  # (out, N) @ (N, in) -> (out, in): sums over every leading position
    db = g2.sum(axis=0) if has_bias else None
    return dx, dw, db


# ----------------------------------------------------------------------------- softmax
def softmax_forward(x: Array, dim: int = -1) -> Array:
    """Stable softmax along ``dim``: subtract the row maximum before ``exp``."""
    e = x - x.max(axis=dim, keepdims=True)
    np.exp(e, out=e)
    e /= _rowsum(e, dim)
    return e


def softmax_backward(grad: Array, p: Array, dim: int = -1) -> Array:
    """Jacobian-vector product of softmax without forming the Jacobian: p ⊙ (g - <g, p>)."""
    gp = grad * p
    gp -= p * _rowsum(gp, dim)
    return gp


def log_softmax_forward(x: Array, dim: int = -1) -> Array:
    """x - logsumexp(x), computed as (x - m) - log Σ exp(x - m)."""
    shifted = x - x.max(axis=dim, keepdims=True)
    shifted -= np.log(_rowsum(np.exp(shifted), dim))
    return shifted


def log_softmax_backward(grad: Array, logp: Array, dim: int = -1) -> Array:
    """dℓ/dx applied to g: g - softmax(x) Σ g."""
    return grad - np.exp(logp) * _rowsum(grad, dim)


# ----------------------------------------------------------------------------- cross-entropy
def cross_entropy_forward(
    logits: Array,
    target: Array,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> tuple[Array, tuple[Array, Array, Array, float]]:
    """Logits (..., C) and integer targets (...) -> loss, saved state for the backward pass.

    Returns the loss (a 0-d array, or shaped like ``target`` for ``reduction="none"``) and
    ``(p, safe_target, valid, denom)``: probabilities (N, C), targets with ignored ones set to
    0, the validity mask (N,) and the divisor of the reduction.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    n_classes = logits.shape[-1]
    x = logits.reshape(-1, n_classes)  # (..., C) -> (N, C)
    t = np.asarray(target).reshape(-1)  # (...) -> (N,)
    if x.shape[0] != t.shape[0]:
        raise ValueError(f"logits {logits.shape} and target {np.shape(target)} disagree")
    valid = t != ignore_index
    safe_t = np.where(valid, t, 0)
    rows = np.arange(x.shape[0])
    p = x - x.max(axis=1, keepdims=True)  # shifted logits, (N, C)
    np.exp(p, out=p)
    sum_e = _rowsum(p)  # (N, 1)
    p /= sum_e
    # -log p_t = log Σ exp(x - m) - (x_t - m): the max-shift keeps 1e4 logits finite and exact
    xmax = x.max(axis=1)  # (N,)
    log_z = np.log(sum_e[:, 0])  # (N,)
    nll = log_z - (x[rows, safe_t] - xmax)
    if label_smoothing > 0.0:
        # -Σ_c (ε/C) log p_c = log Σ exp(x - m) - mean_c (x_c - m)
        smooth = log_z - (x.mean(axis=1) - xmax)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    nll = np.where(valid, nll, 0.0).astype(logits.dtype, copy=False)
    if reduction == "none":
        return nll.reshape(np.shape(target)), (p, safe_t, valid, 1.0)
    denom = float(valid.sum()) if reduction == "mean" else 1.0
    with np.errstate(invalid="ignore", divide="ignore"):  # all targets ignored -> nan, as torch
        loss = np.asarray(nll.sum() / denom, dtype=logits.dtype)
    return loss, (p, safe_t, valid, denom)


def cross_entropy_backward(
    grad: Array, saved: tuple[Array, Array, Array, float], label_smoothing: float, shape: tuple
) -> Array:
    """The fused gradient (p - q) ⊙ upstream / n_valid, shaped like the logits."""
    p, safe_t, valid, denom = saved
    coef = np.broadcast_to(np.asarray(grad, dtype=p.dtype).reshape(-1), valid.shape)
    coef = np.where(valid, coef / denom if denom else coef * np.nan, 0.0).astype(p.dtype)
    dx = p * coef[:, None]  # (N, C)
    rows = np.arange(p.shape[0])
    dx[rows, safe_t] -= (1.0 - label_smoothing) * coef
    if label_smoothing > 0.0:
        dx -= (label_smoothing / p.shape[1]) * coef[:, None]
    return dx.reshape(shape)


# ----------------------------------------------------------------------------- layer norm
def layer_norm_forward(
    x: Array, n_norm: int, weight: Array | None, bias: Array | None, eps: float = 1e-5
) -> tuple[Array, Array, Array]:
    """Normalize over the last ``n_norm`` axes with the biased variance (as torch).

    Returns (y, x̂, rstd) with rstd = 1/sqrt(var + eps) kept with reduced axes (keepdims).
    """
    xhat, _, rstd = layer_norm_normalize(x, n_norm, eps)
    y = xhat * weight if weight is not None else xhat.copy()
    if bias is not None:
        y += bias
    return y, xhat, rstd


def layer_norm_normalize(x: Array, n_norm: int, eps: float) -> tuple[Array, Array, Array]:
    """x̂ = (x − μ)·rstd over the last ``n_norm`` axes -> (x̂, μ, rstd), μ and rstd keepdims."""
    shape = x.shape
    n = int(np.prod(shape[x.ndim - n_norm:]))
    x2 = x.reshape(*shape[: x.ndim - n_norm], n)  # (..., *normalized) -> (..., n)
    mean = _rowsum(x2, scale=1.0 / n)  # (..., 1)
    xhat = x2 - mean
    var = _rowsum(np.square(xhat), scale=1.0 / n)  # biased: divide by n, not n - 1
    var += eps
    rstd = 1.0 / np.sqrt(var)  # (..., 1)
    xhat *= rstd
    keep = (*rstd.shape[:-1], *([1] * n_norm))  # keepdims over the normalized axes
    return xhat.reshape(shape), mean.reshape(keep), rstd.reshape(keep)


def layer_norm_recompute(x: Array, n_norm: int, mean: Array, rstd: Array) -> Array:
    """x̂ from the input and the saved per-row μ and rstd with :func:`layer_norm_normalize`'s
    own two operations, (x − μ) then ·rstd: bit-identical to the forward pass's x̂."""
    shape = x.shape
    lead = shape[: x.ndim - n_norm]
    x2 = x.reshape(*lead, -1)
    xhat = x2 - mean.reshape(*lead, 1)
    xhat *= rstd.reshape(*lead, 1)
    return xhat.reshape(shape)


def layer_norm_backward(
    grad: Array, xhat: Array, rstd: Array, weight: Array | None, n_norm: int, has_bias: bool
) -> tuple[Array, Array | None, Array | None]:
    """dx = rstd (dx̂ - mean(dx̂) - x̂ mean(dx̂ ⊙ x̂)); dw = Σ g ⊙ x̂; db = Σ g."""
    shape = grad.shape
    lead = tuple(range(grad.ndim - n_norm))
    n = int(np.prod(shape[grad.ndim - n_norm:]))
    flat = (*shape[: grad.ndim - n_norm], n)  # (..., *normalized) -> (..., n)
    dxhat = (grad * weight if weight is not None else grad).reshape(flat)
    xh = xhat.reshape(flat)
    dx = dxhat - _rowsum(dxhat, scale=1.0 / n)
    dx -= xh * _rowsum(dxhat * xh, scale=1.0 / n)
    dx = dx.reshape(shape)
    dx *= rstd
    dw = (grad * xhat).sum(axis=lead) if weight is not None else None
    db = grad.sum(axis=lead) if has_bias else None
    return dx, dw, db


# ----------------------------------------------------------------------------- GELU
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_C = 0.044715
# Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7, about one float32 ulp of 1.0
_AS_P = 0.3275911
_AS_A = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)


def _erf_float32(z: Array, out: Array | None = None) -> Array:
    """erf for float32 arrays: A&S 7.1.26, 1 - poly(t) exp(-z²), t = 1/(1 + p|z|); 4x faster
    than scipy's double-precision loop, exact to float32 roundoff."""
    a = np.abs(z)
    t = a * _AS_P
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * _AS_A[0]
    for coef in _AS_A[1:]:  # Horner
        poly += coef
        poly *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a
    np.subtract(1.0, poly, out=poly)
    return np.copysign(poly, z, out=poly if out is None else out)


def _normal_cdf(x: Array, out: Array | None = None) -> Array:
    """Φ(x) = (1 + erf(x/√2)) / 2, in the input's dtype (into ``out`` if given)."""
    z = np.multiply(x, _INV_SQRT_2, out=out)
    if x.dtype.itemsize <= 4:
        cdf = _erf_float32(z, out=out)
    else:
        cdf = z
        np.copyto(cdf, _erf_array(z))
    cdf += 1.0
    cdf *= 0.5
    return cdf


def gelu_forward(x: Array, approximate: str = "none") -> tuple[Array, Array]:
    """GELU and the array its backward reuses.

    ``"none"``: y = x Φ(x), returns (y, Φ(x)). ``"tanh"``: y = ½ x (1 + tanh u) with
    u = √(2/π)(x + 0.044715 x³), returns (y, tanh u). Keeping Φ or tanh u costs one array and
    saves recomputing the expensive transcendental in the backward pass. On large arrays the
    dozen ufunc passes of :func:`gelu_forward_block` run block by block
    (:func:`spiral.nn.blocking.flat_blocks`), so that their temporaries stay in cache.
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    if x.size <= WHOLE:
        return gelu_forward_block(x, approximate)
    y, aux = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
    xf, yf, af = x.reshape(-1), y.reshape(-1), aux.reshape(-1)
    for b in flat_blocks(xf.size):
        gelu_forward_block(xf[b], approximate, yf[b], af[b])
    return y, aux


def gelu_forward_block(x: Array, approximate: str, y: Array | None = None,
                       aux: Array | None = None) -> tuple[Array, Array]:
    """(y, aux) of :func:`gelu_forward` for one block, into ``y`` and ``aux`` if given."""
    aux = gelu_aux_block(x, approximate, aux)
    if approximate == "none":
        return np.multiply(x, aux, out=y), aux
    y = np.add(aux, 1.0, out=y)
    y *= x
    y *= 0.5
    return y, aux


def gelu_aux_block(x: Array, approximate: str, aux: Array | None = None) -> Array:
    """The array GELU's backward reads: Φ(x) (exact) or tanh u (tanh form), into ``aux``."""
    if approximate == "none":
        return _normal_cdf(x, out=aux)
    aux = np.multiply(x, x, out=aux)  # u = √(2/π) x (1 + c x²): x*x, not x**3 (pow is slow)
    aux *= _GELU_C
    aux += 1.0
    aux *= x
    aux *= _SQRT_2_OVER_PI
    np.tanh(aux, out=aux)
    return aux


def gelu_backward_recompute(grad: Array, x: Array, approximate: str = "none") -> Array:
    """:func:`gelu_backward` without a saved Φ: each block recomputes its Φ (or tanh u) with
    the forward pass's own blocks and ops, then applies the same formula (stage 12's lean
    policy: bit-identical gradients, one block of scratch instead of a saved N·h array)."""
    if x.size <= WHOLE:
        return gelu_backward_block(grad, x, gelu_aux_block(x, approximate), approximate)
    d = np.empty(x.shape, x.dtype)
    gf, xf, df = grad.reshape(-1), x.reshape(-1), d.reshape(-1)
    for b in flat_blocks(xf.size):
        xb = xf[b]
        gelu_backward_block(gf[b], xb, gelu_aux_block(xb, approximate), approximate, df[b])
    return d


def gelu_backward(grad: Array, x: Array, aux: Array, approximate: str = "none") -> Array:
    """Upstream ⊙ GELU'(x) (:func:`gelu_backward_block` is the formula), by blocks when large."""
    if x.size <= WHOLE:
        return gelu_backward_block(grad, x, aux, approximate)
    d = np.empty(x.shape, x.dtype)
    gf, xf, af, df = grad.reshape(-1), x.reshape(-1), aux.reshape(-1), d.reshape(-1)
    for b in flat_blocks(xf.size):
        gelu_backward_block(gf[b], xf[b], af[b], approximate, df[b])
    return d


def gelu_backward_block(grad: Array, x: Array, aux: Array, approximate: str,
                        d: Array | None = None) -> Array:
    """d = upstream ⊙ GELU'(x): Φ(x) + x φ(x) (exact) or, with t = tanh u,
    ½(1 + t) + ½ x (1 − t²) √(2/π)(1 + 3c x²) (tanh form); into ``d`` if given."""
    d = np.multiply(x, x, out=d)
    if approximate == "none":  # φ(x) x = x exp(-x²/2) / √(2π)
        d *= -0.5
        np.exp(d, out=d)
        d *= x
        d *= _INV_SQRT_2PI
        d += aux
        d *= grad
        return d
    d *= 3.0 * _GELU_C
    d += 1.0
    d *= 0.5 * _SQRT_2_OVER_PI
    d *= x  # ½ √(2/π) x (1 + 3c x²)
    sech2 = aux * aux
    np.subtract(1.0, sech2, out=sech2)  # 1 − t²
    d *= sech2
    sech2[...] = aux
    sech2 += 1.0
    sech2 *= 0.5  # ½ (1 + t)
    d += sech2
    d *= grad
    return d


# ----------------------------------------------------------------------------- attention
def attention_forward(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None,
    scale: float,
    dropout_p: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[Array, Array, Array | None]:
    """softmax(Q Kᵀ · scale + mask) V for q (..., L, E), k (..., S, E), v (..., S, Ev).

    ``mask`` is additive (0 / -inf, broadcastable to (..., L, S)). Returns the output
    (..., L, Ev), the probabilities P (..., L, S) kept for the backward pass, and the dropout
    keep-mask scaled by 1/(1-p) (or None). The heads run in blocks of a few
    (:func:`spiral.nn.blocking.batch_blocks`) so that each block's scores stay in cache
    through scaling, masking, softmax and dropout (:func:`attention_forward_block`); P is
    written to main memory once.
    """
    if dropout_p > 0.0 and rng is None:
        raise ValueError("dropout_p > 0 needs an rng (np.random.Generator)")
    L, S, Ev = q.shape[-2], k.shape[-2], v.shape[-1]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2],
                               mask.shape[:-2] if mask is not None else ())
    blocks = batch_blocks(lead, L * S, ATTENTION_BLOCK)
    if blocks == [()]:  # small enough to stay in cache whole
        return attention_forward_block(q, k, v, mask, scale, dropout_p, rng)
    p_dtype = np.result_type(q.dtype, k.dtype)
    p = np.empty((*lead, L, S), p_dtype)
    out = np.empty((*lead, L, Ev), np.result_type(p_dtype, v.dtype))
    keep = np.empty(p.shape, p_dtype) if dropout_p > 0.0 else None
    n = len(lead)
    for i in blocks:  # in order, so the dropout draws are those of one whole-array draw
        o, pb, kb = attention_forward_block(pick(q, i, n), pick(k, i, n), pick(v, i, n),
                                            pick(mask, i, n), scale, dropout_p, rng)
        out[i], p[i] = o, pb
        if keep is not None:
            keep[i] = kb
    return out, p, keep


ATTENTION_BLOCK = 1 << 16
"""Scores per block of heads in :func:`attention_forward` (256 kB in float32)."""


def attention_forward_block(
    q: Array, k: Array, v: Array, mask: Array | None, scale: float, dropout_p: float,
    rng: np.random.Generator | None,
) -> tuple[Array, Array, Array | None]:
    """One block of heads of :func:`attention_forward`: (output, P, keep-mask or None)."""
    s = q @ np.swapaxes(k, -1, -2)  # (..., L, E) @ (..., E, S) -> (..., L, S)
    s *= scale
    if mask is not None:
        s += mask
    p = softmax_forward(s, -1)  # reuses s's buffer size once; P is what backward needs
    keep = None
    if dropout_p > 0.0:
        assert rng is not None
        keep = (rng.random(p.shape) >= dropout_p).astype(p.dtype) / (1.0 - dropout_p)
        out = (p * keep) @ v
    else:
        out = p @ v  # (..., L, S) @ (..., S, Ev) -> (..., L, Ev)
    return out, p, keep


def attention_backward(
    grad: Array, q: Array, k: Array, v: Array, p: Array, keep: Array | None, scale: float
) -> tuple[Array, Array, Array]:
    """dO (..., L, Ev) -> dQ, dK, dV, reusing the saved probabilities P."""
    pd = p * keep if keep is not None else p
    dv = np.swapaxes(pd, -1, -2) @ grad  # (..., S, L) @ (..., L, Ev) -> (..., S, Ev)
    dp = grad @ np.swapaxes(v, -1, -2)  # (..., L, Ev) @ (..., Ev, S) -> (..., L, S)
    if keep is not None:
        dp *= keep
    ds = softmax_backward(dp, p, -1)  # through the softmax: P ⊙ (dP - rowsum(dP ⊙ P))
    ds *= scale  # through the 1/√d scaling
    dq = ds @ k  # (..., L, S) @ (..., S, E) -> (..., L, E)
    dk = np.swapaxes(ds, -1, -2) @ q  # (..., S, L) @ (..., L, E) -> (..., S, E)
    return _unbroadcast(dq, q.shape), _unbroadcast(dk, k.shape), _unbroadcast(dv, v.shape)


def _unbroadcast(g: Array, shape: tuple[int, ...]) -> Array:
    """Sum a broadcast gradient back to ``shape`` (leading and size-1 axes)."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def causal_mask(n_query: int, n_key: int, dtype: np.dtype | type = np.float32) -> Array:
    """Additive (L, S) mask: 0 where key j <= query i (torch's tril convention), -inf above."""
    m = np.zeros((n_query, n_key), dtype=dtype)
    m[np.triu_indices(n_query, k=1, m=n_key)] = -np.inf
    return m
