"""autocast: which operations run in low precision, and the float32 master weights.

The policy (the same split as PyTorch's autocast op lists, and for the same reasons):

* LOWER precision — ``linear`` (every matmul, the LM head included) and
  ``scaled_dot_product_attention``: their inputs (activations AND a low-precision copy of
  the float32 master weights) are rounded to float16/bfloat16 and so is their output; the
  products are ACCUMULATED in float32, which is what tensor cores do (fp16 × fp16 products
  summed in an fp32 accumulator). Matmuls are ≥ 95 % of the FLOPs, so this is where the
  speed and the memory of activations come from.
* FLOAT32 — softmax, log-softmax, cross-entropy, layer/RMS norm, reductions, the optimizer:
  sums of many terms (a mean over 10⁴ tokens; a variance) and exp/log lose too much to a
  10-bit or 7-bit mantissa, and they are cheap. They run on the rounded values in float32.

Gradients follow the same boundaries backwards: the gradient of a low-precision output is
rounded to the low format before the matmul's backward uses it, and the gradients of its
inputs are rounded on the way out — so float16's underflow of small gradients happens here,
as it does on a GPU, and :class:`~spiral.amp.grad_scaler.GradScaler` is what prevents it.

An honest note on NumPy: it has no fast float16 and no bfloat16 matrix multiply, so values
are STORED in float32 arrays holding exactly representable low-precision values
(:func:`~spiral.amp.formats.round_to`): the numerics are those of mixed precision, the
speed and the memory are not — the memory saving is the stage 11 model's prediction.
Paper: Micikevicius et al. (2018); PyTorch's ``torch.autocast``. Chapter: stage 12.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from spiral.amp.formats import dtype_of
from spiral.autograd import Tensor
from spiral.autograd.function import Function
from spiral.nn import functional as F

__all__ = ["LOWER_PRECISION_OPS", "FLOAT32_OPS", "PRECISIONS", "autocast", "round_tensor"]

LOWER_PRECISION_OPS = ("linear", "scaled_dot_product_attention")
FLOAT32_OPS = ("softmax", "log_softmax", "cross_entropy", "layer_norm", "rms_norm", "sum",
               "mean", "exp", "log", "optimizer step")
PRECISIONS = ("float32", "bfloat16", "float16")


class _RoundFn(Function):
    """Round to a low-precision format in forward AND round the gradient in backward."""

    @staticmethod
    def forward(ctx: Any, x: np.ndarray, low: Any, record: list[np.ndarray] | None
                ) -> np.ndarray:
        ctx.low, ctx.record = low, record
        return x.astype(low).astype(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, None, None]:
        if ctx.record is not None:
            ctx.record.append(grad.copy())  # the gradient as it arrives, before rounding
        with np.errstate(over="ignore"):
            return grad.astype(ctx.low).astype(grad.dtype), None, None


def round_tensor(x: Tensor, dtype: str, record: list[np.ndarray] | None = None) -> Tensor:
    """x rounded to ``dtype`` (float16 | bfloat16), its gradient rounded the same way
    (and, with ``record``, the unrounded gradient appended to that list)."""
    return _RoundFn.apply(x, dtype_of(dtype), record)


def _lower(fn: Any, dtype: str, n_inputs: int, record: list[np.ndarray] | None) -> Any:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        args = tuple(round_tensor(a, dtype, record) if i < n_inputs and isinstance(a, Tensor)
                     else a for i, a in enumerate(args))
        if "bias" in kwargs and isinstance(kwargs["bias"], Tensor):
            kwargs["bias"] = round_tensor(kwargs["bias"], dtype, record)
        return round_tensor(fn(*args, **kwargs), dtype, record)

    wrapped.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapped


@contextmanager
def autocast(dtype: str = "bfloat16", enabled: bool = True, *,
             record: list[np.ndarray] | None = None) -> Iterator[None]:
    """Run the lower-precision ops of the policy in ``dtype`` inside the block.

    Like ``torch.autocast``: parameters stay float32 (the master weights the optimizer
    updates); each use rounds a copy. ``dtype="float32"`` or ``enabled=False`` changes
    nothing. ``record`` (a list) collects every gradient crossing a rounding boundary in
    backward, before it is rounded (the chapter's histogram). Not thread-safe (it swaps the
    two functions in :mod:`spiral.nn.functional`).
    """
    if dtype not in PRECISIONS:
        raise ValueError(f"autocast dtype must be one of {PRECISIONS}, got {dtype!r}")
    if not enabled or dtype == "float32":
        yield
        return
    saved = {name: getattr(F, name) for name in LOWER_PRECISION_OPS}
    if hasattr(saved["linear"], "__wrapped__"):
        raise RuntimeError("autocast blocks cannot be nested")
    F.linear = _lower(saved["linear"], dtype, 3, record)
    F.scaled_dot_product_attention = _lower(saved["scaled_dot_product_attention"], dtype, 3,
                                            record)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(F, name, fn)
