"""spiral.autograd: automatic differentiation, the engine every model in the book trains on.

- ``Tensor`` (``tensor.py``): reverse-mode autodiff on NumPy arrays with PyTorch's names;
  the graph machinery and the backward sweep are in ``engine.py``, the ops (each with its
  local backward) in ``ops_arith``, ``ops_elementwise``, ``ops_reduce`` and ``ops_shape``.
- ``Function`` (``function.py``): the extension point for ops with a hand-derived backward.
- ``gradcheck`` / ``gradcheck_directional`` (``gradcheck.py``): central finite differences.
- ``hooks``: allocation callbacks for the memory profiler.
- ``value.py`` (scalar engine) and ``forward.py`` (dual numbers) are imported directly.

Chapter: stage 2 (automatic differentiation).
"""

from __future__ import annotations

from spiral.autograd import hooks
from spiral.autograd.function import Function, FunctionCtx
from spiral.autograd.gradcheck import GradcheckError, gradcheck, gradcheck_directional
from spiral.autograd.tensor import (
    MaxResult,
    Tensor,
    cat,
    enable_grad,
    is_grad_enabled,
    no_grad,
    ones,
    ones_like,
    register_float_dtype,
    stack,
    tensor,
    where,
    xp,
    zeros,
    zeros_like,
)

__all__ = [
    "Function",
    "FunctionCtx",
    "GradcheckError",
    "MaxResult",
    "Tensor",
    "cat",
    "enable_grad",
    "gradcheck",
    "gradcheck_directional",
    "hooks",
    "is_grad_enabled",
    "no_grad",
    "ones",
    "ones_like",
    "register_float_dtype",
    "stack",
    "tensor",
    "where",
    "xp",
    "zeros",
    "zeros_like",
]
