"""A scalar reverse-mode automatic differentiation engine: the `Value`.

Every `Value` remembers the values it was computed from (its *parents*, a tuple in a fixed
order) and the local partial derivative of itself with respect to each of them. A call to
`backward()` walks the graph from the output back to the leaves and applies the chain rule
in its reverse ("adjoint") form

    v̄ = Σ_{w consumes v} (∂w/∂v) · w̄ ,        ȳ = 1 for the output y,

so one backward pass yields ∂y/∂x for every input x at a cost proportional to the size of
the graph, whatever the number of inputs (Linnainmaa 1970; Speelpenning 1980; Rumelhart,
Hinton & Williams 1986). Book: stage 2, "Automatic differentiation".

Semantics (the same as PyTorch's, tested in ``tests/autograd/test_value.py``):

* **Leaves accumulate.** A leaf's ``.grad`` is *added to* by every backward pass, so two
  calls of ``loss.backward()`` leave twice the gradient; set ``p.grad = 0.0`` (or call
  ``MLP.zero_grad``) between optimisation steps.
* **Interior nodes do not.** Each backward pass first resets every non-leaf node it reaches,
  so after a call an interior node's ``.grad`` holds ∂output/∂node for *that* call only
  (PyTorch's ``retain_grad``). The graph is kept, so ``backward`` may be called again
  (PyTorch's ``retain_graph=True``).
* **Sharing adds.** A node used twice — ``x * x``, or a diamond ``a = f(x), b = g(x),
  y = a + b`` — receives the sum of the gradients flowing down every path to it, and is
  processed only after all its consumers have sent their contributions.

Design for speed: ``__slots__``; each op stores its local derivatives as numbers (no closure
is created per node); Python numbers used as operands become constants, not graph nodes;
and the backward pass is an iterative depth-first sort plus one sweep (no recursion, so deep
graphs do not hit Python's recursion limit). ``benchmarks/bench_micrograd.py`` measures it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

Number = float | int


def real_pow(a: Number, b: Number) -> Number:
    """aᵇ over the reals, with IEEE-754 (and PyTorch) values where Python raises or goes complex.

    0 to a negative power is ±∞ (not ``ZeroDivisionError``), a negative base to a non-integer
    power is NaN (not a complex number), and an overflow is ±∞.

    >>> real_pow(0.0, -1.0), real_pow(-8.0, 1 / 3), real_pow(-2.0, 3.0)
    (inf, nan, -8.0)
    """
    try:
        out = a**b
    except (ZeroDivisionError, OverflowError):
        odd = float(b).is_integer() and int(b) % 2 == 1  # an odd power keeps the base's sign
        return math.copysign(math.inf, a) if odd else math.inf
    return math.nan if isinstance(out, complex) else out


def real_div(a: Number, b: Number) -> float:
    """a / b with IEEE-754 (and PyTorch) values for b = 0: ±∞, or NaN for 0/0.

    >>> real_div(1.0, 0.0), real_div(1.0, -0.0), real_div(0.0, 0.0)
    (inf, -inf, nan)
    """
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def real_log(x: Number) -> float:
    """ln x with PyTorch's values off its domain: -∞ at 0, NaN below (no ``ValueError``)."""
    return math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan)


def real_exp(x: Number) -> float:
    """eˣ, ∞ on overflow (no ``OverflowError``), as float64 and PyTorch give."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def pow_partials(a: Number, b: Number, out: Number | None = None) -> tuple[float, float]:
    """(∂aᵇ/∂a, ∂aᵇ/∂b) = (b·aᵇ⁻¹, aᵇ·ln a), with PyTorch's choices where these are undefined.

    The first is 0 when b = 0 (so x⁰ has gradient 0 even at x = 0); the second is 0 when a = 0
    and b ≥ 0, and NaN for a negative base (ln a has no real value there).
    """
    d_base = 0.0 if b == 0 else b * real_pow(a, b - 1)
    if a == 0 and b >= 0:
        return d_base, 0.0
    return d_base, (real_pow(a, b) if out is None else out) * real_log(a)


class Value:
    """A scalar that records how it was computed, for reverse-mode differentiation.

    >>> x = Value(3.0); y = x * x + 2 * x
    >>> y.backward(); (y.data, x.grad)
    (15.0, 8.0)
    """

    __slots__ = ("data", "grad", "_prev", "_local", "_op", "label")
    label: str  # optional name for drawings; unset until assigned (getattr(v, "label", ""))

    def __init__(
        self,
        data: Number,
        _prev: tuple[Value, ...] = (),
        _local: tuple[float, ...] = (),
        _op: str = "",
    ) -> None:
        self.data = data
        self.grad = 0.0
        self._prev = _prev  # parents, in argument order
        self._local = _local  # ∂self/∂parent, one number per parent
        self._op = _op

    # ---- binary arithmetic: the local derivative sits right under the forward -------------
    def __add__(self, other: Value | Number) -> Value:
        if isinstance(other, Value):
            return Value(self.data + other.data, (self, other), (1.0, 1.0), "+")
        return Value(self.data + other, (self,), (1.0,), "+")

    def __mul__(self, other: Value | Number) -> Value:
        if isinstance(other, Value):
            # ∂(ab)/∂a = b, ∂(ab)/∂b = a
            return Value(self.data * other.data, (self, other), (other.data, self.data), "*")
        return Value(self.data * other, (self,), (other,), "*")

    def __sub__(self, other: Value | Number) -> Value:
        if isinstance(other, Value):
            return Value(self.data - other.data, (self, other), (1.0, -1.0), "-")
        return Value(self.data - other, (self,), (1.0,), "-")

    def __truediv__(self, other: Value | Number) -> Value:
        if isinstance(other, Value):
            b = other.data
            # quotient rule: ∂(a/b)/∂a = 1/b, ∂(a/b)/∂b = -a/b² (IEEE ±∞/NaN at b = 0)
            return Value(real_div(self.data, b), (self, other),
                         (real_div(1.0, b), real_div(-self.data, b * b)), "/")
        return Value(real_div(self.data, other), (self,), (real_div(1.0, other),), "/")

    def __pow__(self, other: Value | Number) -> Value:
        a = self.data
        if isinstance(other, Value):
            b = other.data
            out = real_pow(a, b)
            # ∂(a^b)/∂a = b·a^(b-1), ∂(a^b)/∂b = a^b·ln a (PyTorch's values where undefined)
            return Value(out, (self, other), pow_partials(a, b, out), "**")
        return Value(real_pow(a, other), (self,), (pow_partials(a, other)[0],), f"**{other:g}")

    def __radd__(self, other: Number) -> Value:  # other + self
        return Value(other + self.data, (self,), (1.0,), "+")

    def __rmul__(self, other: Number) -> Value:  # other * self
        return Value(other * self.data, (self,), (other,), "*")

    def __rsub__(self, other: Number) -> Value:  # other - self
        return Value(other - self.data, (self,), (-1.0,), "-")

    def __rtruediv__(self, other: Number) -> Value:  # other / self
        b = self.data
        return Value(real_div(other, b), (self,), (real_div(-other, b * b),), "/")

    def __rpow__(self, other: Number) -> Value:  # other ** self, d/dx c^x = c^x ln c
        out = real_pow(other, self.data)
        return Value(out, (self,), (pow_partials(other, self.data, out)[1],), "**")

    def __neg__(self) -> Value:
        return Value(-self.data, (self,), (-1.0,), "neg")

    # ---- unary functions ------------------------------------------------------------------
    def exp(self) -> Value:
        out = real_exp(self.data)
        return Value(out, (self,), (out,), "exp")  # (eˣ)' = eˣ

    def log(self) -> Value:  # (ln x)' = 1/x; -∞ / NaN off the domain, as PyTorch
        return Value(real_log(self.data), (self,), (real_div(1.0, self.data),), "log")

    def sin(self) -> Value:
        return Value(math.sin(self.data), (self,), (math.cos(self.data),), "sin")

    def cos(self) -> Value:
        return Value(math.cos(self.data), (self,), (-math.sin(self.data),), "cos")

    def tanh(self) -> Value:
        t = math.tanh(self.data)
        return Value(t, (self,), (1.0 - t * t,), "tanh")  # tanh' = 1 - tanh²

    def sigmoid(self) -> Value:
        x = self.data
        # the two branches keep exp from overflowing for large |x|
        s = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
        return Value(s, (self,), (s * (1.0 - s),), "sigmoid")  # σ' = σ(1 - σ)

    def relu(self) -> Value:
        x = self.data
        # PyTorch's convention: the derivative at exactly 0 is 0
        return Value(x if x > 0 else 0.0, (self,), (1.0 if x > 0 else 0.0,), "relu")

    # ---- the backward pass --------------------------------------------------------------
    def backward(self, gradient: float = 1.0) -> None:
        """Add ∂self/∂v · gradient into ``v.grad`` for every node v this value depends on."""
        # Sweep 1: iterative depth-first search; an interior node is appended after all of
        # its parents, so `order` is topological. Interior gradients are reset on the way
        # (they are per call); leaves keep accumulating and need no place in `order`.
        # The reset doubles as the visited mark: `zero` is a new float object, so
        # `p.grad is zero` holds exactly for the nodes reached in this call (cheaper than a set).
        order: list[Value] = []
        zero = float()  # noqa: UP018 - must be a new object, not the shared 0.0 constant
        if self._prev:
            self.grad = zero
        stack = [(self, iter(self._prev))]
        while stack:
            v, parents = stack[-1]
            for p in parents:
                if p._prev and p.grad is not zero:  # leaves need no visit: not in order
                    p.grad = zero
                    stack.append((p, iter(p._prev)))
                    break
            else:  # every parent done
                stack.pop()
                order.append(v)
        self.grad += gradient
        # Sweep 2: consumers before producers, so each v.grad is complete when it is read.
        for v in reversed(order):
            g = v.grad
            prev = v._prev
            if len(prev) == 2:  # unrolled: most nodes are binary or unary
                a, b = prev
                da, db = v._local
                a.grad += da * g
                b.grad += db * g
            elif len(prev) == 1:
                prev[0].grad += v._local[0] * g
            else:
                for p, d in zip(prev, v._local):
                    p.grad += d * g

    def __repr__(self) -> str:
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g})"


def topological_order(root: Value) -> list[Value]:
    """Every node ``root`` depends on, each after all of its parents (leaves first)."""
    order: list[Value] = []
    seen: set[Value] = set()
    stack: list[tuple[Value, bool]] = [(root, False)]
    while stack:
        v, expanded = stack.pop()
        if expanded:
            order.append(v)
        elif v not in seen:
            seen.add(v)
            stack.append((v, True))
            stack.extend((p, False) for p in reversed(v._prev) if p not in seen)
    return order


def graph_size(root: Value) -> tuple[int, int]:
    """(number of nodes, number of edges) of the graph that ``root`` was computed by."""
    order = topological_order(root)
    return len(order), sum(len(v._prev) for v in order)


class Neuron:
    """``act(b + Σ wᵢxᵢ)``, summed in micrograd's order so the two engines agree bit for bit."""

    def __init__(self, n_in: int, nonlin: bool = True, rng: random.Random | None = None):
        r = rng or random.Random(0)
        self.w = [Value(r.uniform(-1.0, 1.0)) for _ in range(n_in)]
        self.b = Value(0.0)
        self.nonlin = nonlin

    def __call__(self, x: Sequence[Value | float]) -> Value:
        act = self.b
        for wi, xi in zip(self.w, x):
            act = act + wi * xi
        return act.relu() if self.nonlin else act

    def parameters(self) -> list[Value]:
        return [*self.w, self.b]


class MLP:
    """A multi-layer perceptron of `Neuron`s: ReLU on every layer but the last."""

    def __init__(self, n_in: int, n_outs: Sequence[int], rng: random.Random | None = None):
        sizes = [n_in, *n_outs]
        r = rng or random.Random(0)
        self.layers = [
            [Neuron(sizes[i], nonlin=i != len(n_outs) - 1, rng=r) for _ in range(sizes[i + 1])]
            for i in range(len(n_outs))
        ]

    def __call__(self, x: Sequence[Value | float]) -> list[Value]:
        h: Sequence[Value | float] = x
        for layer in self.layers:
            h = [neuron(h) for neuron in layer]
        return list(h)  # type: ignore[arg-type]

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for n in layer for p in n.parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0


def value_sum(values: Iterable[Value | float]) -> Value:
    """Σ values, left to right (``sum`` would start from the integer 0, adding a node)."""
    it = iter(values)
    total = next(it)
    total = total if isinstance(total, Value) else Value(total)
    for v in it:
        total = total + v
    return total
