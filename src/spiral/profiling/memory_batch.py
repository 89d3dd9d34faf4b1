"""The largest batch (or context) that fits a memory budget, predicted and then verified.

Every term of a training step's peak grows monotonically with the batch B and the context
T (activations ∝ B·T and B·H·T², the rest constant), so the largest batch under a budget M
is found by bisection on the analytic peak, with no run at all:

    B* = max { B : peak(B, T) ≤ M }

and then checked by running the step at B* and B* + 1 under the tracemalloc witness
(which, unlike the hooks, also sees the kernels' scratch arrays). Chapter: stage 11.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral.profiling.memory_model import predict_training_memory

__all__ = ["largest_fitting", "largest_batch", "largest_context", "verify_fit"]


def largest_fitting(fits: Any, lo: int, hi: int) -> int:
    """Largest n in [lo, hi] with fits(n) (fits is monotone); lo - 1 if none fits."""
    if not fits(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def largest_batch(config: Any, budget: int, context: int | None = None,
                  optimizer: str = "adamw", precision: str = "fp32",
                  max_batch: int = 1 << 16) -> int:
    """The largest batch whose predicted training-step peak is at most ``budget`` bytes
    (0 if not even a batch of one fits)."""
    if budget <= 0:
        raise ValueError(f"budget must be a positive number of bytes, got {budget}")
    return largest_fitting(lambda b: predict_training_memory(config, b, context, optimizer,
                                                     precision).peak <= budget, 1, max_batch)


def largest_context(config: Any, budget: int, batch: int = 1, optimizer: str = "adamw",
                    precision: str = "fp32") -> int:
    """The longest context (≤ ``config.context_length``) whose step fits ``budget``."""
    if budget <= 0:
        raise ValueError(f"budget must be a positive number of bytes, got {budget}")
    return largest_fitting(lambda t: predict_training_memory(config, batch, t, optimizer,
                                                     precision).peak <= budget,
                   1, config.context_length)


def verify_fit(config: Any, budget: int, batch: int, context: int | None = None,
               seed: int = 0) -> dict[str, Any]:
    """Run the step at ``batch`` and ``batch + 1`` (AdamW, float32) under tracemalloc:
    the first must fit the budget and the second must not."""
    from spiral.models.gpt import GPT
    from spiral.optim import AdamW
    from spiral.profiling.memory_witness import tracemalloc_step_peak

    T = config.context_length if context is None else context
    peaks = []
    for b in (batch, batch + 1):
        rng = np.random.default_rng(seed)
        model = GPT(config, rng=rng)
        ids = rng.integers(0, config.vocab_size, (b, T))
        tgt = rng.integers(0, config.vocab_size, (b, T))
        opt = AdamW(model.parameters(), lr=1e-3)
        peaks.append(tracemalloc_step_peak(model, (ids, tgt), opt)["numpy_peak"])
    return {"batch": batch, "budget": budget, "peak": peaks[0], "peak_next": peaks[1],
            "fits": peaks[0] <= budget, "next_exceeds": peaks[1] > budget}
