"""Forward-mode automatic differentiation with dual numbers, beside reverse mode.

A dual number is ``a + a'ε`` with ``ε² = 0``. Taylor's theorem then gives, for any smooth f,

    f(a + a'ε) = f(a) + f'(a)·a'ε ,

so evaluating a program on duals carries a *tangent* along with every value: the tangent of
an intermediate v is v' = Σ_u (∂v/∂u)·u', the directional derivative in the seed direction.
One forward pass computes a Jacobian–vector product J·v (JVP); reverse mode
(`spiral.autograd.value`) computes a vector–Jacobian product uᵀJ (VJP) in one backward pass.
For f: ℝⁿ → ℝᵐ the full Jacobian therefore costs n forward passes or m backward passes —
the reason deep learning (m = 1 loss, n = millions of parameters) uses reverse mode.
`Cost` counts the work of each so the difference can be measured, not just asserted
(Wengert 1964; Griewank & Walther, *Evaluating Derivatives*, 2008). Book: stage 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from spiral.autograd.value import (
    Value,
    pow_partials,
    real_div,
    real_exp,
    real_log,
    real_pow,
    topological_order,
)

Number = float | int

# [primal operations, derivative multiply-adds] done by Dual arithmetic since the last reset
_COUNT = [0, 0]


@dataclass(frozen=True)
class Cost:
    """Work done by a differentiation: primal operations and derivative multiply-adds."""

    primal_ops: int
    derivative_ops: int

    @property
    def total(self) -> int:
        return self.primal_ops + self.derivative_ops


class Dual:
    """A dual number ``primal + tangent·ε`` with ε² = 0.

    >>> x = Dual(3.0, 1.0); y = x * x + 2 * x
    >>> (y.primal, y.tangent)
    (15.0, 8.0)
    """

    __slots__ = ("primal", "tangent")

    def __init__(self, primal: Number, tangent: Number = 0.0) -> None:
        self.primal = primal
        self.tangent = tangent

    def __add__(self, other: Dual | Number) -> Dual:
        if isinstance(other, Dual):
            _COUNT[0] += 1
            _COUNT[1] += 2
            return Dual(self.primal + other.primal, self.tangent + other.tangent)
        _COUNT[0] += 1
        _COUNT[1] += 1
        return Dual(self.primal + other, self.tangent)

    __radd__ = __add__

    def __mul__(self, other: Dual | Number) -> Dual:
        if isinstance(other, Dual):
            _COUNT[0] += 1
            _COUNT[1] += 2
            # (a + a'ε)(b + b'ε) = ab + (a'b + ab')ε: the product rule falls out of ε² = 0
            return Dual(
                self.primal * other.primal,
                self.tangent * other.primal + self.primal * other.tangent,
            )
        _COUNT[0] += 1
        _COUNT[1] += 1
        return Dual(self.primal * other, self.tangent * other)

    __rmul__ = __mul__

    def __neg__(self) -> Dual:
        return self * -1.0

    def __sub__(self, other: Dual | Number) -> Dual:
        if isinstance(other, Dual):
            _COUNT[0] += 1
            _COUNT[1] += 2
            return Dual(self.primal - other.primal, self.tangent - other.tangent)
        return self._unary(self.primal - other, 1.0)

    def __rsub__(self, other: Number) -> Dual:
        return self._unary(other - self.primal, -1.0)

    def __truediv__(self, other: Dual | Number) -> Dual:
        if isinstance(other, Dual):
            _COUNT[0] += 1
            _COUNT[1] += 2
            b = other.primal
            q = real_div(self.primal, b)
            # quotient rule: (a/b)' = a'/b - a b'/b²
            return Dual(q, real_div(self.tangent - q * other.tangent, b))
        return self * real_div(1.0, other)

    def __rtruediv__(self, other: Number) -> Dual:
        a = self.primal
        return self._unary(real_div(other, a), real_div(-other, a * a))

    def __pow__(self, n: Number) -> Dual:
        a = self.primal
        return self._unary(real_pow(a, n), pow_partials(a, n)[0])

    def _unary(self, value: float, derivative: float) -> Dual:
        # chain rule: f(a + a'ε) = f(a) + f'(a)a'ε
        _COUNT[0] += 1
        _COUNT[1] += 1
        return Dual(value, derivative * self.tangent)

    def exp(self) -> Dual:
        e = real_exp(self.primal)
        return self._unary(e, e)

    def log(self) -> Dual:
        return self._unary(real_log(self.primal), real_div(1.0, self.primal))

    def sin(self) -> Dual:
        return self._unary(math.sin(self.primal), math.cos(self.primal))

    def cos(self) -> Dual:
        return self._unary(math.cos(self.primal), -math.sin(self.primal))

    def tanh(self) -> Dual:
        t = math.tanh(self.primal)
        return self._unary(t, 1.0 - t * t)

    def sigmoid(self) -> Dual:
        s = Value(self.primal).sigmoid().data  # one stable sigmoid, shared with Value
        return self._unary(s, s * (1.0 - s))

    def relu(self) -> Dual:
        a = self.primal
        return self._unary(a if a > 0 else 0.0, 1.0 if a > 0 else 0.0)

    def __repr__(self) -> str:
        return f"Dual({self.primal:.6g}, {self.tangent:.6g})"


# A program to differentiate: a list of n inputs -> a list of m outputs, written with operators
# and methods (x.tanh(), x.exp(), ...) so it runs unchanged on floats' stand-ins Dual and Value.
Program = Callable[[list[Any]], Sequence[Any]]


def jvp(f: Program, x: Sequence[float], v: Sequence[float]) -> tuple[list[float], list[float]]:
    """(f(x), J·v) from one forward pass on dual numbers.

    >>> jvp(lambda z: [z[0] * z[1]], [2.0, 3.0], [1.0, 0.0])
    ([6.0], [3.0])
    """
    ys = f([Dual(xi, vi) for xi, vi in zip(x, v)])
    return [_primal(y) for y in ys], [_tangent(y) for y in ys]


def vjp(f: Program, x: Sequence[float], u: Sequence[float]) -> tuple[list[float], list[float]]:
    """(f(x), uᵀJ) from one backward pass of the scalar Σᵢ uᵢ·fᵢ(x)."""
    xs = [Value(xi) for xi in x]
    ys = f(xs)
    total: Value | float = 0.0
    for ui, yi in zip(u, ys):
        total = total + ui * yi
    if isinstance(total, Value):
        total.backward()
    return [_primal(y) for y in ys], [xi.grad for xi in xs]


def _primal(y: Any) -> float:
    return float(y.primal if isinstance(y, Dual) else y.data if isinstance(y, Value) else y)


def _tangent(y: Any) -> float:
    return float(y.tangent) if isinstance(y, Dual) else 0.0


def jacobian_forward(f: Program, x: Sequence[float]) -> tuple[list[list[float]], Cost]:
    """The m×n Jacobian of f at x, one column per forward pass (n passes), and their cost."""
    n = len(x)
    _COUNT[0] = _COUNT[1] = 0
    columns = []
    for j in range(n):
        basis = [1.0 if i == j else 0.0 for i in range(n)]
        columns.append(jvp(f, x, basis)[1])  # column j = J·e_j
    cost = Cost(_COUNT[0], _COUNT[1])
    m = len(columns[0]) if columns else 0
    return [[columns[j][i] for j in range(n)] for i in range(m)], cost


def jacobian_reverse(
    f: Program, x: Sequence[float], count: bool = True
) -> tuple[list[list[float]], Cost]:
    """The m×n Jacobian of f at x: one recorded forward pass, one backward pass per row.

    Counting walks the graph again, so pass ``count=False`` when timing.
    """
    xs = [Value(xi) for xi in x]
    ys = f(xs)
    # the recording runs the whole program once: the same operations as one plain evaluation
    primal = primal_cost(f, x) if count else 0
    derivative = 0
    rows = []
    for y in ys:
        for xi in xs:
            xi.grad = 0.0
        if isinstance(y, Value) and count:
            nodes = topological_order(y)  # backward visits only the cone of yᵢ
            derivative += sum(len(v._prev) for v in nodes)  # one multiply-add per edge
        if isinstance(y, Value):
            y.backward()  # row i = e_iᵀ J
        rows.append([xi.grad for xi in xs])
    return rows, Cost(primal, derivative)


def primal_cost(f: Program, x: Sequence[float]) -> int:
    """Number of primitive operations in one plain evaluation of f at x."""
    _COUNT[0] = _COUNT[1] = 0
    f([Dual(xi) for xi in x])
    return _COUNT[0]
