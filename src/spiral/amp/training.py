"""One mixed-precision training step, and how much of a gradient a format can hold.

    with autocast(p): loss = CE(model(x), y)          matmuls in p, the rest in float32
    S·loss → backward                                  gradients flow scaled by S = 2^k
    g ← g / S  (exactly: S is a power of two);  skip the step if any g is inf/NaN
    clip, optimizer step on the float32 master weights; update S

``precision`` is ``float32``, ``bfloat16`` (no scaling needed: bfloat16 has float32's
range), ``float16`` (with a :class:`GradScaler`) or ``float16-noscale`` (the failure the
chapter measures: small gradients round to zero). :func:`underflow_fraction` counts the
gradient entries that a format flushes to zero, with and without a scale.
Paper: Micikevicius et al. (2018). Chapter: stage 12 (memory optimization).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral.amp.autocast import autocast
from spiral.amp.formats import format_of
from spiral.amp.grad_scaler import GradScaler
from spiral.nn import functional as F
from spiral.optim import clip_grad_norm_

__all__ = ["TRAINING_PRECISIONS", "amp_train_step", "make_scaler", "underflow_fraction"]

TRAINING_PRECISIONS = ("float32", "bfloat16", "float16", "float16-noscale")


def make_scaler(precision: str, **kwargs: Any) -> GradScaler:
    """The scaler a precision needs: enabled for float16 only (pass-through otherwise)."""
    if precision not in TRAINING_PRECISIONS:
        raise ValueError(f"precision must be one of {TRAINING_PRECISIONS}, got {precision!r}")
    return GradScaler(enabled=precision == "float16", **kwargs)


def amp_train_step(model: Any, optimizer: Any, x: np.ndarray, y: np.ndarray, precision: str,
                   scaler: GradScaler, grad_clip: float = 1.0) -> dict[str, Any]:
    """One optimizer step in ``precision``; returns the loss, whether it was skipped, the
    scale used and the fraction of parameter-gradient entries that are exactly zero."""
    if precision not in TRAINING_PRECISIONS:
        raise ValueError(f"precision must be one of {TRAINING_PRECISIONS}, got {precision!r}")
    with autocast(precision.split("-")[0]):
        loss = F.cross_entropy(model(x), y)
    scale = scaler.get_scale()
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    zeros = sum(int((p.grad == 0).sum()) for p in params) / max(1, sum(p.grad.size for p in params))
    skipped = not all(np.isfinite(p.grad).all() for p in params)
    if grad_clip > 0 and not skipped:
        clip_grad_norm_(params, grad_clip)
    if precision == "float16-noscale" and skipped:
        optimizer.zero_grad()  # no scaler to catch it: the step would write NaN weights
    else:
        scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
    return {"loss": float(loss.item()), "skipped": skipped, "scale": scale,
            "zero_grad_fraction": zeros}


def underflow_fraction(values: np.ndarray, fmt: str = "float16", scale: float = 1.0) -> float:
    """Fraction of the NONZERO entries of ``values`` that become 0 when scale·value is
    rounded to ``fmt`` (|v| below half the smallest subnormal rounds to zero)."""
    v = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    v = v[v > 0]
    if v.size == 0:
        return 0.0
    return float(np.mean(v * scale <= format_of(fmt).smallest_subnormal / 2))
