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
from collections.abc import Iterator
from typing import Any

from spiral.autograd import hooks as _hooks
from spiral.autograd.engine import (  # noqa: F401  (re-exported: the chapter cites them here)
    _DEFAULT_FLOAT,
    _FLOAT_DTYPES,
    _HOOKS,
    ArrayLike,
    Scalar,
    TensorBase,
    _make,
    _ndarray,
    _new,
    _register_tensor_class,
    _run_backward,
    _SliceGrad,
    _unbroadcast,
    enable_grad,
    is_grad_enabled,
    no_grad,
    register_float_dtype,
    xp,
)
from spiral.autograd.ops_arith import ArithmeticOps
from spiral.autograd.ops_elementwise import ElementwiseOps
from spiral.autograd.ops_reduce import MaxResult, ReductionOps
from spiral.autograd.ops_shape import ShapeOps, cat, stack, where


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


# --------------------------------------------------------------------------- Tensor
class Tensor(ArithmeticOps, ElementwiseOps, ReductionOps, ShapeOps):
    """An n-dimensional array that records the operations applied to it.

    >>> x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    array([2., 4., 6.], dtype=float32)
    """

    __slots__ = ()  # the fields are in TensorBase; the ops come from the mixins

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
        if self.data.dtype not in (_DEFAULT_FLOAT, xp.dtype(xp.int64), xp.dtype(xp.bool_)):
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

    def register_post_accumulate_grad_hook(self, hook: Any) -> Any:
        """Call ``hook(self)`` once backward has accumulated this leaf's ``.grad`` (stage 13)."""
        return _hooks.register_post_accumulate_grad_hook(self, hook)

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


_register_tensor_class(Tensor)

__all__ = ["MaxResult", "Tensor", "cat", "enable_grad", "is_grad_enabled", "no_grad", "ones",
           "ones_like", "register_float_dtype", "stack", "tensor", "where", "xp", "zeros",
           "zeros_like"]
