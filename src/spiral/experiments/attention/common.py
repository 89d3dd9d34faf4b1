"""Shared pieces of the stage-7 experiments: the character data and one training recipe.

Not an experiment itself (no ``EXPERIMENT``). Every model of the chapter is trained with
:func:`spiral.train.train` and AdamW on tiny Shakespeare's fixed training region and scored
by :func:`spiral.evaluate.evaluate` on the validation split, so the attention model and the
stage-4 MLP compare on the same data with the same evaluator.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Recipe:
    """The short training recipe every stage-7 run shares."""

    max_steps: int = 1000
    batch_size: int = 16
    seq_len: int = 64
    lr: float = 3e-2              # chosen on the tune split (attention_scale_training)
    warmup_steps: int = 50
    weight_decay: float = 0.1
    val_tokens: int | None = None   # None = the whole validation split


@lru_cache(maxsize=1)
def shakespeare() -> tuple[Any, np.ndarray, np.ndarray]:
    """(tokenizer, train ids, validation ids) of tiny Shakespeare (90/10, characters)."""
    from spiral import data
    from spiral.tokenizers.char import CharTokenizer

    s = data.get_splits("shakespeare")
    tok = CharTokenizer.from_text(s.train)
    return tok, tok.encode_array(s.train), tok.encode_array(s.val)


@lru_cache(maxsize=1)
def shakespeare_tune() -> tuple[np.ndarray, np.ndarray]:
    """(fit ids, tune ids): the training region split again for choosing hyperparameters."""
    from spiral import data

    tok, _, _ = shakespeare()
    fit_text, tune_text = data.get_splits("shakespeare").tune_split()
    return tok.encode_array(fit_text), tok.encode_array(tune_text)


def fit(model: Any, recipe: Recipe, seed: int, *, tune: bool = False) -> dict[str, Any]:
    """Train ``model`` with the recipe; returns the history, final NLL and seconds.

    ``tune=True`` trains on the fit part of the training region and scores the tune part
    (for choosing hyperparameters); otherwise it trains on the whole training region and
    scores the validation split (reported once).
    """
    from spiral.nn.module import param_groups
    from spiral.optim import AdamW
    from spiral.train import TrainConfig, train

    if tune:
        train_ids, val_ids = shakespeare_tune()
    else:
        _, train_ids, val_ids = shakespeare()
    val = val_ids if recipe.val_tokens is None else val_ids[: recipe.val_tokens]
    cfg = TrainConfig(max_steps=recipe.max_steps, batch_size=recipe.batch_size,
                      seq_len=recipe.seq_len, lr=recipe.lr, warmup_steps=recipe.warmup_steps,
                      weight_decay=recipe.weight_decay,
                      eval_interval=max(1, recipe.max_steps // 10),
                      eval_tokens=min(10_000, len(val)), seed=seed, progress=False)
    opt = AdamW(param_groups(model, recipe.weight_decay), lr=recipe.lr, betas=(0.9, 0.99))
    t0 = time.perf_counter()
    state = train(model, opt, train_ids, val, cfg, np.random.default_rng(seed + 1000))
    return {"history": state.history, "val_nats": state.history[-1]["val_loss"],
            "seconds": time.perf_counter() - t0}


def attention_lm(seed: int, **overrides: Any) -> Any:
    """A fresh attention LM for tiny Shakespeare's vocabulary (d_model 64, context 64)."""
    from spiral.models.attention_lm import AttentionLanguageModel, AttentionLMConfig

    tok, _, _ = shakespeare()
    cfg = AttentionLMConfig(vocab_size=tok.vocab_size, **overrides)
    return AttentionLanguageModel(cfg, rng=np.random.default_rng(seed))


def mlp_lm(seed: int, context_length: int = 64, **overrides: Any) -> Any:
    """A fresh stage-4 MLP LM (its default fixed window) scored in the same evaluator windows."""
    from spiral.models.mlp import MLPConfig, MLPLanguageModel

    tok, _, _ = shakespeare()
    cfg = MLPConfig(vocab_size=tok.vocab_size, context_length=context_length, **overrides)
    return MLPLanguageModel(cfg, rng=np.random.default_rng(seed))


def row_entropy(weights: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each attention row: (..., T, S) -> (..., T)."""
    p = np.maximum(weights.astype(np.float64), 1e-300)
    return -(weights * np.log(p)).sum(-1)


def attention_probe(model: Any, windows: np.ndarray) -> dict[str, float]:
    """On (B, T) validation windows: sd of the attention logits q·k·s over the causal
    entries, mean row entropy (nats) and mean largest weight of the attention rows."""
    from spiral.autograd import no_grad

    with no_grad():
        x = model.ln_attn(model.embed(windows))  # (B, T, d_model)
        q, k, _ = model.attn.project(x)  # (B, T, head_dim) each
        s = q.data @ np.swapaxes(k.data, -1, -2) * model.attn.scale  # (B, T, T)
        w = model.attention_weights(windows)  # (B, T, T)
    T = windows.shape[1]
    allowed = np.tril(np.ones((T, T), dtype=bool))
    return {"logit_sd": float(s[:, allowed].std()), "entropy": float(row_entropy(w).mean()),
            "max_weight": float(w.max(-1).mean())}
