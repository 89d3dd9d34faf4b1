"""Reductions: sum, mean, var/std, max/min along dimensions (``dim``, ``keepdim``).

A reduction's backward broadcasts ȳ back over the reduced axes: sum sends it unchanged,
mean divides by the count, max routes it to the argmax (``max()`` with no dim splits it
between ties, as torch does). Chapter: stage 2.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from spiral.autograd.engine import (
    TensorBase,
    _make,
    xp,
)

if TYPE_CHECKING:
    from spiral.autograd.tensor import Tensor


class MaxResult(NamedTuple):
    """``(values, indices)`` returned by ``Tensor.max(dim)`` / ``min(dim)``, as in torch."""

    values: Tensor
    indices: Tensor


class ReductionOps(TensorBase):
    """Reductions over dimensions, with torch's ``dim`` / ``keepdim`` arguments."""

    __slots__ = ()

    def sum(self, dim: builtins.int | tuple[builtins.int, ...] | None = None,
            keepdim: builtins.bool = False) -> Tensor:
        """Sum over ``dim`` (all if None); backward broadcasts ȳ back over the summed axes."""
        a = self.data
        shape = a.shape

        def _sum_backward(g: Any) -> tuple[Any, ...]:
            if dim is not None and not keepdim:
                g = xp.expand_dims(g, dim)
            return (xp.broadcast_to(g, shape),)

        return _make(a.sum(axis=dim, keepdims=keepdim), (self,), _sum_backward, "SumBackward")

    def mean(self, dim: builtins.int | tuple[builtins.int, ...] | None = None,
             keepdim: builtins.bool = False) -> Tensor:
        """Mean over ``dim`` (all if None); backward: x̄ = ȳ / n broadcast back."""
        a = self.data
        shape = a.shape
        out = a.mean(axis=dim, keepdims=keepdim)
        n = a.size // builtins.max(xp.size(out), 1)

        def _mean_backward(g: Any) -> tuple[Any, ...]:
            if dim is not None and not keepdim:
                g = xp.expand_dims(g, dim)
            return (xp.broadcast_to(g / n, shape),)

        return _make(out, (self,), _mean_backward, "MeanBackward")

    def var(self, dim: builtins.int | tuple[builtins.int, ...] | None = None, *,
            correction: builtins.int = 1, keepdim: builtins.bool = False) -> Tensor:
        """Variance with Bessel's correction by default (``correction=1``), as torch."""
        a = self.data
        centred = a - a.mean(axis=dim, keepdims=True)
        n = a.size // builtins.max(a.mean(axis=dim, keepdims=True).size, 1)
        denom = builtins.max(n - correction, 0)
        out = (centred * centred).sum(axis=dim, keepdims=keepdim) / denom

        def _var_backward(g: Any) -> tuple[Any, ...]:
            if dim is not None and not keepdim:
                g = xp.expand_dims(g, dim)
            return (g * (2.0 / denom) * centred,)

        return _make(out, (self,), _var_backward, "VarBackward")

    def std(self, dim: builtins.int | tuple[builtins.int, ...] | None = None, *,
            correction: builtins.int = 1, keepdim: builtins.bool = False) -> Tensor:
        """Standard deviation: ``var(...).sqrt()``."""
        return self.var(dim, correction=correction, keepdim=keepdim).sqrt()

    def _extremum(self, dim: builtins.int | None, keepdim: builtins.bool,
                  arg: Callable[..., Any], name: str) -> Any:
        a = self.data
        if dim is None:
            out = a.max() if name == "Max" else a.min()

            def _extremum_all_backward(g: Any) -> tuple[Any, ...]:
                # ties share the gradient evenly, as in torch
                hit = a == out
                return (hit * (g / builtins.int(hit.sum())),)

            return _make(out, (self,), _extremum_all_backward, name + "Backward")
        idx = arg(a, axis=dim, keepdims=True)
        values = xp.take_along_axis(a, idx, axis=dim)
        shape = a.shape

        def _extremum_backward(g: Any) -> tuple[Any, ...]:
            if not keepdim:
                g = xp.expand_dims(g, dim)
            grad = xp.zeros(shape, dtype=g.dtype)
            xp.put_along_axis(grad, idx, g, axis=dim)
            return (grad,)

        indices = idx
        if not keepdim:
            values, indices = values.squeeze(dim), idx.squeeze(dim)
        return MaxResult(_make(values, (self,), _extremum_backward, name + "Backward"),
                         _make(indices, (), None, ""))

    def max(self, dim: builtins.int | None = None, keepdim: builtins.bool = False) -> Any:
        """``max()`` -> scalar tensor; ``max(dim)`` -> ``(values, indices)`` like torch."""
        return self._extremum(dim, keepdim, xp.argmax, "Max")

    def min(self, dim: builtins.int | None = None, keepdim: builtins.bool = False) -> Any:
        """``min()`` -> scalar tensor; ``min(dim)`` -> ``(values, indices)`` like torch."""
        return self._extremum(dim, keepdim, xp.argmin, "Min")

    def any(self, dim: builtins.int | None = None, keepdim: builtins.bool = False) -> Tensor:
        """True where any element (along ``dim``) is nonzero (bool, no gradient)."""
        return _make(xp.any(self.data, axis=dim, keepdims=keepdim), (), None, "")

    def all(self, dim: builtins.int | None = None, keepdim: builtins.bool = False) -> Tensor:
        """True where every element (along ``dim``) is nonzero (bool, no gradient)."""
        return _make(xp.all(self.data, axis=dim, keepdims=keepdim), (), None, "")

    def argmax(self, dim: builtins.int | None = None, keepdim: builtins.bool = False) -> Tensor:
        """Index of the maximum (int64, no gradient)."""
        return _make(xp.argmax(self.data, axis=dim, keepdims=keepdim), (), None, "")

    def argmin(self, dim: builtins.int | None = None, keepdim: builtins.bool = False) -> Tensor:
        """Index of the minimum (int64, no gradient)."""
        return _make(xp.argmin(self.data, axis=dim, keepdims=keepdim), (), None, "")
