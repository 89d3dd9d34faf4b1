"""Normalization layers: BatchNorm1d, LayerNorm and RMSNorm, each one fused autograd node.

All three standardize and then rescale, y = x̂ · γ + β; they differ in which axis the
statistics come from and which statistics:

    BatchNorm  (Ioffe & Szegedy, 2015)  x̂ = (x − μ_B) / √(σ²_B + ε)   over the batch, per feature
    LayerNorm  (Ba et al., 2016)        x̂ = (x − μ) / √(σ² + ε)       over the features, per row
    RMSNorm    (Zhang & Sennrich, 2019) x̂ = x / √(mean(x²) + ε)       over the features, no centring

σ² is the *biased* variance (divide by n): that is what the gradient formula below assumes
and what torch computes. With g = ∂L/∂x̂ over the n normalized values, the backward pass is

    BatchNorm, LayerNorm:  ∂L/∂x = (1/σ̂) (g − mean(g) − x̂ · mean(g ⊙ x̂))
    RMSNorm:               ∂L/∂x = (1/r) (g − x̂ · mean(g ⊙ x̂))

— the centring term disappears with the centring. BatchNorm keeps running estimates of the
mean and the *unbiased* variance (torch's convention) for evaluation, where it becomes a
fixed affine map. ``LayerNorm`` reuses stage 3's fused ``functional.layer_norm``.
Chapter: stage 6 (training stability), "BatchNorm forward and backward".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from spiral.autograd import Function, Tensor
from spiral.nn import functional as F
from spiral.nn.module import Module, Parameter

__all__ = ["BatchNorm1d", "LayerNorm", "RMSNorm", "batch_norm", "rms_norm", "composed_batch_norm",
           "composed_rms_norm"]


def _stat_axes(ndim: int) -> tuple[int, ...]:
    """Axes BatchNorm1d averages over: (N, C) -> (0,), (N, C, L) -> (0, 2)."""
    if ndim not in (2, 3):
        raise ValueError(f"expected 2D or 3D input (got {ndim}D input)")
    return (0,) if ndim == 2 else (0, 2)


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """(C,) -> (1, C) or (1, C, 1) so it broadcasts against (N, C[, L])."""
    return v.reshape((1, -1) if ndim == 2 else (1, -1, 1))


class BatchNormFn(Function):
    """Fused batch norm. ``mean``/``var`` are None in training (use batch statistics)."""

    @staticmethod
    def forward(ctx: Any, x: np.ndarray, mean: np.ndarray | None, var: np.ndarray | None,
                eps: float, weight: np.ndarray | None = None,
                bias: np.ndarray | None = None) -> np.ndarray:
        axes = _stat_axes(x.ndim)
        batch_stats = mean is None
        if batch_stats:
            mu = x.mean(axis=axes, keepdims=True)  # (1, C[, 1])
            xc = x - mu
            v = np.mean(xc * xc, axis=axes, keepdims=True)  # biased, as the derivation needs
        else:
            assert mean is not None and var is not None
            xc = x - _per_channel(mean, x.ndim).astype(x.dtype)
            v = _per_channel(var, x.ndim).astype(x.dtype)
        rstd = (1.0 / np.sqrt(v + eps)).astype(x.dtype)
        xhat = xc * rstd
        y = xhat * _per_channel(weight, x.ndim) if weight is not None else xhat.copy()
        if bias is not None:
            y += _per_channel(bias, x.ndim)
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.batch_stats, ctx.n_inputs, ctx.has_bias = batch_stats, 4 + (weight is not None) \
            + (bias is not None), bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        xhat, rstd, weight = ctx.saved_tensors
        axes = _stat_axes(grad.ndim)
        g = grad * _per_channel(weight, grad.ndim) if weight is not None else grad  # ∂L/∂x̂
        if ctx.batch_stats:  # μ and σ depend on every example: the two correction terms
            dx = g - g.mean(axis=axes, keepdims=True)
            dx -= xhat * np.mean(g * xhat, axis=axes, keepdims=True)
            dx *= rstd
        else:  # fixed statistics: a per-channel affine map
            dx = g * rstd
        dw = (grad * xhat).sum(axis=axes) if weight is not None else None
        db = grad.sum(axis=axes) if ctx.has_bias else None
        out: tuple[Any, ...] = (dx, None, None, None)
        if weight is not None:
            out += (dw,)
        if ctx.has_bias:
            out += (db,)
        return out[: ctx.n_inputs]


def batch_norm(input: Tensor, running_mean: np.ndarray | None, running_var: np.ndarray | None,
               weight: Tensor | None = None, bias: Tensor | None = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """torch.nn.functional.batch_norm: (N, C) or (N, C, L) normalized per channel C.

    In training, batch statistics normalize and the running buffers (if given) are updated
    in place: r ← (1 − momentum) r + momentum · stat, with the unbiased batch variance.
    Otherwise the running statistics normalize.
    """
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm in eval mode needs running_mean and running_var")
    if weight is None and bias is not None:
        weight = Tensor(np.ones(input.shape[1], dtype=input.dtype))
    args = [a for a in (weight, bias) if a is not None]
    if not training:
        return BatchNormFn.apply(input, running_mean, running_var, eps, *args)
    n = input.numel() // input.shape[1]  # values per channel
    if n <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got "
                         f"input size {tuple(input.shape)}")
    # the running buffers see the batch statistics in float64 (an O(N·C) pass, cheap)
    axes = _stat_axes(input.ndim)
    out = BatchNormFn.apply(input, None, None, eps, *args)
    if running_mean is not None and running_var is not None:
        x = input.data
        mu = x.mean(axis=axes, dtype=np.float64)
        var_unbiased = x.var(axis=axes, dtype=np.float64) * n / (n - 1)
        running_mean *= 1.0 - momentum
        running_mean += momentum * mu.astype(running_mean.dtype)
        running_var *= 1.0 - momentum
        running_var += momentum * var_unbiased.astype(running_var.dtype)
    return out


class BatchNorm1d(Module):
    """Batch normalization over (N, C) or (N, C, L) with running statistics, as torch.

    ``momentum=None`` uses a cumulative average (weight 1/num_batches_tracked).

    >>> bn = BatchNorm1d(3)
    >>> bn(Tensor(np.arange(12.0).reshape(4, 3))).shape
    (4, 3)
    """

    running_mean: Any  # (C,) buffers, or None without track_running_stats
    running_var: Any
    num_batches_tracked: Any  # 0-d int64

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=dtype))
            self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in (2, 3) or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm1d({self.num_features}) expects (N, {self.num_features})"
                             f" or (N, {self.num_features}, L), got {tuple(x.shape)}")
        use_batch = self.training or not self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        buffers_updated = self.training and self.track_running_stats
        return batch_norm(
            x, self.running_mean if (buffers_updated or not use_batch) else None,
            self.running_var if (buffers_updated or not use_batch) else None,
            self.weight, self.bias, use_batch, momentum, self.eps,
        )

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


@contextmanager
def running_stats_frozen(model: Module) -> Iterator[Module]:
    """Train-mode BatchNorm forwards inside the block normalize with batch statistics but
    leave every running average and ``num_batches_tracked`` untouched.

    A probe that runs held-out data through a model in training mode must not train the
    model's evaluation statistics on that data. Inside the block each BatchNorm has
    ``track_running_stats = False`` (torch's semantics: batch statistics, buffers not
    updated), so use it for train-mode forwards only.
    """
    norms = [m for m in model.modules() if isinstance(m, BatchNorm1d)]
    tracked = [m.track_running_stats for m in norms]
    try:
        for m in norms:
            m.track_running_stats = False
        yield model
    finally:
        for m, t in zip(norms, tracked):
            m.track_running_stats = t


class LayerNorm(Module):
    """Layer normalization over the trailing ``normalized_shape`` (stage 3's fused kernel).

    >>> LayerNorm(4)(Tensor(np.ones((2, 4)))).shape
    (2, 4)
    """

    def __init__(self, normalized_shape: int | tuple[int, ...] | list[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, *,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) \
            else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.elementwise_affine = elementwise_affine
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None
        if elementwise_affine:
            self.weight = Parameter(np.ones(shape, dtype=dtype))
            if bias:
                self.bias = Parameter(np.zeros(shape, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, " \
               f"elementwise_affine={self.elementwise_affine}"


class RMSNormFn(Function):
    @staticmethod
    def forward(ctx: Any, x: np.ndarray, n_norm: int, eps: float,
                weight: np.ndarray | None = None) -> np.ndarray:
        axes = tuple(range(x.ndim - n_norm, x.ndim))
        rrms = (1.0 / np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + eps)).astype(x.dtype)
        xhat = x * rrms  # (..., *normalized_shape)
        ctx.save_for_backward(xhat, rrms, weight)
        ctx.n_norm = n_norm
        return xhat * weight if weight is not None else xhat

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        xhat, rrms, weight = ctx.saved_tensors
        return rms_norm_backward(grad, xhat, rrms, weight, ctx.n_norm)


def rms_norm_backward(grad: np.ndarray, xhat: np.ndarray, rrms: np.ndarray,
                      weight: np.ndarray | None, n_norm: int) -> tuple[Any, ...]:
    """dx = (g − x̂ mean(g ⊙ x̂)) / r with g = ∂L/∂x̂; dw = Σ grad ⊙ x̂ -> (dx, None, None[, dw])."""
    axes = tuple(range(grad.ndim - n_norm, grad.ndim))
    g = grad * weight if weight is not None else grad  # ∂L/∂x̂
    dx = (g - xhat * np.mean(g * xhat, axis=axes, keepdims=True)) * rrms
    if weight is None:
        return dx, None, None
    dw = (grad * xhat).sum(axis=tuple(range(grad.ndim - n_norm)))
    return dx, None, None, dw


def rms_norm(input: Tensor, normalized_shape: int | tuple[int, ...] | list[int],
             weight: Tensor | None = None, eps: float | None = None) -> Tensor:
    """x / √(mean(x²) + eps) · weight over the trailing normalized_shape (torch.nn.functional).

    ``eps=None`` uses the machine epsilon of the input's dtype, as torch does.
    """
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(input.shape[-len(shape):]) != shape:
        raise ValueError(f"normalized_shape {shape} does not end input shape {input.shape}")
    e = float(np.finfo(input.dtype).eps) if eps is None else eps
    if weight is None:
        return RMSNormFn.apply(input, len(shape), e)
    return RMSNormFn.apply(input, len(shape), e, weight)


class RMSNorm(Module):
    """Root-mean-square normalization (no centring, no bias), as ``torch.nn.RMSNorm``.

    >>> RMSNorm(4)(Tensor(np.ones((2, 4)))).shape
    (2, 4)
    """

    def __init__(self, normalized_shape: int | tuple[int, ...] | list[int],
                 eps: float | None = None, elementwise_affine: bool = True, *,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) \
            else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.elementwise_affine = elementwise_affine
        self.weight: Parameter | None = None
        if elementwise_affine:
            self.weight = Parameter(np.ones(shape, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, " \
               f"elementwise_affine={self.elementwise_affine}"


# ------------------------------------------------------------ composed-primitive references
def composed_batch_norm(input: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
                        eps: float = 1e-5) -> Tensor:
    """Training-mode batch norm from Tensor primitives (autograd derives the backward).

    The fused ``BatchNormFn`` is tested equal to this, forward and backward.
    """
    axes = _stat_axes(input.ndim)
    centred = input - input.mean(axes, keepdim=True)
    var = (centred * centred).mean(axes, keepdim=True)  # biased
    y = centred / (var + eps).sqrt()
    shape = (1, -1) if input.ndim == 2 else (1, -1, 1)
    if weight is not None:
        y = y * weight.reshape(shape)
    return y + bias.reshape(shape) if bias is not None else y


def composed_rms_norm(input: Tensor, normalized_shape: int | tuple[int, ...] | list[int],
                      weight: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """RMSNorm from Tensor primitives, the reference for the fused ``RMSNormFn``."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    axes = tuple(range(input.ndim - len(shape), input.ndim))
    y = input / ((input * input).mean(axes, keepdim=True) + eps).sqrt()
    return y * weight if weight is not None else y
