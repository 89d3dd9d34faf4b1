"""Shared helpers of the stage-11 experiments: one measured step beside its prediction."""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral.models.gpt import GPT, GPTConfig
from spiral.optim import AdamW
from spiral.profiling.memory import (
    predict_training_memory,
    profile_step,
    tracemalloc_step_peak,
)

MiB = 2**20


def batch(config: GPTConfig, B: int, T: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(seed)
    return (r.integers(0, config.vocab_size, (B, T)), r.integers(0, config.vocab_size, (B, T)))


def measure(config: GPTConfig, B: int, T: int, seed: int = 0,
            witness: bool = False) -> dict[str, Any]:
    """Profile one AdamW step (after a warm-up) and predict it; optionally tracemalloc too."""
    model = GPT(config, rng=np.random.default_rng(seed))
    tl = profile_step(model, batch(config, B, T, seed), AdamW(model.parameters(), lr=1e-3))
    pred = predict_training_memory(config, B, T, "adamw")
    out: dict[str, Any] = {
        "B": B, "T": T, "d_model": config.d_model, "n_layers": config.n_layers,
        "measured": tl.peak, "measured_op": tl.peak_op, "measured_phase": tl.peak_phase,
        "measured_by_tag": tl.peak_by_tag, "predicted": pred.peak_visible,
        "predicted_total": pred.peak, "predicted_at": pred.peak_at,
        "predicted_total_at": pred.peak_total_at, "scratch": pred.scratch,
        "rel_error": (pred.peak_visible - tl.peak) / tl.peak,
    }
    if witness:
        m2 = GPT(config, rng=np.random.default_rng(seed))
        w = tracemalloc_step_peak(m2, batch(config, B, T, seed),
                                  AdamW(m2.parameters(), lr=1e-3))
        out["tracemalloc"] = w["numpy_peak"]
        out["python_objects"] = w["python_objects"]
        out["profiler_vs_tracemalloc"] = (tl.peak - w["numpy_peak"]) / w["numpy_peak"]
        out["model_total_vs_tracemalloc"] = (pred.peak - w["numpy_peak"]) / w["numpy_peak"]
    return out
