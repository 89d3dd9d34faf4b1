"""Function: the extension point for operations with a hand-written backward pass.

Subclass ``Function`` with two static methods that work on plain arrays:

    forward(ctx, *args) -> array          y = f(x₁, …, xₙ)
    backward(ctx, grad_output) -> tuple   (x̄₁, …, x̄ₙ) = (J₁ᵀ ȳ, …, Jₙᵀ ȳ)

and call ``MyOp.apply(*args)``. Tensor arguments are unwrapped to their arrays, the result is
wrapped in a ``Tensor`` and, when an input requires a gradient, recorded in the graph. This
is how stage 3's fused operations (softmax, cross-entropy, layer norm, attention) replace a
chain of primitives by one node whose backward was derived by hand: fewer nodes, fewer
stored intermediates, better numerics.

``backward`` returns one entry per positional input of ``forward`` (``None`` for
non-tensor arguments or inputs that need no gradient). It must not modify ``grad_output``
in place. ``ctx.needs_input_grad`` says which inputs need one, as in PyTorch.

Reference: PyTorch's ``torch.autograd.Function`` (same names and contract).
Chapter: stage 2 (the engine), used from stage 3 on.
"""

from __future__ import annotations

from typing import Any

from spiral.autograd import engine as _engine
from spiral.autograd.tensor import Tensor, _make


class FunctionCtx:
    """Scratch space shared by one call's ``forward`` and ``backward``."""

    saved_tensors: tuple[Any, ...]
    needs_input_grad: tuple[bool, ...]

    def __init__(self) -> None:
        self.saved_tensors = ()
        self.needs_input_grad = ()

    def save_for_backward(self, *arrays: Any) -> None:
        """Keep arrays for ``backward`` (read them back from ``ctx.saved_tensors``)."""
        self.saved_tensors = arrays


class Function:
    """Base class for differentiable operations with a hand-derived backward.

    >>> import numpy as np
    >>> class Cube(Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x * x * x
    ...     @staticmethod
    ...     def backward(ctx, grad_output):
    ...         (x,) = ctx.saved_tensors
    ...         return (3 * x * x * grad_output,)
    >>> x = Tensor([2.0], requires_grad=True)
    >>> Cube.apply(x).sum().backward()
    >>> x.grad
    array([12.], dtype=float32)
    """

    @staticmethod
    def forward(ctx: FunctionCtx, *args: Any) -> Any:
        """Compute the output array from input arrays (and any non-tensor arguments)."""
        raise NotImplementedError

    @staticmethod
    def backward(ctx: FunctionCtx, grad_output: Any) -> Any:
        """Return one gradient (array or None) per positional input of ``forward``."""
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any) -> Tensor:
        """Run ``forward`` on the inputs' arrays and record the node for ``backward``."""
        ctx = _new_ctx(FunctionCtx)
        ctx.saved_tensors = ()
        arrays = []
        needs = []
        parents = []
        positions = []
        any_grad = False
        for i, a in enumerate(args):  # one pass: unwrap, and note who needs a gradient
            if isinstance(a, Tensor):
                arrays.append(a.data)
                r = a.requires_grad
                needs.append(r)
                any_grad = any_grad or r
                parents.append(a)
                positions.append(i)
            else:
                arrays.append(a)
                needs.append(False)
        ctx.needs_input_grad = tuple(needs)
        out = cls.forward(ctx, *arrays)
        if not (any_grad and _engine._grad_enabled):
            return _make(out, (), None, cls.__name__)
        n_inputs = len(args)
        user_backward = cls.backward
        name = cls.__name__

        def _function_backward(g: Any) -> tuple[Any, ...]:
            grads = user_backward(ctx, g)
            if type(grads) is not tuple:
                grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
            if len(grads) != n_inputs:
                raise RuntimeError(
                    f"{name}.backward returned {len(grads)} gradients, expected {n_inputs} "
                    "(one per positional input of forward; use None for non-tensors)"
                )
            picked = []
            for i, p in zip(positions, parents):
                gi = grads[i]
                if gi is not None and needs[i] and gi.shape != p.data.shape:
                    raise RuntimeError(
                        f"{name}.backward returned a gradient of shape {gi.shape} for input "
                        f"{i}, whose shape is {p.data.shape}"
                    )
                picked.append(gi)
            return tuple(picked)

        t = _make(out, tuple(parents), _function_backward, name + "Backward")
        if t.requires_grad and t.data.dtype not in _engine._FLOAT_DTYPES:
            t.requires_grad, t._parents, t._backward = False, (), None
        return t


_new_ctx = object.__new__
