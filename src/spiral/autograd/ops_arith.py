"""Arithmetic on tensors: + − × ÷ powers, matrix product, comparisons.

Each operator's local backward sits right under its forward. Broadcasting is undone by
summing the gradient back to each input's shape; Python scalars take a fast path with one
parent and never change the tensor's dtype. Chapter: stage 2 (automatic differentiation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from spiral.autograd.engine import (
    _DEFAULT_FLOAT,
    _PY_SCALARS,
    ArrayLike,
    Scalar,
    TensorBase,
    _identity_backward,
    _make,
    _neg_backward,
    _promote,
    _scalar,
    _unbroadcast,
    _with_scalar,
    as_tensor,
    xp,
)

if TYPE_CHECKING:
    from spiral.autograd.tensor import Tensor


class ArithmeticOps(TensorBase):
    """Operators ``+ - * / ** @``, their reflected forms, and comparisons."""

    __slots__ = ()

    def __add__(self, other: Tensor | ArrayLike) -> Tensor:
        """a + b with broadcasting; backward: ā = ȳ, b̄ = ȳ, each summed back to its shape."""
        if isinstance(other, TensorBase):
            a, b = self.data, other.data
            if a.dtype is not b.dtype:
                a, b = _promote(a, b)
            ash, bsh = a.shape, b.shape

            def _add_backward(g: Any) -> tuple[Any, ...]:
                return _unbroadcast(g, ash), _unbroadcast(g, bsh)

            return _make(a + b, (self, other), _add_backward, "AddBackward")
        if isinstance(other, _PY_SCALARS) or isinstance(other, xp.generic):
            a, s = _with_scalar(self.data, other)
            return _make(a + s, (self,), _identity_backward, "AddBackward")
        return self.__add__(as_tensor(other))

    __radd__ = __add__

    def __sub__(self, other: Tensor | ArrayLike) -> Tensor:
        """a − b with broadcasting; backward: ā = ȳ, b̄ = −ȳ."""
        if isinstance(other, TensorBase):
            a, b = self.data, other.data
            if a.dtype is not b.dtype:
                a, b = _promote(a, b)
            ash, bsh = a.shape, b.shape

            def _sub_backward(g: Any) -> tuple[Any, ...]:
                return _unbroadcast(g, ash), _unbroadcast(-g, bsh)

            return _make(a - b, (self, other), _sub_backward, "SubBackward")
        if isinstance(other, _PY_SCALARS) or isinstance(other, xp.generic):
            a, s = _with_scalar(self.data, other)
            return _make(a - s, (self,), _identity_backward, "SubBackward")
        return self.__sub__(as_tensor(other))

    def __rsub__(self, other: ArrayLike) -> Tensor:
        """s − a for a scalar s; backward: ā = −ȳ."""
        if isinstance(other, _PY_SCALARS) or isinstance(other, xp.generic):
            a, s = _with_scalar(self.data, other)
            return _make(s - a, (self,), _neg_backward, "RsubBackward")
        return as_tensor(other).__sub__(self)

    def __mul__(self, other: Tensor | ArrayLike) -> Tensor:
        """a · b elementwise with broadcasting; backward: ā = ȳ · b, b̄ = ȳ · a."""
        if isinstance(other, TensorBase):
            a, b = self.data, other.data
            if a.dtype is not b.dtype:
                a, b = _promote(a, b)
            ra, rb = self.requires_grad, other.requires_grad

            def _mul_backward(g: Any) -> tuple[Any, ...]:
                return (_unbroadcast(g * b, a.shape) if ra else None,
                        _unbroadcast(g * a, b.shape) if rb else None)

            return _make(a * b, (self, other), _mul_backward, "MulBackward")
        if isinstance(other, _PY_SCALARS) or isinstance(other, xp.generic):
            a, s = _with_scalar(self.data, other)

            def _mul_scalar_backward(g: Any) -> tuple[Any, ...]:
                return (g * s,)

            return _make(a * s, (self,), _mul_scalar_backward, "MulBackward")
        return self.__mul__(as_tensor(other))

    __rmul__ = __mul__

    def __truediv__(self, other: Tensor | ArrayLike) -> Tensor:
        """a / b with broadcasting; backward: ā = ȳ / b, b̄ = −ȳ · a / b²."""
        if isinstance(other, TensorBase):
            a, b = self.data, other.data
            if a.dtype is not b.dtype:
                a, b = _promote(a, b)
            ra, rb = self.requires_grad, other.requires_grad
            if a.dtype.kind != "f" and b.dtype.kind != "f":  # int / int is a float, as torch
                a, b = a.astype(_DEFAULT_FLOAT), b.astype(_DEFAULT_FLOAT)
            out = a / b

            def _div_backward(g: Any) -> tuple[Any, ...]:
                # d(a/b)/da = 1/b ; d(a/b)/db = -a/b² = -out/b
                gb = g / b
                return (_unbroadcast(gb, a.shape) if ra else None,
                        _unbroadcast(-gb * out, b.shape) if rb else None)

            return _make(out, (self, other), _div_backward, "DivBackward")
        if isinstance(other, _PY_SCALARS) or isinstance(other, xp.generic):
            a, s = _with_scalar(self.data, other, true_div=True)

            def _div_scalar_backward(g: Any) -> tuple[Any, ...]:
                return (g / s,)

            return _make(a / s, (self,), _div_scalar_backward, "DivBackward")
        return self.__truediv__(as_tensor(other))

    def __rtruediv__(self, other: ArrayLike) -> Tensor:
        """s / a for a scalar s; backward: ā = −ȳ · s / a²."""
        if isinstance(other, _PY_SCALARS) or isinstance(other, xp.generic):
            a, s = _with_scalar(self.data, other, true_div=True)
            out = s / a

            def _rdiv_backward(g: Any) -> tuple[Any, ...]:
                return (-g * out / a,)  # d(s/a)/da = -s/a² = -out/a

            return _make(out, (self,), _rdiv_backward, "DivBackward")
        return as_tensor(other).__truediv__(self)

    def __neg__(self) -> Tensor:
        """−a; backward: ā = −ȳ."""
        return _make(-self.data, (self,), _neg_backward, "NegBackward")

    def __pos__(self) -> Tensor:
        return cast("Tensor", self)

    def __pow__(self, exponent: Tensor | Scalar) -> Tensor:
        """aᵖ; backward: ā = ȳ · p aᵖ⁻¹ (and p̄ = ȳ · aᵖ log a for a tensor exponent)."""
        a = self.data
        if isinstance(exponent, TensorBase):
            b = exponent.data
            ra, rb = self.requires_grad, exponent.requires_grad
            out = a**b

            def _pow_backward(g: Any) -> tuple[Any, ...]:
                # d(a^b)/da = b a^(b-1), 0 where b = 0 ; d(a^b)/db = a^b log a, 0 where a = 0
                # and b >= 0 (PyTorch's values; the raw formulas give 0·∞ = nan there)
                with xp.errstate(divide="ignore", invalid="ignore"):
                    da = xp.where(b == 0, 0, b * a ** (b - 1)) if ra else None
                    db = xp.where((a == 0) & (b >= 0), 0, out * xp.log(a)) if rb else None
                return (_unbroadcast(g * da, a.shape) if ra else None,
                        _unbroadcast(g * db, b.shape) if rb else None)

            return _make(out, (self, exponent), _pow_backward, "PowBackward")
        p = _scalar(exponent)
        if p == 2:  # x*x is ~100x faster than np.power for small integer powers
            def _square_backward(g: Any) -> tuple[Any, ...]:
                return (g * (2 * a),)

            return _make(a * a, (self,), _square_backward, "PowBackward")

        def _pow_scalar_backward(g: Any) -> tuple[Any, ...]:
            if p == 0:  # x⁰ = 1 has gradient 0 everywhere, x = 0 included (0·0⁻¹ would be nan)
                return (xp.zeros_like(g),)
            return (g * (p * a ** (p - 1)),)

        out = a * a * a if p == 3 else a**p
        return _make(out, (self,), _pow_scalar_backward, "PowBackward")

    def __rpow__(self, base: Scalar) -> Tensor:
        """sᵃ for a scalar base s; backward: ā = ȳ · sᵃ log s."""
        s = _scalar(base)
        out = s**self.data

        # d(s^x)/dx = s^x log s, a weak Python float; log 0 = -inf, log of s < 0 is nan
        log_s = math.log(s) if s > 0 else (-math.inf if s == 0 else math.nan)

        def _rpow_backward(g: Any) -> tuple[Any, ...]:
            if s == 0:  # PyTorch: 0 where x >= 0 (0^x is flat there), not 0·(-inf) = nan
                with xp.errstate(invalid="ignore"):
                    return (xp.where(self.data >= 0, 0, g * out * log_s),)
            return (g * out * log_s,)

        return _make(out, (self,), _rpow_backward, "PowBackward")

    def __matmul__(self, other: Tensor | ArrayLike) -> Tensor:
        """Matrix product with NumPy/torch semantics: 1-D operands, batched, broadcast."""
        if not isinstance(other, TensorBase):
            other = as_tensor(other)
        a, b = self.data, other.data
        if a.dtype is not b.dtype:
            a, b = _promote(a, b)
        ra, rb = self.requires_grad, other.requires_grad
        if a.ndim > 2 and b.ndim == 2:
            # (..., n, k) @ (k, m): one big GEMM instead of a batch of small ones
            out = (a.reshape(-1, a.shape[-1]) @ b).reshape(*a.shape[:-1], b.shape[-1])
        else:
            out = a @ b

        def _matmul_backward(g: Any) -> tuple[Any, ...]:
            ga = gb = None
            if a.ndim == 1 and b.ndim == 1:  # dot product: g is a scalar
                ga = g * b if ra else None
                gb = g * a if rb else None
            elif a.ndim == 1:  # (k,) @ (..., k, m) -> (..., m)
                if ra:
                    ga = _unbroadcast((g[..., None, :] @ b.swapaxes(-1, -2))[..., 0, :], a.shape)
                if rb:
                    gb = _unbroadcast(a[:, None] * g[..., None, :], b.shape)
            elif b.ndim == 1:  # (..., n, k) @ (k,) -> (..., n)
                if ra:
                    ga = _unbroadcast(g[..., :, None] * b, a.shape)
                if rb:
                    gb = _unbroadcast((a.swapaxes(-1, -2) @ g[..., :, None])[..., 0], b.shape)
            elif b.ndim == 2 and a.ndim > 2:
                k, m = b.shape
                g2 = g.reshape(-1, m)  # (..., n, m) -> (N, m)
                if ra:
                    ga = (g2 @ b.T).reshape(a.shape)
                if rb:
                    gb = a.reshape(-1, k).T @ g2  # (k, N) @ (N, m)
            else:
                if ra:
                    ga = _unbroadcast(g @ b.swapaxes(-1, -2), a.shape)
                if rb:
                    gb = _unbroadcast(a.swapaxes(-1, -2) @ g, b.shape)
            return ga, gb

        return _make(out, (self, other), _matmul_backward, "MmBackward")

    def __rmatmul__(self, other: ArrayLike) -> Tensor:
        return as_tensor(other).__matmul__(self)

    def matmul(self, other: Tensor) -> Tensor:
        """Same as ``self @ other``."""
        return self.__matmul__(other)

    # torch's method spellings of the operators
    add = __add__
    sub = __sub__
    mul = __mul__
    div = __truediv__
    pow = __pow__
    neg = __neg__

    def square(self) -> Tensor:
        """x²; backward: x̄ = 2x ȳ."""
        return self.__pow__(2)

    # comparisons give boolean tensors without gradients
    def _compare(self, other: Any, fn: Callable[[Any, Any], Any]) -> Tensor:
        return _make(fn(self.data, other.data if isinstance(other, TensorBase) else other), (),
                     None, "")

    def __lt__(self, other: Any) -> Tensor:
        return self._compare(other, xp.less)

    def __le__(self, other: Any) -> Tensor:
        return self._compare(other, xp.less_equal)

    def __gt__(self, other: Any) -> Tensor:
        return self._compare(other, xp.greater)

    def __ge__(self, other: Any) -> Tensor:
        return self._compare(other, xp.greater_equal)

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(other, xp.equal)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(other, xp.not_equal)

    def __invert__(self) -> Tensor:
        return _make(~self.data, (), None, "")
