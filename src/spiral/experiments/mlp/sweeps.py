"""Shared pieces of the stage-4 sweeps: a short training recipe and a trainer.

Not an experiment itself (no ``EXPERIMENT``): the sweep experiments train many small models
with the same short recipe so that only the swept quantity changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def short_recipe(max_steps: int, batch_size: int = 16, seq_len: int = 64,
                 eval_interval: int | None = None, **kw: Any) -> dict[str, Any]:
    """Training overrides for a sweep point: fewer steps, a smaller batch, few evaluations.

    Ten evaluations per run by default, so the last record's ``train_loss`` (the mean since
    the previous evaluation) describes the last tenth of training, not the whole run.
    """
    return {"max_steps": max_steps, "batch_size": batch_size, "seq_len": seq_len,
            "eval_interval": eval_interval or max(1, max_steps // 10),
            "warmup_steps": min(50, max_steps // 10), **kw}


def fit(corpus: str, seed: int, model: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    """Train one MLP (no run directory); returns the ``train_mlp`` result."""
    from spiral.recipes.mlp import train_mlp

    return train_mlp(corpus, None, seed=seed, model_overrides=model, train_overrides=train,
                     progress=False)


def val_ids(corpus: str, max_tokens: int | None = None) -> np.ndarray:
    from spiral import data
    from spiral.tokenizers.char import CharTokenizer

    s = data.get_splits(corpus)
    return CharTokenizer.from_text(s.train).encode_array(s.val)[:max_tokens]
