"""The reverse-mode engine under ``Tensor``: graph nodes, grad mode, the backward sweep.

A graph node is the output tensor itself: its ``_parents`` (a tuple, so the order is
deterministic) and ``_backward``, a closure that maps the output's gradient ȳ to one
gradient per parent (a vector-Jacobian product). ``_run_backward`` sorts the graph
topologically (iteratively, so deep graphs do not hit Python's recursion limit) and applies
the chain rule in reverse, summing what each consumer sends back:

    x̄ = Σ_{y consumes x} (∂y/∂x)ᵀ ȳ

Broadcasting in the forward pass is undone by ``_unbroadcast``, which sums the gradient
over the broadcast axes so every gradient has its input's shape.

The ops themselves live in ``ops_arith``, ``ops_elementwise``, ``ops_reduce`` and
``ops_shape`` (each op's local backward right under its forward); ``tensor.py`` assembles
``Tensor`` from them. Reference: Griewank & Walther, *Evaluating Derivatives* (2008);
Paszke et al., *Automatic differentiation in PyTorch* (2017). Chapter: stage 2.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy

from spiral.autograd import hooks as _hooks

if TYPE_CHECKING:
    from spiral.autograd.tensor import Tensor

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
_GRAD_HOOKS = _hooks._GRAD_HOOKS
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


def _promote(a: Any, b: Any) -> tuple[Any, Any]:
    """Operands of different dtypes, promoted as torch does where NumPy differs: an integer or
    bool array meeting a float array takes the float's dtype (NumPy would go to float64)."""
    ka, kb = a.dtype.kind, b.dtype.kind
    if ka == "f" and kb != "f":
        return a, b.astype(a.dtype)
    if kb == "f" and ka != "f":
        return a.astype(b.dtype), b
    return a, b


def _with_scalar(a: Any, value: Any, true_div: bool = False) -> tuple[Any, Any]:
    """A Python (or NumPy) scalar operand as torch treats it: it never changes a float array's
    dtype, and a float scalar (or true division) turns an integer array into float32."""
    s = value.item() if isinstance(value, xp.generic) else value
    if (true_div or type(s) is builtins.float) and a.dtype.kind != "f":
        a = a.astype(_DEFAULT_FLOAT)
    return a, s


def _make(data: Any, parents: tuple[Any, ...], backward: Backward | None, op: str) -> Tensor:
    """Wrap an op's result; record the graph only if grad mode is on and a parent needs it."""
    t = _new(_tensor_class)
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


def _scalar(value: Any) -> Any:
    """A Python number as itself, a NumPy scalar as a Python number (so it stays 'weak')."""
    return value.item() if isinstance(value, xp.generic) else value


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


# --------------------------------------------------------------------------- the node
class TensorBase:
    """The fields of a graph node; ``Tensor`` adds the user API and the ops (mixins)."""

    __slots__ = ("data", "grad", "requires_grad", "_backward", "_parents", "_op", "_retain",
                 "__weakref__")
    __array_ufunc__ = None  # ndarray (op) Tensor defers to Tensor's reflected operator

    data: Any
    grad: Any
    requires_grad: bool
    _backward: Backward | None
    _parents: tuple[TensorBase, ...]
    _op: str
    _retain: bool


# The concrete class that `_make` instantiates; tensor.py registers `Tensor` at import.
_tensor_class: Any = None


def _register_tensor_class(cls: type) -> None:
    global _tensor_class
    _tensor_class = cls


def as_tensor(value: Any) -> Tensor:
    """A constant (no-grad) Tensor for a non-Tensor operand (array, list, number)."""
    return _tensor_class(value)


def _run_backward(root: TensorBase, gradient: Any, retain_graph: bool) -> None:
    """Reverse-mode sweep: topological order, then one local backward per node."""
    # Iterative depth-first post-order: a node is appended after all its inputs.
    topo: list[TensorBase] = []
    seen: set[int] = set()
    stack: list[tuple[TensorBase, bool]] = [(root, False)]
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
    while topo:  # popping releases each node once processed, so activations free as we go
        node = topo.pop()
        g = grads.pop(id(node), None)
        if g is not None:
            if type(g) is _SliceGrad:
                full = g.materialize()
                if _HOOKS:  # stage 11: the profiler sees gradient arrays (while g lives)
                    _hooks.notify_grads(node, (full,))
                g = full
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
                if _HOOKS:
                    _hooks.notify_grads(node, (node.grad,))
                if _GRAD_HOOKS:  # stage 13: the leaf's gradient is final
                    _hooks.run_grad_hooks(node)
            continue
        parents = node._parents
        if not retain_graph:
            node._backward = _graph_freed  # drops the closure and the arrays it saved
            node._parents = ()
        if g is None:
            continue
        if node._retain:
            node.grad = g.astype(node.data.dtype, copy=True)
        pgs = backward(g)
        if _HOOKS:
            _hooks.notify_grads(node, pgs)
        for p, pg in zip(parents, pgs):
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
            if _HOOKS:  # reported before the old sum is dropped: both are alive here
                _hooks.notify_grads(p, (prev,))
            owned.add(id(prev))
            grads[k] = prev
        del pgs  # drop the tuple now: it must not keep this node's gradients alive into
        # the next node's backward (a zip over backward(g) never held them that long)
