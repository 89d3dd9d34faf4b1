"""Gradient checking by central finite differences (in float64).

The central difference

    ∂f/∂x_i ≈ (f(x + ε e_i) − f(x − ε e_i)) / (2ε)

has truncation error O(ε²) (the ε terms of the two Taylor expansions cancel), against
O(ε) for the one-sided difference; in float64 with ε = 1e-6 the rounding error is about
1e-16·|f|/ε ≈ 1e-10, so analytic and numerical gradients agree to ~1e-6 or better.

``gradcheck`` builds the whole Jacobian both ways (one backward pass per output element,
two forward passes per input element): right for single ops on small inputs.
``gradcheck_directional`` checks one directional derivative per random direction d,
∇L·d ≈ (L(x + εd) − L(x − εd)) / (2ε), two forward passes each, whatever the number of
parameters: right for whole models.

Reference: Griewank & Walther, *Evaluating Derivatives* (2008), ch. 1; PyTorch's
``torch.autograd.gradcheck``. Chapter: stage 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from spiral.autograd.tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree (the message names the worst element)."""


def _checked_inputs(inputs: Sequence[Tensor]) -> list[Tensor]:
    checked = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    for t in checked:
        if t.data.dtype != np.float64:
            raise ValueError(
                f"gradcheck needs float64 inputs (got {t.data.dtype}); float32 rounding error "
                "swamps the finite difference. Use Tensor(x, dtype=np.float64)."
            )
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")
    return checked


def _output(fn: Callable[..., Any], inputs: Sequence[Any]) -> Tensor:
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    return out


def gradcheck(fn: Callable[..., Tensor], inputs: Sequence[Any], eps: float = 1e-6,
              atol: float = 1e-6, rtol: float = 1e-5) -> bool:
    """Compare ``fn``'s full Jacobian from backward with central differences.

    Returns True, or raises ``GradcheckError`` naming the worst element. Inputs that
    require grad must be float64; their ``.grad`` is restored afterwards.

    >>> x = Tensor(np.array([0.5, -1.0]), requires_grad=True)
    >>> gradcheck(lambda t: (t * t).tanh(), [x])
    True
    """
    checked = _checked_inputs(inputs)
    saved_grads = [t.grad for t in checked]
    try:
        out = _output(fn, inputs)
        m = out.data.size
        analytic = [np.zeros((m, t.data.size)) for t in checked]  # (outputs, inputs)
        if out.requires_grad:
            for j in range(m):
                for t in checked:
                    t.grad = None
                seed = np.zeros(m, dtype=out.data.dtype)
                seed[j] = 1.0
                out.backward(seed.reshape(out.shape), retain_graph=True)
                for k, t in enumerate(checked):
                    if t.grad is not None:
                        if t.grad.shape != t.data.shape:
                            raise GradcheckError(
                                f"gradient of input {k} has shape {t.grad.shape}, "
                                f"expected {t.data.shape}"
                            )
                        analytic[k][j] = t.grad.ravel()
        numeric = [np.zeros((m, t.data.size)) for t in checked]
        with no_grad():
            for k, t in enumerate(checked):
                for i in range(t.data.size):
                    pos = np.unravel_index(i, t.data.shape)
                    orig = t.data[pos]
                    t.data[pos] = orig + eps
                    f_plus = np.array(_output(fn, inputs).data, dtype=np.float64).ravel()
                    t.data[pos] = orig - eps
                    f_minus = np.array(_output(fn, inputs).data, dtype=np.float64).ravel()
                    t.data[pos] = orig
                    numeric[k][:, i] = (f_plus - f_minus) / (2 * eps)
    finally:
        for t, g in zip(checked, saved_grads):
            t.grad = g

    for k, t in enumerate(checked):
        a, n = analytic[k], numeric[k]
        excess = np.abs(a - n) - (atol + rtol * np.abs(n))
        if excess.size and (excess.max() > 0 or not np.isfinite(a).all()):
            flat = int(np.argmax(np.where(np.isfinite(excess), excess, np.inf)))
            j, i = (int(v) for v in np.unravel_index(flat, a.shape))
            out_pos = np.unravel_index(j, out.shape) if out.shape else ()
            in_pos = np.unravel_index(i, t.shape) if t.shape else ()
            raise GradcheckError(
                f"gradcheck failed for input {k} (shape {t.shape}): d out{tuple(map(int, out_pos))}"
                f" / d x{tuple(map(int, in_pos))}: analytic {a[j, i]:.10g} vs numerical "
                f"{n[j, i]:.10g} (|diff| {abs(a[j, i] - n[j, i]):.3g} > atol {atol:g} + rtol "
                f"{rtol:g} * |numerical|); {int((excess > 0).sum())} of {a.size} entries fail"
            )
    return True


def gradcheck_directional(fn: Callable[..., Tensor], inputs: Sequence[Any], eps: float = 1e-6,
                          atol: float = 1e-6, rtol: float = 1e-5, n_directions: int = 3,
                          rng: np.random.Generator | None = None) -> bool:
    """Check ∇L·d against a central difference along random unit directions d.

    ``L`` is ``fn(*inputs)`` if it is a scalar, else its dot product with a fixed random
    cotangent. Cost: one backward and ``2 * n_directions`` forward passes, so it scales
    to whole models (pass the model's parameters as ``inputs``).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    checked = _checked_inputs(inputs)
    saved_grads = [t.grad for t in checked]
    try:
        out = _output(fn, inputs)
        cotangent = np.ones(()) if out.data.size == 1 else rng.standard_normal(out.shape)

        def loss() -> float:
            return float((np.asarray(_output(fn, inputs).data, dtype=np.float64)
                          * cotangent).sum())

        for t in checked:
            t.grad = None
        if out.requires_grad:
            out.backward(np.broadcast_to(cotangent, out.shape).astype(out.data.dtype))
        grads = [np.zeros(t.shape) if t.grad is None else t.grad for t in checked]
        with no_grad():
            for r in range(n_directions):
                dirs = [rng.standard_normal(t.shape) for t in checked]
                norm = np.sqrt(sum(float((d * d).sum()) for d in dirs))
                dirs = [d / norm for d in dirs]
                analytic = sum(float((g * d).sum()) for g, d in zip(grads, dirs))
                originals = [t.data.copy() for t in checked]
                for t, d in zip(checked, dirs):
                    t.data += eps * d
                f_plus = loss()
                for t, o, d in zip(checked, originals, dirs):
                    t.data[...] = o - eps * d
                f_minus = loss()
                for t, o in zip(checked, originals):
                    t.data[...] = o
                numeric = (f_plus - f_minus) / (2 * eps)
                if not abs(analytic - numeric) <= atol + rtol * abs(numeric):
                    raise GradcheckError(
                        f"directional gradcheck failed on direction {r}: analytic "
                        f"{analytic:.10g} vs numerical {numeric:.10g} "
                        f"(|diff| {abs(analytic - numeric):.3g})"
                    )
    finally:
        for t, g in zip(checked, saved_grads):
            t.grad = g
    return True
