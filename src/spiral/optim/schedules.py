"""Learning-rate schedules: constant, linear warmup, cosine with warmup, step decay.

Two interfaces, one convention. Training step k = 0, 1, 2, … (the k-th call of
``optimizer.step()``) uses learning rate η(k).

1. A *schedule* is a plain callable ``step -> lr`` (``constant``, ``linear_warmup``,
   ``cosine_with_warmup``, ``step_decay``). A training loop sets it before each update:
   ``set_lr(optimizer, schedule(k)); optimizer.step()``. Cosine with warmup, the schedule
   of GPT-2/3 and nanoGPT:

       η(k) = η_max (k + 1) / W                                           k < W
       η(k) = η_min + (η_max − η_min) · ½ (1 + cos(π (k − W) / (T − W)))    W ≤ k ≤ T
       η(k) = η_min                                                       k > T

2. A *scheduler* has PyTorch's ``torch.optim.lr_scheduler`` interface: construct it after the
   optimizer (it sets η(0) at once), call ``scheduler.step()`` after each
   ``optimizer.step()``, read ``get_last_lr()``. ``LambdaLR``, ``StepLR``, ``LinearLR`` and
   ``CosineAnnealingLR`` reproduce PyTorch's values; ``ScheduleLR`` wraps a schedule.

Warmup is motivated in the chapter from the variance of Adam's early second-moment
estimates (Liu et al. 2020, *On the Variance of the Adaptive Learning Rate and Beyond*);
cosine decay is Loshchilov & Hutter, *SGDR* (2017). Chapter: stage 5.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spiral.optim.optimizers import Optimizer

Schedule = Callable[[int], float]


def set_lr(optimizer: Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass(frozen=True)
class constant:  # lower case: reads as a function, constant(3e-4)(k)
    """η(k) = lr."""

    lr: float

    def __call__(self, step: int) -> float:
        return self.lr


@dataclass(frozen=True)
class linear_warmup:
    """η(k) = lr · min(1, (k + 1) / warmup_steps): ramps up over ``warmup_steps`` updates."""

    lr: float
    warmup_steps: int

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        return self.lr


@dataclass(frozen=True)
class cosine_with_warmup:
    """Linear warmup to ``lr`` over ``warmup_steps``, cosine decay to ``min_lr`` at step
    ``total_steps``, constant ``min_lr`` afterwards (the module docstring's formula)."""

    lr: float
    warmup_steps: int
    total_steps: int
    min_lr: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if step > self.total_steps:
            return self.min_lr
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class step_decay:
    """η(k) = lr · gamma^⌊k / step_size⌋."""

    lr: float
    step_size: int
    gamma: float = 0.1

    def __call__(self, step: int) -> float:
        return self.lr * self.gamma ** (step // self.step_size)


class LRScheduler(ABC):
    """Base class with PyTorch's protocol: ``step()`` after each ``optimizer.step()``.

    Subclasses define ``lr_at(epoch, base_lr) -> lr`` in closed form; ``last_epoch`` counts
    the ``step()`` calls (−1 before the initial one that the constructor makes).
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self.base_lrs: list[float] = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._last_lr: list[float] = [g["lr"] for g in optimizer.param_groups]
        self.step()

    @abstractmethod
    def lr_at(self, epoch: int, base_lr: float) -> float:
        """The learning rate after ``epoch`` scheduler steps, for a group with ``base_lr``."""

    def step(self) -> None:
        """Advance one update and write the new learning rate into every group."""
        self.last_epoch += 1
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(self.last_epoch, base)
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The learning rates set by the last ``step()``, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs),
                "_last_lr": list(self._last_lr)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_epoch = int(state_dict["last_epoch"])
        self.base_lrs = list(state_dict["base_lrs"])
        self._last_lr = list(state_dict["_last_lr"])


class LambdaLR(LRScheduler):
    """η(k) = η₀ · lr_lambda(k), as ``torch.optim.lr_scheduler.LambdaLR``."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float],
                 last_epoch: int = -1) -> None:
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int, base_lr: float) -> float:
        return base_lr * self.lr_lambda(epoch)


class ScheduleLR(LRScheduler):
    """Drive an optimizer from a ``step -> lr`` schedule (every group gets ``schedule(k)``)."""

    def __init__(self, optimizer: Optimizer, schedule: Schedule, last_epoch: int = -1) -> None:
        self.schedule = schedule
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int, base_lr: float) -> float:
        return float(self.schedule(epoch))


class StepLR(LRScheduler):
    """η(k) = η₀ · gamma^⌊k / step_size⌋, as ``torch.optim.lr_scheduler.StepLR``."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int, base_lr: float) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)


class LinearLR(LRScheduler):
    """Factor moving linearly from ``start_factor`` to ``end_factor`` over ``total_iters``
    steps, then constant, as ``torch.optim.lr_scheduler.LinearLR``."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5, last_epoch: int = -1) -> None:
        if not (0 < start_factor <= 1 and 0 <= end_factor <= 1):
            raise ValueError("factors must lie in (0, 1] and [0, 1]")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int, base_lr: float) -> float:
        frac = min(epoch, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)


class CosineAnnealingLR(LRScheduler):
    """η(k) = η_min + (η₀ − η_min) · ½ (1 + cos(π k / T_max)), PyTorch's closed form."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int, base_lr: float) -> float:
        cos = 0.5 * (1.0 + math.cos(math.pi * epoch / self.T_max))
        return self.eta_min + (base_lr - self.eta_min) * cos
