"""Elementwise functions of one tensor and their derivatives (exp, log, tanh, σ, ReLU, ...).

For y = f(x) applied elementwise the Jacobian is diagonal, so the backward is a product:
x̄ = ȳ ⊙ f′(x), often cheaper from the saved output (eˣ, tanh, σ). Chapter: stage 2.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any, cast

from spiral.autograd.engine import (
    _FLOAT_DTYPES,
    ArrayLike,
    Scalar,
    TensorBase,
    _make,
    _scalar,
    xp,
)

if TYPE_CHECKING:
    from spiral.autograd.tensor import Tensor


class ElementwiseOps(TensorBase):
    """Elementwise functions, clamping, masking and dtype casts."""

    __slots__ = ()

    def exp(self) -> Tensor:
        """eˣ elementwise; backward: x̄ = ȳ · eˣ (reuses the output)."""
        out = xp.exp(self.data)

        def _exp_backward(g: Any) -> tuple[Any, ...]:
            return (g * out,)

        return _make(out, (self,), _exp_backward, "ExpBackward")

    def log(self) -> Tensor:
        """Natural log elementwise; backward: x̄ = ȳ / x."""
        a = self.data

        def _log_backward(g: Any) -> tuple[Any, ...]:
            return (g / a,)

        return _make(xp.log(a), (self,), _log_backward, "LogBackward")

    def tanh(self) -> Tensor:
        """tanh elementwise; backward: x̄ = ȳ · (1 − tanh²x) (reuses the output)."""
        out = xp.tanh(self.data)

        def _tanh_backward(g: Any) -> tuple[Any, ...]:
            return (g * (1 - out * out),)

        return _make(out, (self,), _tanh_backward, "TanhBackward")

    def sigmoid(self) -> Tensor:
        """σ(x) = 1 / (1 + e⁻ˣ), computed without overflow; backward: x̄ = ȳ · σ(1 − σ)."""
        a = self.data
        e = xp.exp(-xp.abs(a))  # never overflows
        out = xp.where(a >= 0, 1 / (1 + e), e / (1 + e))

        def _sigmoid_backward(g: Any) -> tuple[Any, ...]:
            return (g * out * (1 - out),)

        return _make(out, (self,), _sigmoid_backward, "SigmoidBackward")

    def relu(self) -> Tensor:
        """max(x, 0); backward: x̄ = ȳ · [x > 0] (0 at x = 0, as torch)."""
        a = self.data

        def _relu_backward(g: Any) -> tuple[Any, ...]:
            return (g * (a > 0),)

        return _make(xp.maximum(a, 0), (self,), _relu_backward, "ReluBackward")

    def sqrt(self) -> Tensor:
        """√x; backward: x̄ = ȳ / (2√x)."""
        out = xp.sqrt(self.data)

        def _sqrt_backward(g: Any) -> tuple[Any, ...]:
            return (g * 0.5 / out,)

        return _make(out, (self,), _sqrt_backward, "SqrtBackward")

    def abs(self) -> Tensor:
        """|x|; backward: x̄ = ȳ · sign(x) (0 at x = 0, as torch)."""
        a = self.data

        def _abs_backward(g: Any) -> tuple[Any, ...]:
            return (g * xp.sign(a),)

        return _make(xp.abs(a), (self,), _abs_backward, "AbsBackward")

    def sin(self) -> Tensor:
        """sin x; backward: x̄ = ȳ · cos x."""
        a = self.data

        def _sin_backward(g: Any) -> tuple[Any, ...]:
            return (g * xp.cos(a),)

        return _make(xp.sin(a), (self,), _sin_backward, "SinBackward")

    def cos(self) -> Tensor:
        """cos x; backward: x̄ = −ȳ · sin x."""
        a = self.data

        def _cos_backward(g: Any) -> tuple[Any, ...]:
            return (-g * xp.sin(a),)

        return _make(xp.cos(a), (self,), _cos_backward, "CosBackward")

    def clamp(self, min: Scalar | None = None, max: Scalar | None = None) -> Tensor:
        """Clip to [min, max]; the gradient passes where min <= x <= max (as in torch)."""
        a = self.data
        out = xp.clip(a, min, max)

        def _clamp_backward(g: Any) -> tuple[Any, ...]:
            inside = xp.ones(a.shape, dtype=builtins.bool)
            if min is not None:
                inside &= a >= min
            if max is not None:
                inside &= a <= max
            return (g * inside,)

        return _make(out, (self,), _clamp_backward, "ClampBackward")

    clip = clamp

    def masked_fill(self, mask: Tensor | ArrayLike, value: Scalar | Tensor) -> Tensor:
        """Replace elements where ``mask`` (broadcast to self's shape) is True by ``value``."""
        m = mask.data if isinstance(mask, TensorBase) else xp.asarray(mask)
        v = value.item() if isinstance(value, TensorBase) else _scalar(value)
        out = xp.where(m, v, self.data)

        def _masked_fill_backward(g: Any) -> tuple[Any, ...]:
            return (xp.where(m, 0, g),)

        return _make(out, (self,), _masked_fill_backward, "MaskedFillBackward")

    def to(self, dtype: Any) -> Tensor:
        """Cast to ``dtype``; the gradient is cast back to this tensor's dtype."""
        src = self.data.dtype
        if xp.dtype(dtype) == src:
            return cast("Tensor", self)

        def _to_backward(g: Any) -> tuple[Any, ...]:
            return (g.astype(src),)

        out = self.data.astype(dtype)
        backward = _to_backward if out.dtype in _FLOAT_DTYPES else None
        return _make(out, (self,), backward, "ToCopyBackward")

    def float(self) -> Tensor:
        """Cast to float32."""
        return self.to(xp.float32)

    def double(self) -> Tensor:
        """Cast to float64."""
        return self.to(xp.float64)

    def half(self) -> Tensor:
        """Cast to float16."""
        return self.to(xp.float16)

    def long(self) -> Tensor:
        """Cast to int64 (no gradient flows through)."""
        return self.to(xp.int64)

    def bool(self) -> Tensor:
        """Cast to bool (no gradient flows through)."""
        return self.to(xp.bool_)
