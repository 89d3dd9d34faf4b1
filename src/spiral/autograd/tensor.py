"""Tensor: reverse-mode automatic differentiation on NumPy arrays.

A ``Tensor`` wraps an ndarray (``.data``). Every differentiable operation returns a new
tensor that remembers its parents (a tuple, so the order is deterministic) and a closure,
its *local backward*, that maps the gradient of the output to the gradients of the inputs
(a vector-Jacobian product). ``backward()`` sorts the graph topologically (iteratively, so
deep graphs do not hit Python's recursion limit) and applies the chain rule in reverse:

    x̄ = Σ_{y consumes x} (∂y/∂x)ᵀ ȳ          (gradients of all consumers are summed)

Broadcasting in the forward pass is undone in the backward pass by summing the gradient
over the broadcast axes, so every gradient has the shape of its input.

Semantics follow PyTorch (names, arguments, defaults): gradients accumulate into leaves'
``.grad`` across ``backward`` calls; intermediate gradients are freed unless
``retain_grad()`` was called; the graph is freed after ``backward`` unless
``retain_graph=True``, and a second pass through a freed graph is an error; Python scalars
never change a tensor's dtype; Python floats default to float32; integer tensors are
indices and cannot require gradients.

Reference: Griewank & Walther, *Evaluating Derivatives* (2008); Paszke et al., *Automatic
differentiation in PyTorch* (2017). Chapter: stage 2 (automatic differentiation).
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy

from spiral.autograd import hooks as _hooks

# The array module: a single indirection so a GPU array library (CuPy) can slot in later.
xp = numpy

Scalar = builtins.int | builtins.float | builtins.bool
ArrayLike = Any
Backward = Callable[[Any], tuple[Any, ...]]

_ndarray = xp.ndarray
_DEFAULT_FLOAT = xp.dtype(xp.float32)
# Dtypes that may require gradients; stage 12 adds bfloat16 via ``register_float_dtype``.
_FLOAT_DTYPES: set[Any] = {xp.dtype(xp.float16), xp.dtype(xp.float32), xp.dtype(xp.float64)}
_HOOKS = _hooks._HOOKS
_grad_enabled = True


def register_float_dtype(dtype: Any) -> None:
    """Allow tensors of ``dtype`` (e.g. ``ml_dtypes.bfloat16``) to require gradients."""
    _FLOAT_DTYPES.add(xp.dtype(dtype))


# --------------------------------------------------------------------------- grad mode
class no_grad:
    """Context manager (and decorator) that disables graph recording, like ``torch.no_grad``."""

    __slots__ = ("_prev",)

    def __enter__(self) -> None:
        global _grad_enabled
        self._prev = _grad_enabled
        _grad_enabled = False

    def __exit__(self, *exc: object) -> None:
        global _grad_enabled
        _grad_enabled = self._prev

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with no_grad():
                return fn(*args, **kwargs)

        wrapper.__name__ = getattr(fn, "__name__", "wrapper")
        wrapper.__doc__ = fn.__doc__
        return wrapper


class enable_grad(no_grad):
    """Re-enable graph recording inside a ``no_grad`` block."""

    __slots__ = ()

    def __enter__(self) -> None:
        global _grad_enabled
        self._prev = _grad_enabled
        _grad_enabled = True

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with enable_grad():
                return fn(*args, **kwargs)

        return wrapper


def is_grad_enabled() -> bool:
    """True when operations record the graph."""
    return _grad_enabled


# --------------------------------------------------------------------------- helpers
def _graph_freed(g: Any) -> tuple[Any, ...]:
    raise RuntimeError(
        "Trying to backward through the graph a second time (or directly access saved "
        "tensors after they have already been freed). Specify retain_graph=True if you need "
        "to backward through the graph a second time."
    )


def _identity_backward(g: Any) -> tuple[Any, ...]:
    return (g,)


def _neg_backward(g: Any) -> tuple[Any, ...]:
    return (-g,)


def _unbroadcast(g: Any, shape: tuple[builtins.int, ...]) -> Any:
    """Sum ``g`` over the axes that broadcasting added or stretched, to get ``shape``."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


def _make(data: Any, parents: tuple[Tensor, ...], backward: Backward | None, op: str) -> Tensor:
    """Wrap an op's result; record the graph only if grad mode is on and a parent needs it."""
    t = _new(Tensor)
    if type(data) is not _ndarray:
        data = xp.asarray(data)
    t.data = data
    t.grad = None
    t._op = op
    t._retain = False
    if _grad_enabled and backward is not None:
        for p in parents:
            if p.requires_grad:
                t.requires_grad = True
                t._parents = parents
                t._backward = backward
                break
        else:
            t.requires_grad = False
            t._parents = ()
            t._backward = None
    else:
        t.requires_grad = False
        t._parents = ()
        t._backward = None
    if _HOOKS:
        _hooks.notify_alloc(t, shared=data.base is not None)
    return t


_new = object.__new__
_PY_SCALARS = (builtins.int, builtins.float, builtins.bool)


def _as_array(value: ArrayLike, dtype: Any = None) -> Any:
    """Array for a tensor's data: Python floats default to float32, arrays keep their dtype."""
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, _ndarray):
        return value if dtype is None else value.astype(dtype, copy=False)
    if isinstance(value, xp.generic):
        return xp.asarray(value, dtype=dtype)
    arr = xp.asarray(value, dtype=dtype)
    if dtype is None and arr.dtype == xp.float64:
        arr = arr.astype(_DEFAULT_FLOAT)
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise TypeError(f"cannot make a Tensor from {type(value).__name__} with dtype {arr.dtype}")
    return arr


def _scalar(value: Any) -> Any:
    """A Python number as itself, a NumPy scalar as a Python number (so it stays 'weak')."""
    return value.item() if isinstance(value, xp.generic) else value


def _unwrap_index(idx: Any) -> Any:
    if isinstance(idx, Tensor):
        return idx.data
    if isinstance(idx, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in idx)
    return idx


_BASIC_INDEX = (builtins.int, slice, type(None), type(Ellipsis), xp.integer)


def _is_basic_index(idx: Any) -> bool:
    """True when indexing makes a view (no index array): each element is picked once."""
    if isinstance(idx, tuple):
        return all(isinstance(i, _BASIC_INDEX) and not isinstance(i, builtins.bool) for i in idx)
    return isinstance(idx, _BASIC_INDEX) and not isinstance(idx, builtins.bool)


def _scatter_add_rows(grad: Any, idx: Any, g: Any) -> None:
    """``grad[idx] += g`` with repeated rows summed (embedding backward), by sort + reduceat.

    Faster than ``np.add.at`` by 5-10x for a (vocab_size, d_model) table.
    """
    n_rows = grad.shape[0]
    flat = idx.ravel()  # (N,)
    if flat.size == 0:
        return
    if flat.min() < 0:
        flat = xp.where(flat < 0, flat + n_rows, flat)
    rows = g.reshape(flat.size, -1)  # (N, prod(rest))
    target = grad.reshape(n_rows, -1)  # (n_rows, prod(rest)), a view of grad
    order = xp.argsort(flat, kind="stable")
    sorted_idx = flat[order]
    starts = xp.flatnonzero(xp.concatenate(([True], sorted_idx[1:] != sorted_idx[:-1])))
    target[sorted_idx[starts]] += xp.add.reduceat(rows[order], starts, axis=0)


class _SliceGrad:
    """The gradient of a basic-indexing op: zeros of ``shape`` except ``grad`` at ``index``.

    Kept unmaterialized so that the pieces of a ``split`` (q, k, v) fill one array in place
    instead of each allocating a full-size array of zeros that the engine then adds up.
    """

    __slots__ = ("index", "grad", "shape")

    def __init__(self, index: Any, grad: Any, shape: tuple[builtins.int, ...]) -> None:
        self.index, self.grad, self.shape = index, grad, shape

    def materialize(self) -> Any:
        """The full-size gradient array."""
        out = xp.zeros(self.shape, dtype=self.grad.dtype)
        out[self.index] = self.grad
        return out


class MaxResult(NamedTuple):
    """``(values, indices)`` returned by ``Tensor.max(dim)`` / ``min(dim)``, as in torch."""

    values: Tensor
    indices: Tensor


# --------------------------------------------------------------------------- Tensor
class Tensor:
    """An n-dimensional array that records the operations applied to it.

    >>> x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    array([2., 4., 6.], dtype=float32)
    """

    __slots__ = ("data", "grad", "requires_grad", "_backward", "_parents", "_op", "_retain",
                 "__weakref__")
    __array_ufunc__ = None  # ndarray (op) Tensor defers to Tensor's reflected operator

    data: Any
    grad: Any
    requires_grad: bool
    _backward: Backward | None
    _parents: tuple[Tensor, ...]
    _op: str
    _retain: bool

    def __init__(self, data: ArrayLike, requires_grad: bool = False, dtype: Any = None) -> None:
        self.data = _as_array(data, dtype)
        self.grad = None
        self._backward = None
        self._parents = ()
        self._op = ""
        self._retain = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)
        if _HOOKS:
            _hooks.notify_alloc(self)

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple[builtins.int, ...]:
        """The array's shape."""
        return self.data.shape

    @property
    def dtype(self) -> Any:
        """The array's dtype (a NumPy dtype)."""
        return self.data.dtype

    @property
    def ndim(self) -> builtins.int:
        """Number of dimensions."""
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        """True for tensors created by the user (and for all tensors that need no grad)."""
        return self._backward is None

    @property
    def grad_fn(self) -> str | None:
        """Name of the operation that produced this tensor (None for leaves)."""
        return None if self._backward is None else self._op

    def size(self, dim: builtins.int | None = None) -> Any:
        """The shape, or the size of one dimension."""
        return self.data.shape if dim is None else self.data.shape[dim]

    def dim(self) -> builtins.int:
        """Number of dimensions."""
        return self.data.ndim

    def numel(self) -> builtins.int:
        """Number of elements."""
        return self.data.size

    def __len__(self) -> builtins.int:
        return len(self.data)

    def __repr__(self) -> str:
        body = xp.array2string(self.data, separator=", ", prefix="tensor(")
        extra = ""
        if self.data.dtype != _DEFAULT_FLOAT and self.data.dtype != xp.int64:
            extra += f", dtype={self.data.dtype}"
        if self._backward is not None:
            extra += f", grad_fn=<{self._op}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        """``np.asarray(t)`` gives the data (a copy only if a dtype change needs one)."""
        return self.data if dtype is None else self.data.astype(dtype, copy=False)

    def __hash__(self) -> builtins.int:
        return id(self)

    def __bool__(self) -> bool:
        return builtins.bool(self.data)

    def __float__(self) -> builtins.float:
        return builtins.float(self.item())

    def __int__(self) -> builtins.int:
        return builtins.int(self.item())

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(len(self.data)):
            yield self[i]

    # ------------------------------------------------------------------ leaves and grads
    def item(self) -> Scalar:
        """The single value as a Python number."""
        if self.data.size != 1:
            raise RuntimeError(
                f"a Tensor with {self.data.size} elements cannot be converted to Scalar"
            )
        return self.data.item()

    def numpy(self) -> Any:
        """The underlying ndarray (shared, not copied); like torch, refuses if grad is needed."""
        if self.requires_grad:
            raise RuntimeError(
                "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() "
                "instead."
            )
        return self.data

    def tolist(self) -> Any:
        """The data as nested Python lists."""
        return self.data.tolist()

    def detach(self) -> Tensor:
        """A new leaf sharing this tensor's data, cut from the graph."""
        t = _new(Tensor)
        t.data, t.grad, t.requires_grad = self.data, None, False
        t._backward, t._parents, t._op, t._retain = None, (), "", False
        if _HOOKS:
            _hooks.notify_alloc(t, shared=True)
        return t

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set ``requires_grad`` in place on a leaf; returns self."""
        if requires_grad and self.data.dtype not in _FLOAT_DTYPES:
            raise RuntimeError(
                f"only Tensors of floating point dtype can require gradients (got {self.dtype})"
            )
        if not requires_grad and self._backward is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf variables")
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> None:
        """Keep ``.grad`` on this non-leaf tensor after backward."""
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        self._retain = True

    def zero_(self) -> Tensor:
        """Fill the data with zeros in place; returns self."""
        self.data[...] = 0
        return self

    def backward(self, gradient: ArrayLike | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) · gradient into every leaf's ``.grad``.

        ``gradient`` defaults to 1 for a single-element tensor. Intermediate gradients are
        freed; the graph is freed unless ``retain_graph=True``.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "element 0 of tensors does not require grad and does not have a grad_fn"
            )
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs (shape is "
                    f"{self.shape}); pass gradient= to backward()"
                )
            g = xp.ones_like(self.data)
        else:
            g = gradient.data if isinstance(gradient, Tensor) else xp.asarray(gradient)
            if g.shape != self.data.shape:
                raise RuntimeError(
                    f"gradient has shape {g.shape} but the tensor has shape {self.data.shape}"
                )
            g = g.astype(self.data.dtype, copy=False)
        _run_backward(self, g, retain_graph)

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other: Tensor | ArrayLike) -> Tensor:
        """a + b with broadcasting; backward: ā = ȳ, b̄ = ȳ, each summed back to its shape."""
        if isinstance(other, Tensor):
            a, b = self.data, other.data
            ash, bsh = a.shape, b.shape

            def _add_backward(g: Any) -> tuple[Any, ...]:
                return _unbroadcast(g, ash), _unbroadcast(g, bsh)

            return _make(a + b, (self, other), _add_backward, "AddBackward")
        if isinstance(other, _PY_SCALARS) or isinstance(other, xp.generic):
            return _make(self.data + _scalar(other), (self,), _identity_backward, "AddBackward")
        return self.__add__(Tensor(other))

    __radd__ = __add__

    def __sub__(self, other: Tensor | ArrayLike) -> Tensor:
        """a − b with broadcasting; backward: ā = ȳ, b̄ = −ȳ."""
        if isinstance(other, Tensor):
            a, b = self.data, other.data
            ash, bsh = a.shape, b.shape

            def _sub_backward(g: Any) -> tuple[Any, ...]:
                return _unbroadcast(g, ash), _unbroadcast(-g, bsh)

            return _make(a - b, (self, other), _sub_backward, "SubBackward")
        if isinstance(other, _PY_SCALARS) or isinstance(other, xp.generic):
            return _make(self.data - _scalar(other), (self,), _identity_backward, "SubBackward")
        return self.__sub__(Tensor(other))

    def __rsub__(self, other: ArrayLike) -> Tensor:
        """s − a for a scalar s; backward: ā = −ȳ."""
        if isinstance(other, _PY_SCALARS) or isinstance(other, xp.generic):
            return _make(_scalar(other) - self.data, (self,), _neg_backward, "RsubBackward")
        return Tensor(other).__sub__(self)

    def __mul__(self, other: Tensor | ArrayLike) -> Tensor:
        """a · b elementwise with broadcasting; backward: ā = ȳ · b, b̄ = ȳ · a."""
        if isinstance(other, Tensor):
            a, b = self.data, other.data
            ra, rb = self.requires_grad, other.requires_grad

            def _mul_backward(g: Any) -> tuple[Any, ...]:
                return (_unbroadcast(g * b, a.shape) if ra else None,
                        _unbroadcast(g * a, b.shape) if rb else None)

            return _make(a * b, (self, other), _mul_backward, "MulBackward")
        if isinstance(other, _PY_SCALARS) or isinstance(other, xp.generic):
            s = _scalar(other)

            def _mul_scalar_backward(g: Any) -> tuple[Any, ...]:
                return (g * s,)

            return _make(self.data * s, (self,), _mul_scalar_backward, "MulBackward")
        return self.__mul__(Tensor(other))

    __rmul__ = __mul__

    def __truediv__(self, other: Tensor | ArrayLike) -> Tensor:
        """a / b with broadcasting; backward: ā = ȳ / b, b̄ = −ȳ · a / b²."""
        if isinstance(other, Tensor):
            a, b = self.data, other.data
            ra, rb = self.requires_grad, other.requires_grad
            out = a / b

            def _div_backward(g: Any) -> tuple[Any, ...]:
                # d(a/b)/da = 1/b ; d(a/b)/db = -a/b² = -out/b
                gb = g / b
                return (_unbroadcast(gb, a.shape) if ra else None,
                        _unbroadcast(-gb * out, b.shape) if rb else None)

            return _make(out, (self, other), _div_backward, "DivBackward")
        if isinstance(other, _PY_SCALARS) or isinstance(other, xp.generic):
            s = _scalar(other)

            def _div_scalar_backward(g: Any) -> tuple[Any, ...]:
                return (g / s,)

            return _make(self.data / s, (self,), _div_scalar_backward, "DivBackward")
        return self.__truediv__(Tensor(other))

    def __rtruediv__(self, other: ArrayLike) -> Tensor:
        """s / a for a scalar s; backward: ā = −ȳ · s / a²."""
        if isinstance(other, _PY_SCALARS) or isinstance(other, xp.generic):
            a = self.data
            out = _scalar(other) / a

            def _rdiv_backward(g: Any) -> tuple[Any, ...]:
                return (-g * out / a,)  # d(s/a)/da = -s/a² = -out/a

            return _make(out, (self,), _rdiv_backward, "DivBackward")
        return Tensor(other).__truediv__(self)

    def __neg__(self) -> Tensor:
        """−a; backward: ā = −ȳ."""
        return _make(-self.data, (self,), _neg_backward, "NegBackward")

    def __pos__(self) -> Tensor:
        return self

    def __pow__(self, exponent: Tensor | Scalar) -> Tensor:
        """aᵖ; backward: ā = ȳ · p aᵖ⁻¹ (and p̄ = ȳ · aᵖ log a for a tensor exponent)."""
        a = self.data
        if isinstance(exponent, Tensor):
            b = exponent.data
            ra, rb = self.requires_grad, exponent.requires_grad
            out = a**b

            def _pow_backward(g: Any) -> tuple[Any, ...]:
                # d(a^b)/da = b a^(b-1) ; d(a^b)/db = a^b log a
                return (_unbroadcast(g * b * a ** (b - 1), a.shape) if ra else None,
                        _unbroadcast(g * out * xp.log(a), b.shape) if rb else None)

            return _make(out, (self, exponent), _pow_backward, "PowBackward")
        p = _scalar(exponent)
        if p == 2:  # x*x is ~100x faster than np.power for small integer powers
            def _square_backward(g: Any) -> tuple[Any, ...]:
                return (g * (2 * a),)

            return _make(a * a, (self,), _square_backward, "PowBackward")

        def _pow_scalar_backward(g: Any) -> tuple[Any, ...]:
            return (g * (p * a ** (p - 1)),)

        out = a * a * a if p == 3 else a**p
        return _make(out, (self,), _pow_scalar_backward, "PowBackward")

    def __rpow__(self, base: Scalar) -> Tensor:
        """sᵃ for a scalar base s; backward: ā = ȳ · sᵃ log s."""
        s = _scalar(base)
        out = s**self.data

        def _rpow_backward(g: Any) -> tuple[Any, ...]:
            return (g * out * math.log(s),)  # d(s^x)/dx = s^x log s (a weak Python float)

        return _make(out, (self,), _rpow_backward, "PowBackward")

    def __matmul__(self, other: Tensor) -> Tensor:
        """Matrix product with NumPy/torch semantics: 1-D operands, batched, broadcast."""
        if not isinstance(other, Tensor):
            other = Tensor(other)
        a, b = self.data, other.data
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
        return Tensor(other).__matmul__(self)

    def matmul(self, other: Tensor) -> Tensor:
        """Same as ``self @ other``."""
        return self.__matmul__(other)

    # comparisons give boolean tensors without gradients
    def _compare(self, other: Any, fn: Callable[[Any, Any], Any]) -> Tensor:
        return _make(fn(self.data, other.data if isinstance(other, Tensor) else other), (),
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

    # ------------------------------------------------------------------ elementwise
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
        m = mask.data if isinstance(mask, Tensor) else xp.asarray(mask)
        v = value.item() if isinstance(value, Tensor) else _scalar(value)
        out = xp.where(m, v, self.data)

        def _masked_fill_backward(g: Any) -> tuple[Any, ...]:
            return (xp.where(m, 0, g),)

        return _make(out, (self,), _masked_fill_backward, "MaskedFillBackward")

    def to(self, dtype: Any) -> Tensor:
        """Cast to ``dtype``; the gradient is cast back to this tensor's dtype."""
        src = self.data.dtype
        if xp.dtype(dtype) == src:
            return self

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

    # ------------------------------------------------------------------ reductions
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

    def argmax(self, dim: builtins.int | None = None, keepdim: builtins.bool = False) -> Tensor:
        """Index of the maximum (int64, no gradient)."""
        return _make(xp.argmax(self.data, axis=dim, keepdims=keepdim), (), None, "")

    def argmin(self, dim: builtins.int | None = None, keepdim: builtins.bool = False) -> Tensor:
        """Index of the minimum (int64, no gradient)."""
        return _make(xp.argmin(self.data, axis=dim, keepdims=keepdim), (), None, "")

    # ------------------------------------------------------------------ shapes
    def reshape(self, *shape: Any) -> Tensor:
        """Same data in a new shape (``-1`` infers one size). ``view`` is an alias."""
        if len(shape) == 1 and not isinstance(shape[0], builtins.int):
            shape = tuple(shape[0])
        a = self.data
        orig = a.shape

        def _reshape_backward(g: Any) -> tuple[Any, ...]:
            return (g.reshape(orig),)

        return _make(a.reshape(shape), (self,), _reshape_backward, "ViewBackward")

    view = reshape

    def flatten(self, start_dim: builtins.int = 0, end_dim: builtins.int = -1) -> Tensor:
        """Merge dimensions ``start_dim..end_dim`` into one."""
        shape = self.data.shape
        if not shape:
            return self.reshape(1)
        s, e = start_dim % len(shape), end_dim % len(shape)
        return self.reshape(*shape[:s], -1, *shape[e + 1:])

    def transpose(self, dim0: builtins.int, dim1: builtins.int) -> Tensor:
        """Swap two dimensions (a view); backward swaps them back."""
        def _transpose_backward(g: Any) -> tuple[Any, ...]:
            return (g.swapaxes(dim0, dim1),)

        return _make(self.data.swapaxes(dim0, dim1), (self,), _transpose_backward,
                     "TransposeBackward")

    def permute(self, *dims: Any) -> Tensor:
        """Reorder dimensions (a view); backward applies the inverse permutation."""
        if len(dims) == 1 and not isinstance(dims[0], builtins.int):
            dims = tuple(dims[0])
        inverse = tuple(xp.argsort(dims))

        def _permute_backward(g: Any) -> tuple[Any, ...]:
            return (g.transpose(inverse),)

        return _make(self.data.transpose(dims), (self,), _permute_backward, "PermuteBackward")

    @property
    def T(self) -> Tensor:
        """All dimensions reversed (the matrix transpose for 2-D)."""
        def _t_backward(g: Any) -> tuple[Any, ...]:
            return (g.T,)

        return _make(self.data.T, (self,), _t_backward, "TBackward")

    def unsqueeze(self, dim: builtins.int) -> Tensor:
        """Insert a size-1 dimension at ``dim``."""
        return self.reshape(xp.expand_dims(self.data, dim).shape)

    def squeeze(self, dim: builtins.int | None = None) -> Tensor:
        """Drop size-1 dimensions (only ``dim`` if given; a no-op if its size is not 1)."""
        shape = self.data.shape
        if dim is None:
            new = tuple(n for n in shape if n != 1)
        elif shape and shape[dim] == 1:
            d = dim % len(shape)
            new = shape[:d] + shape[d + 1:]
        else:
            return self
        return self.reshape(new)

    def expand(self, *sizes: Any) -> Tensor:
        """Broadcast to ``sizes`` (``-1`` keeps a size) without copying."""
        if len(sizes) == 1 and not isinstance(sizes[0], builtins.int):
            sizes = tuple(sizes[0])
        a = self.data
        lead = len(sizes) - a.ndim
        shape = tuple(a.shape[i - lead] if n == -1 else n for i, n in enumerate(sizes))
        orig = a.shape

        def _expand_backward(g: Any) -> tuple[Any, ...]:
            return (_unbroadcast(g, orig),)

        return _make(xp.broadcast_to(a, shape), (self,), _expand_backward, "ExpandBackward")

    def contiguous(self) -> Tensor:
        """A C-contiguous tensor (self if already contiguous)."""
        if self.data.flags.c_contiguous:
            return self
        return _make(xp.ascontiguousarray(self.data), (self,), _identity_backward,
                     "CloneBackward")

    def __getitem__(self, idx: Any) -> Tensor:
        """Basic (views) and advanced indexing; repeated indices accumulate gradient."""
        idx = _unwrap_index(idx)
        a = self.data
        shape = a.shape
        basic = _is_basic_index(idx)

        def _index_backward(g: Any) -> tuple[Any, ...]:
            if basic:  # a slice of zeros; the engine places it only when it must
                return (_SliceGrad(idx, g, shape),)
            grad = xp.zeros(shape, dtype=g.dtype)
            if (isinstance(idx, _ndarray) and idx.dtype.kind == "b"):
                grad[idx] = g  # each element picked at most once
            elif isinstance(idx, _ndarray) and idx.dtype.kind in "iu":
                _scatter_add_rows(grad, idx, g)  # embedding lookup
            else:
                xp.add.at(grad, idx, g)
            return (grad,)

        return _make(a[idx], (self,), _index_backward, "IndexBackward")

    def __setitem__(self, idx: Any, value: Any) -> None:
        if self.requires_grad or (isinstance(value, Tensor) and value.requires_grad):
            raise RuntimeError(
                "in-place assignment into a tensor that is part of a graph is not supported; "
                "build a new tensor (e.g. with where/masked_fill/cat) instead"
            )
        self.data[_unwrap_index(idx)] = value.data if isinstance(value, Tensor) else value

    def gather(self, dim: builtins.int, index: Tensor | ArrayLike) -> Tensor:
        """``out[i][j] = self[i][index[i][j]]`` for ``dim=1`` (any dim, as torch.gather)."""
        idx = index.data if isinstance(index, Tensor) else xp.asarray(index)
        a = self.data
        shape = a.shape
        d = dim % a.ndim
        if idx.shape[:d] + idx.shape[d + 1:] != shape[:d] + shape[d + 1:]:
            a = a[tuple(slice(0, n) if i != d else slice(None) for i, n in enumerate(idx.shape))]

        def _gather_backward(g: Any) -> tuple[Any, ...]:
            grad = xp.zeros(shape, dtype=g.dtype)
            if idx.shape[d] == 1:  # one pick per slice: no repeats, a plain put suffices
                sub = grad[tuple(slice(0, n) if i != d else slice(None)
                                 for i, n in enumerate(idx.shape))]
                xp.put_along_axis(sub, idx, g, axis=d)
            else:
                full = list(xp.ix_(*[xp.arange(n) for n in idx.shape]))
                full[d] = idx
                xp.add.at(grad, tuple(full), g)
            return (grad,)

        return _make(xp.take_along_axis(a, idx, axis=d), (self,), _gather_backward,
                     "GatherBackward")

    def split(self, split_size_or_sections: builtins.int | Sequence[builtins.int],
              dim: builtins.int = 0) -> tuple[Tensor, ...]:
        """Split into chunks of ``split_size`` (last may be smaller) or of the given sizes."""
        n = self.data.shape[dim]
        if isinstance(split_size_or_sections, builtins.int):
            sizes = [split_size_or_sections] * (n // split_size_or_sections)
            if n % split_size_or_sections:
                sizes.append(n % split_size_or_sections)
        else:
            sizes = list(split_size_or_sections)
        lead = (slice(None),) * (dim % self.data.ndim)
        out, start = [], 0
        for s in sizes:
            out.append(self[lead + (slice(start, start + s),)])
            start += s
        return tuple(out)

    def chunk(self, chunks: builtins.int, dim: builtins.int = 0) -> tuple[Tensor, ...]:
        """Split into ``chunks`` nearly equal pieces along ``dim``."""
        n = self.data.shape[dim]
        return self.split(-(-n // chunks), dim)


def _run_backward(root: Tensor, gradient: Any, retain_graph: bool) -> None:
    """Reverse-mode sweep: topological order, then one local backward per node."""
    # Iterative depth-first post-order: a node is appended after all its inputs.
    topo: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            topo.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for p in node._parents:
            if p.requires_grad and id(p) not in seen:
                stack.append((p, False))

    grads: dict[int, Any] = {id(root): gradient}
    # ids of gradient arrays the engine allocated itself and that sit in `grads` exactly once:
    # those may be updated in place or handed to a leaf without a copy.
    owned: set[int] = set()
    for node in reversed(topo):
        g = grads.pop(id(node), None)
        if g is not None:
            if type(g) is _SliceGrad:
                g = g.materialize()
                owned.add(id(g))
            fresh = id(g) in owned
            owned.discard(id(g))
        backward = node._backward
        if backward is None:  # a leaf: accumulate into .grad
            if g is not None:
                if g.dtype != node.data.dtype:
                    g, fresh = g.astype(node.data.dtype), True
                if node.grad is None:
                    # a private array: g may be shared with another leaf, be a view,
                    # or be an array that a Function or the caller still holds
                    node.grad = g if fresh else g.copy()
                else:
                    node.grad = node.grad + g
            continue
        parents = node._parents
        if not retain_graph:
            node._backward = _graph_freed  # drops the closure and the arrays it saved
            node._parents = ()
        if g is None:
            continue
        if node._retain:
            node.grad = g.astype(node.data.dtype, copy=True)
        for p, pg in zip(parents, backward(g)):
            if pg is None or not p.requires_grad:
                continue
            k = id(p)
            prev = grads.get(k)
            if prev is None:
                grads[k] = pg
                continue
            # a second consumer: sum the gradients (in place when the engine owns `prev`)
            if id(prev) in owned:
                owned.discard(id(prev))  # re-added below; its id must not outlive it
                mine = True
            else:
                mine = False
            if type(pg) is _SliceGrad:
                if type(prev) is _SliceGrad:
                    prev = prev.materialize()
                elif not mine:
                    prev = prev.copy()
                prev[pg.index] += pg.grad
            elif type(prev) is _SliceGrad:
                acc = pg.copy()
                acc[prev.index] += prev.grad
                prev = acc
            elif mine:
                prev += pg
            else:
                prev = prev + pg
            owned.add(id(prev))
            grads[k] = prev


# --------------------------------------------------------------------------- functions
def tensor(data: ArrayLike, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """Like ``torch.tensor``: a new leaf tensor from data (a copy of an array)."""
    if isinstance(data, Tensor):
        data = data.data
    arr = xp.array(data, dtype=dtype) if isinstance(data, _ndarray) else _as_array(data, dtype)
    return Tensor(arr, requires_grad=requires_grad)


def zeros(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """A float32 (by default) tensor of zeros, like ``torch.zeros``."""
    if len(size) == 1 and not isinstance(size[0], builtins.int):
        size = tuple(size[0])
    return Tensor(xp.zeros(size, dtype=dtype or _DEFAULT_FLOAT), requires_grad=requires_grad)


def ones(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """A float32 (by default) tensor of ones, like ``torch.ones``."""
    if len(size) == 1 and not isinstance(size[0], builtins.int):
        size = tuple(size[0])
    return Tensor(xp.ones(size, dtype=dtype or _DEFAULT_FLOAT), requires_grad=requires_grad)


def zeros_like(t: Tensor, requires_grad: bool = False) -> Tensor:
    """Zeros with the shape and dtype of ``t``."""
    return Tensor(xp.zeros_like(t.data), requires_grad=requires_grad)


def ones_like(t: Tensor, requires_grad: bool = False) -> Tensor:
    """Ones with the shape and dtype of ``t``."""
    return Tensor(xp.ones_like(t.data), requires_grad=requires_grad)


def cat(tensors: Iterable[Tensor], dim: builtins.int = 0) -> Tensor:
    """Concatenate along an existing dimension; the gradient is split back."""
    parents = tuple(tensors)
    arrays = [t.data for t in parents]
    out = xp.concatenate(arrays, axis=dim)
    bounds = xp.cumsum([a.shape[dim] for a in arrays])[:-1]

    def _cat_backward(g: Any) -> tuple[Any, ...]:
        return tuple(xp.split(g, bounds, axis=dim))

    return _make(out, parents, _cat_backward, "CatBackward")


def stack(tensors: Iterable[Tensor], dim: builtins.int = 0) -> Tensor:
    """Stack along a new dimension; each input gets its slice of the gradient."""
    parents = tuple(tensors)
    out = xp.stack([t.data for t in parents], axis=dim)
    d = dim % out.ndim

    def _stack_backward(g: Any) -> tuple[Any, ...]:
        return tuple(g.take(i, axis=d) for i in range(len(parents)))

    return _make(out, parents, _stack_backward, "StackBackward")


def where(condition: Tensor | ArrayLike, input: Tensor | Scalar, other: Tensor | Scalar
          ) -> Tensor:
    """Elementwise ``input if condition else other`` with broadcasting (torch.where)."""
    c = condition.data if isinstance(condition, Tensor) else xp.asarray(condition)
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        return Tensor(xp.where(c, input, other))
    x = input.data if isinstance(input, Tensor) else _scalar(input)
    y = other.data if isinstance(other, Tensor) else _scalar(other)
    out = xp.where(c, x, y)
    parents = tuple(t for t in (input, other) if isinstance(t, Tensor))
    # shapes and whether each is a tensor, so the backward returns grads in parent order
    which = tuple(i for i, t in enumerate((input, other)) if isinstance(t, Tensor))

    def _where_backward(g: Any) -> tuple[Any, ...]:
        grads = []
        for i, t in zip(which, parents):
            gi = xp.where(c, g, 0) if i == 0 else xp.where(c, 0, g)
            grads.append(_unbroadcast(gi, t.data.shape))
        return tuple(grads)

    return _make(out, parents, _where_backward, "WhereBackward")
