"""GradScaler: dynamic loss scaling, with ``torch.amp.GradScaler``'s semantics and defaults.

float16's smallest subnormal is 2^-24 ≈ 6·10⁻⁸; gradient entries below half of it round to
ZERO when gradients flow in float16 — small but real signal lost. Multiplying the loss by
S = 2^k multiplies every gradient by S (the chain rule is linear in the upstream gradient),
shifting the whole distribution up by k binades; because S is a power of two the scaling
and the later division by S are EXACT (only the exponent changes), so nothing but the
underflow is altered. The scale is chosen dynamically:

    start S = 2^16; after a step whose gradients contain inf/NaN: skip the step, S ← S/2;
    after ``growth_interval`` = 2000 clean steps in a row: S ← 2·S

Usage (as torch): ``scaler.scale(loss).backward(); scaler.unscale_(opt)`` (optional, before
clipping); ``scaler.step(opt); scaler.update()``. Gradients are divided by S in float32 (the
master weights' precision). With ``enabled=False`` every method is a pass-through.
Paper: Micikevicius et al. (2018), "Mixed precision training". Chapter: stage 12.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["GradScaler"]

_READY, _UNSCALED, _STEPPED = 0, 1, 2


class GradScaler:
    """Dynamic loss scaler for float16 training (torch.amp.GradScaler's API and defaults)."""

    def __init__(self, device: str = "cpu", init_scale: float = 2.0**16,
                 growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True) -> None:
        if growth_factor <= 1.0:
            raise ValueError(f"growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"backoff_factor must be in (0, 1), got {backoff_factor}")
        if growth_interval < 1:
            raise ValueError(f"growth_interval must be >= 1, got {growth_interval}")
        self.device, self._enabled = device, enabled
        self._scale = np.float32(init_scale)
        self._growth_factor, self._backoff_factor = growth_factor, backoff_factor
        self._growth_interval = growth_interval
        self._growth_tracker = 0
        self._per_optimizer: dict[int, dict[str, Any]] = {}

    def is_enabled(self) -> bool:
        return self._enabled

    def scale(self, outputs: Any) -> Any:
        """outputs · S (a Tensor, an array or a number)."""
        return outputs * float(self._scale) if self._enabled else outputs

    def _state(self, optimizer: Any) -> dict[str, Any]:
        return self._per_optimizer.setdefault(id(optimizer), {"stage": _READY,
                                                              "found_inf": False})

    def unscale_(self, optimizer: Any) -> None:
        """Divide the optimizer's gradients by S in place and note whether any is inf/NaN."""
        if not self._enabled:
            return
        st = self._state(optimizer)
        if st["stage"] == _UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since "
                               "the last update().")
        if st["stage"] == _STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        inv = np.float32(1.0 / np.float64(self._scale))  # torch: double reciprocal -> float
        found = False
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                found = found or not bool(np.isfinite(p.grad).all())
                p.grad = (p.grad * inv).astype(p.grad.dtype, copy=False)
        st["found_inf"], st["stage"] = found, _UNSCALED

    def step(self, optimizer: Any) -> Any:
        """``optimizer.step()`` unless the unscaled gradients hold inf/NaN (then skipped)."""
        if not self._enabled:
            return optimizer.step()
        st = self._state(optimizer)
        if st["stage"] == _STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if st["stage"] == _READY:
            self.unscale_(optimizer)
        st["stage"] = _STEPPED
        return None if st["found_inf"] else optimizer.step()

    def update(self, new_scale: float | None = None) -> None:
        """Back off (×0.5) after an inf/NaN step, grow (×2) after growth_interval clean
        steps; or set ``new_scale``. Resets the per-step bookkeeping."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._scale = np.float32(new_scale)
        else:
            if not self._per_optimizer:
                raise RuntimeError("No inf checks were recorded prior to update.")
            if any(s["found_inf"] for s in self._per_optimizer.values()):
                self._scale = np.float32(self._scale * np.float32(self._backoff_factor))
                self._growth_tracker = 0
            else:
                successful = self._growth_tracker + 1
                if successful == self._growth_interval:
                    grown = np.float32(self._scale * np.float32(self._growth_factor))
                    if np.isfinite(grown):
                        self._scale = grown
                    self._growth_tracker = 0
                else:
                    self._growth_tracker = successful
        self._per_optimizer = {}

    def found_inf(self, optimizer: Any) -> bool:
        """Whether the last unscale_ of ``optimizer`` saw an inf/NaN (the step was skipped)."""
        return bool(self._state(optimizer)["found_inf"])

    def get_scale(self) -> float:
        return float(self._scale) if self._enabled else 1.0

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def state_dict(self) -> dict[str, Any]:
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        self._scale = np.float32(state_dict["scale"])
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._growth_tracker = int(state_dict["_growth_tracker"])
