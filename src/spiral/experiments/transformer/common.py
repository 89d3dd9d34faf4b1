"""Shared pieces of the stage-8 experiments: a small GPT recipe on tiny Shakespeare.

Not an experiment itself (no ``EXPERIMENT``). The architecture sweeps train small GPTs
(:class:`spiral.models.gpt.GPT`, nanoGPT init, AdamW β₂ = 0.99, warm-up + cosine, clipping)
with the shared loop on tiny Shakespeare's training region and score them with the shared
evaluator on a fixed prefix of the validation split, so every variant of a sweep sees the
same batches (one seed per run) and the same scoring windows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.experiments.attention.common import shakespeare
from spiral.models.gpt import GPT, GPTConfig

__all__ = ["SmallRecipe", "small_gpt", "train_small", "shakespeare"]


@dataclass(frozen=True)
class SmallRecipe:
    """Model sizes and training length of the sweeps (a few seconds per run on one core)."""

    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 64
    context_length: int = 32
    expansion: float = 4.0
    max_steps: int = 400
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 40
    weight_decay: float = 0.1
    val_tokens: int = 30_000       # scored validation prefix (the whole split is ~111k)

    def with_(self, **kw: Any) -> SmallRecipe:
        return replace(self, **kw)


def small_gpt(recipe: SmallRecipe, seed: int, **overrides: Any) -> GPT:
    """A fresh GPT for tiny Shakespeare with the recipe's sizes plus config overrides."""
    tok, _, _ = shakespeare()
    sizes = dict(context_length=recipe.context_length, n_layers=recipe.n_layers,
                 n_heads=recipe.n_heads, d_model=recipe.d_model, expansion=recipe.expansion)
    cfg = GPTConfig(vocab_size=tok.vocab_size, **{**sizes, **overrides})
    return GPT(cfg, rng=np.random.default_rng(seed))


def train_small(model: GPT, recipe: SmallRecipe, seed: int) -> dict[str, Any]:
    """Train with the shared loop; returns final validation nats, history, seconds."""
    from threadpoolctl import threadpool_limits

    from spiral.optim import AdamW
    from spiral.train import TrainConfig, train

    _, train_ids, val_ids = shakespeare()
    val = val_ids[: recipe.val_tokens]
    cfg = TrainConfig(max_steps=recipe.max_steps, batch_size=recipe.batch_size,
                      seq_len=model.context_length, lr=recipe.lr,
                      warmup_steps=recipe.warmup_steps, weight_decay=recipe.weight_decay,
                      eval_interval=max(1, recipe.max_steps // 4),
                      eval_tokens=min(5_000, len(val)), seed=seed, progress=False)
    opt = AdamW(model.param_groups(recipe.weight_decay), lr=recipe.lr, betas=(0.9, 0.99))
    t0 = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        state = train(model, opt, train_ids, val, cfg, np.random.default_rng(seed + 1000))
    return {"val_nats": state.history[-1]["val_loss"],
            "train_loss": state.history[-1]["train_loss"],
            "seconds": time.perf_counter() - t0, "n_params": model.num_parameters()}
