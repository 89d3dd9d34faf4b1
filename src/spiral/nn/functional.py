"""Fused ops with hand-derived backward passes: the fast path every model uses (stage 3).

Each public function here has the name, arguments and defaults of its
``torch.nn.functional`` namesake and runs as ONE node of the autograd graph: its forward
and backward are the NumPy kernels of :mod:`spiral.nn.kernels`, wrapped as
:class:`spiral.autograd.function.Function`. The ``composed_*`` family below builds the
same ops from stage-2 primitives (exp, sum, matmul, ...), many graph nodes each; the tests
hold fused == composed == torch, forward and backward, and ``benchmarks/bench_fused_ops.py``
measures what fusing buys. Key identity: softmax + cross-entropy backward is p − y.

Deviation from torch, on purpose: ``cross_entropy`` takes the class axis LAST, logits
(N, C) or (B, T, C), as a language model produces them (torch wants (N, C, d1, ...)).
Chapter: stage 3, "Backpropagation deep dive".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from spiral.autograd.function import Function
from spiral.autograd.tensor import Tensor
from spiral.nn import kernels as K

__all__ = [
    "linear", "softmax", "log_softmax", "cross_entropy", "layer_norm", "gelu",
    "scaled_dot_product_attention", "residual",
    "composed_linear", "composed_softmax", "composed_log_softmax", "composed_cross_entropy",
    "composed_layer_norm", "composed_gelu", "composed_scaled_dot_product_attention",
]


# ============================================================================ fused ops
class LinearFn(Function):
    @staticmethod
    def forward(ctx: Any, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None
                ) -> np.ndarray:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return K.linear_forward(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        x, weight = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:  # a frozen weight (stage 15): no dW
            g2 = grad.reshape(-1, grad.shape[-1])
            dx = (g2 @ weight).reshape(x.shape)
            return (dx, None, g2.sum(axis=0) if ctx.needs_input_grad[2] else None
                    ) if ctx.has_bias else (dx, None)
        dx, dw, db = K.linear_backward(grad, x, weight, ctx.has_bias)
        return (dx, dw, db) if ctx.has_bias else (dx, dw)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x Wᵀ + b; x (..., in), weight (out, in), bias (out,) -> (..., out).

    >>> linear(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 3)))).shape
    (2, 4)
    """
    if bias is None:
        return LinearFn.apply(input, weight)
    return LinearFn.apply(input, weight, bias)


class SoftmaxFn(Function):
    @staticmethod
    def forward(ctx: Any, x: np.ndarray, dim: int) -> np.ndarray:
        p = K.softmax_forward(x, dim)
        ctx.save_for_backward(p)
        ctx.dim = dim
        return p

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        (p,) = ctx.saved_tensors
        return K.softmax_backward(grad, p, ctx.dim), None


def softmax(input: Tensor, dim: int) -> Tensor:
    """exp(x - max) / Σ exp(x - max) along ``dim`` (same shape as the input).

    >>> softmax(Tensor(np.zeros(4)), dim=-1).numpy().tolist()
    [0.25, 0.25, 0.25, 0.25]
    """
    return SoftmaxFn.apply(input, dim)


class LogSoftmaxFn(Function):
    @staticmethod
    def forward(ctx: Any, x: np.ndarray, dim: int) -> np.ndarray:
        logp = K.log_softmax_forward(x, dim)
        ctx.save_for_backward(logp)
        ctx.dim = dim
        return logp

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        (logp,) = ctx.saved_tensors
        return K.log_softmax_backward(grad, logp, ctx.dim), None


def log_softmax(input: Tensor, dim: int) -> Tensor:
    """(x - m) - log Σ exp(x - m) along ``dim``: finite for every finite input."""
    return LogSoftmaxFn.apply(input, dim)


class CrossEntropyFn(Function):
    @staticmethod
    def forward(ctx: Any, logits: np.ndarray, target: np.ndarray, ignore_index: int,
                reduction: str, label_smoothing: float) -> np.ndarray:
        loss, saved = K.cross_entropy_forward(logits, target, ignore_index, reduction,
                                              label_smoothing)
        ctx.saved = saved  # (p, targets, valid mask, divisor): p is the only big array
        ctx.shape, ctx.smoothing = logits.shape, label_smoothing
        return loss

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        dx = K.cross_entropy_backward(grad, ctx.saved, ctx.smoothing, ctx.shape)
        return dx, None, None, None, None


def cross_entropy(input: Tensor, target: Tensor | np.ndarray, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Mean (or sum, or per-position) −log softmax(logits)[target]; logits (..., C), target (...).

    The backward pass is the fused (p − y) / n_valid; positions whose target equals
    ``ignore_index`` contribute neither loss nor gradient.

    >>> round(cross_entropy(Tensor(np.zeros((1, 4))), np.array([2])).item(), 4)
    1.3863
    """
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    check_targets(t, input.shape[-1], ignore_index)
    return CrossEntropyFn.apply(input, t, ignore_index, reduction, label_smoothing)


def check_targets(target: np.ndarray, n_classes: int, ignore_index: int) -> None:
    """PyTorch's rule: every target is a class id in [0, C) or equals ``ignore_index``.

    Without the check a negative id such as -1 (a common padding value) would silently
    index class C - 1, in the loss and in the gradient.
    """
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class ids, got dtype {t.dtype}")
    bad = (t != ignore_index) & ((t < 0) | (t >= n_classes))
    if bad.any():
        first = int(t[bad].flat[0])
        hint = f"; to skip positions marked {first}, pass ignore_index={first}" if first < 0 else ""
        raise IndexError(f"cross_entropy: target {first} is out of bounds for {n_classes} "
                         f"classes (a target must be in [0, {n_classes}) or equal "
                         f"ignore_index={ignore_index}{hint})")


class LayerNormFn(Function):
    @staticmethod
    def forward(ctx: Any, x: np.ndarray, n_norm: int, eps: float,
                weight: np.ndarray | None = None, bias: np.ndarray | None = None) -> np.ndarray:
        y, xhat, rstd = K.layer_norm_forward(x, n_norm, weight, bias, eps)
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.n_norm, ctx.n_inputs = n_norm, 3 + (weight is not None) + (bias is not None)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        xhat, rstd, weight = ctx.saved_tensors
        return layer_norm_input_grads(ctx, grad, xhat, rstd, weight)


def layer_norm_input_grads(ctx: Any, grad: np.ndarray, xhat: np.ndarray, rstd: np.ndarray,
                           weight: np.ndarray | None) -> tuple[Any, ...]:
    """A layer-norm node's gradients in its ``apply`` order (x, n_norm, eps[, w][, b])."""
    dx, dw, db = K.layer_norm_backward(grad, xhat, rstd, weight, ctx.n_norm, ctx.has_bias)
    out: tuple[Any, ...] = (dx, None, None)
    if weight is not None:
        out += (dw,)
    if ctx.has_bias:
        out += (db,)
    return out[: ctx.n_inputs]


def layer_norm(input: Tensor, normalized_shape: int | tuple[int, ...] | list[int],
               weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """(x − mean) / sqrt(biased var + eps) · weight + bias over the trailing normalized_shape."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(input.shape[-len(shape):]) != shape:
        raise ValueError(f"normalized_shape {shape} does not end input shape {input.shape}")
    if weight is None and bias is not None:
        weight = Tensor(np.ones(shape, dtype=input.dtype))  # keep positional slots fixed
    args = [a for a in (weight, bias) if a is not None]
    return LayerNormFn.apply(input, len(shape), eps, *args)


class GELUFn(Function):
    @staticmethod
    def forward(ctx: Any, x: np.ndarray, approximate: str) -> np.ndarray:
        y, aux = K.gelu_forward(x, approximate)
        ctx.save_for_backward(x, aux)  # aux = Φ(x) or tanh(u): not recomputed in backward
        ctx.approximate = approximate
        return y

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        x, aux = ctx.saved_tensors
        return K.gelu_backward(grad, x, aux, ctx.approximate), None


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """x Φ(x) (``"none"``, exact) or its tanh approximation (``"tanh"``, as GPT-2)."""
    return GELUFn.apply(input, approximate)


class AttentionFn(Function):
    @staticmethod
    def forward(ctx: Any, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None,
                scale: float, dropout_p: float, rng: np.random.Generator | None) -> np.ndarray:
        out, p, keep = K.attention_forward(q, k, v, mask, scale, dropout_p, rng)
        ctx.save_for_backward(q, k, v, p)  # P is reused by the backward pass, not recomputed
        ctx.keep, ctx.scale = keep, scale
        return out

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        q, k, v, p = ctx.saved_tensors
        dq, dk, dv = K.attention_backward(grad, q, k, v, p, ctx.keep, ctx.scale)
        return dq, dk, dv, None, None, None, None


def _additive_mask(attn_mask: Any, is_causal: bool, n_query: int, n_key: int,
                   dtype: Any) -> np.ndarray | None:
    """Boolean masks (True = may attend) and float masks as one additive float mask."""
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal=True, not both (as torch)")
    if is_causal:
        return K.causal_mask(n_query, n_key, dtype)
    if attn_mask is None:
        return None
    m = attn_mask.data if isinstance(attn_mask, Tensor) else np.asarray(attn_mask)
    if m.dtype == np.bool_:
        return np.where(m, 0.0, -np.inf).astype(dtype)
    return m.astype(dtype, copy=False)


def scaled_dot_product_attention(
    query: Tensor, key: Tensor, value: Tensor, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, *, rng: np.random.Generator | None = None
) -> Tensor:
    """softmax(Q Kᵀ · scale + mask) V; q (..., L, E), k (..., S, E), v (..., S, Ev) -> (..., L, Ev).

    ``scale`` defaults to 1/√E. ``dropout_p > 0`` drops attention weights and needs ``rng``
    (our one extra keyword: randomness is always passed in, never global).
    """
    n_query, n_key = query.shape[-2], key.shape[-2]
    mask = _additive_mask(attn_mask, is_causal, n_query, n_key, query.dtype)
    s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    return AttentionFn.apply(query, key, value, mask, s, dropout_p, rng)


def residual(x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
    """x + sublayer(x): the gradient reaching x is upstream + Jᵀ upstream (the identity path)."""
    return x + sublayer(x)


# ========================================================= composed references (stage 2)
def composed_linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    y = input @ weight.T
    return y + bias if bias is not None else y


def composed_softmax(input: Tensor, dim: int) -> Tensor:
    e = (input - input.data.max(axis=dim, keepdims=True)).exp()  # the max is a constant shift
    return e / e.sum(dim, keepdim=True)


def composed_log_softmax(input: Tensor, dim: int) -> Tensor:
    shifted = input - input.data.max(axis=dim, keepdims=True)
    return shifted - shifted.exp().sum(dim, keepdim=True).log()


def composed_cross_entropy(input: Tensor, target: Tensor | np.ndarray, ignore_index: int = -100,
                           reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    t = (target.data if isinstance(target, Tensor) else np.asarray(target)).reshape(-1)
    n_classes = input.shape[-1]
    check_targets(t, n_classes, ignore_index)
    logp = composed_log_softmax(input.reshape(-1, n_classes), -1)  # (..., C) -> (N, C)
    valid = t != ignore_index
    picked = logp.gather(1, np.where(valid, t, 0)[:, None]).reshape(-1)  # (N,)
    nll = -picked
    if label_smoothing > 0:
        nll = (1 - label_smoothing) * nll - label_smoothing * logp.mean(-1)
    nll = nll * valid.astype(input.dtype)
    if reduction == "none":
        return nll.reshape(*np.shape(target))
    total = nll.sum()
    return total / float(valid.sum()) if reduction == "mean" else total


def composed_layer_norm(input: Tensor, normalized_shape: int | tuple[int, ...] | list[int],
                        weight: Tensor | None = None, bias: Tensor | None = None,
                        eps: float = 1e-5) -> Tensor:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    axes = tuple(range(input.ndim - len(shape), input.ndim))
    centred = input - input.mean(axes, keepdim=True)
    var = (centred * centred).mean(axes, keepdim=True)  # biased, as torch
    y = centred / (var + eps).sqrt()
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


def composed_gelu(input: Tensor, approximate: str = "tanh") -> Tensor:
    """Only the tanh form composes: the engine has no erf primitive (the exact form is fused)."""
    if approximate != "tanh":
        raise ValueError("composed_gelu: only approximate='tanh' composes from stage-2 primitives "
                         "(the exact form needs erf, which the engine does not have)")
    inner = math.sqrt(2.0 / math.pi) * (input + 0.044715 * (input * input * input))
    return 0.5 * input * (1.0 + inner.tanh())


def composed_scaled_dot_product_attention(
    query: Tensor, key: Tensor, value: Tensor, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None
) -> Tensor:
    if dropout_p:
        raise ValueError("composed attention is the dropout-free reference; use dropout_p=0")
    mask = _additive_mask(attn_mask, is_causal, query.shape[-2], key.shape[-2], query.dtype)
    s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query @ key.transpose(-2, -1)) * s  # (..., L, E) @ (..., E, S) -> (..., L, S)
    if mask is not None:
        scores = scores + mask
    return composed_softmax(scores, -1) @ value  # (..., L, S) @ (..., S, Ev) -> (..., L, Ev)
