"""spiral.optim: the optimizers, learning-rate schedules and gradient clipping.

- ``optimizers.py``: ``Optimizer`` (param groups, state dicts), ``SGD``, ``RMSprop``,
  ``Adam``, ``AdamW`` — PyTorch's arguments, defaults and update rules.
- ``schedules.py``: ``step -> lr`` schedules (``constant``, ``linear_warmup``,
  ``cosine_with_warmup``, ``step_decay``, applied with ``set_lr``) and PyTorch-style
  schedulers (``LambdaLR``, ``StepLR``, ``LinearLR``, ``CosineAnnealingLR``, ``ScheduleLR``).
- ``clip.py``: ``clip_grad_norm_`` (global-norm clipping) and ``grad_norm``.

Chapter: stage 5 (optimization theory and our optimizers).
"""

from __future__ import annotations

from spiral.optim.clip import clip_grad_norm_, grad_norm
from spiral.optim.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop
from spiral.optim.schedules import (
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    Schedule,
    ScheduleLR,
    StepLR,
    constant,
    cosine_with_warmup,
    linear_warmup,
    set_lr,
    step_decay,
)

__all__ = [
    "SGD", "Adam", "AdamW", "CosineAnnealingLR", "LRScheduler", "LambdaLR", "LinearLR",
    "Optimizer", "RMSprop", "Schedule", "ScheduleLR", "StepLR", "clip_grad_norm_", "constant",
    "cosine_with_warmup", "grad_norm", "linear_warmup", "set_lr", "step_decay",
]
