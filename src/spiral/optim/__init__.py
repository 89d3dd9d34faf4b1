"""spiral.optim: the optimizers, learning-rate schedules and gradient clipping.

- ``optimizers.py``: ``Optimizer`` (param groups, state dicts), ``SGD``, ``RMSprop``,
  ``Adam``, ``AdamW`` — PyTorch's arguments, defaults and update rules.
- ``clip.py``: ``clip_grad_norm_`` (global-norm clipping) and ``grad_norm``.

Chapter: stage 5 (optimization theory and our optimizers).
"""

from __future__ import annotations

from spiral.optim.clip import clip_grad_norm_, grad_norm
from spiral.optim.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop", "clip_grad_norm_", "grad_norm"]
