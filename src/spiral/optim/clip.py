"""Gradient clipping by global norm, as ``torch.nn.utils.clip_grad_norm_``.

All gradients are treated as one long vector g = (g₁, …, g_k). Its p-norm

    ‖g‖_p = (Σᵢ ‖gᵢ‖_p^p)^(1/p)        (‖g‖_∞ = maxᵢ ‖gᵢ‖_∞)

is computed, and every gradient is multiplied in place by min(1, max_norm / (‖g‖_p + 10⁻⁶)),
so the direction of the update is kept and only its length is capped. The total norm from
*before* clipping is returned (it is what training loops log).

Reference: Pascanu, Mikolov & Bengio, *On the difficulty of training recurrent neural
networks* (2013). Chapter: stage 5 (optimization theory and our optimizers); stage 3
measures why it is needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np


def grad_norm(parameters: Any | Iterable[Any], norm_type: float = 2.0) -> float:
    """The p-norm of all gradients taken together (parameters without a gradient skipped)."""
    params = [parameters] if hasattr(parameters, "grad") else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm_type = float(norm_type)
    if math.isinf(norm_type):
        return float(max(float(np.max(np.abs(g))) if g.size else 0.0 for g in grads))
    if norm_type == 2.0:
        # vdot of the flattened gradient with itself: one BLAS call, no temporaries
        total = sum(float(np.vdot(g.ravel(), g.ravel())) for g in grads)
        return math.sqrt(total)
    total = sum(float(np.sum(np.abs(g) ** norm_type)) for g in grads)
    return float(total ** (1.0 / norm_type))


def clip_grad_norm_(parameters: Any | Iterable[Any], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale all gradients in place so their global ``norm_type``-norm is at most ``max_norm``.

    Returns the total norm before clipping, as a Python float. Like PyTorch, the scale is
    ``max_norm / (total + 1e-6)`` clamped to 1, and a non-finite total raises only when
    ``error_if_nonfinite`` is set (otherwise the gradients become NaN, which is visible).
    """
    params = [parameters] if hasattr(parameters, "grad") else list(parameters)
    total = grad_norm(params, norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {float(norm_type)} for gradients from "
                           "`parameters` is non-finite, so it cannot be clipped.")
    coef = min(float(max_norm) / (total + 1e-6), 1.0)
    if coef < 1.0 or not math.isfinite(total):
        for p in params:
            if p.grad is not None:
                p.grad *= coef
    return total
