"""The stage-4 MLP language model with normalization layers, and its data (no ``EXPERIMENT``).

- ``NormedMLP``: the stage-4 ``MLPLanguageModel`` with a normalization layer after every
  hidden linear map (before the nonlinearity, where Ioffe & Szegedy place BatchNorm):
  h_l = φ(Norm(W_l h_{l−1})). Training feeds it independent contexts (B, n_context), one
  prediction each, so BatchNorm's batch statistics never mix positions of one sequence.
- ``names_data``: the deduplicated names training split as (context, next) pairs, and the
  validation split as an id stream for the shared evaluator.

Chapter: stage 6 (training stability), "BatchNorm, LayerNorm and RMSNorm on the MLP".
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.models.mlp import MLPConfig, MLPLanguageModel
from spiral.nn.module import Module, ModuleList
from spiral.nn.norm import BatchNorm1d, LayerNorm, RMSNorm

NORMS = ("none", "batchnorm", "layernorm", "rmsnorm")


class _Identity(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


def make_hidden_norm(name: str, width: int) -> Module:
    """A normalization over the hidden width by name (``none`` is the identity)."""
    if name == "none":
        return _Identity()
    if name == "batchnorm":
        return BatchNorm1d(width)
    if name == "layernorm":
        return LayerNorm(width)
    if name == "rmsnorm":
        return RMSNorm(width)
    raise ValueError(f"unknown norm {name!r}; choose from {NORMS}")


class NormedMLP(MLPLanguageModel):
    """MLPLanguageModel with Norm between each hidden Linear and its activation."""

    step_times: list[float]  # wall seconds per training step (filled by train_on_contexts)

    def __init__(self, config: MLPConfig, norm: str, *, rng: np.random.Generator | None = None,
                 dtype: Any = np.float32) -> None:
        super().__init__(config, rng=rng, dtype=dtype)
        self.norm_name = norm
        self.norms = ModuleList(make_hidden_norm(norm, config.d_hidden)
                                for _ in range(config.n_layers))

    def hidden_from_contexts(self, ctx: np.ndarray) -> list[Tensor]:
        """(N, n_context) ids -> [pre-norm a_1, ..., a_L, top hidden h_L], each (N, width)."""
        n = ctx.shape[0]
        x = self.embedding(ctx).reshape(n, -1)  # (N, n_context, d_embed) -> (N, n_context·d)
        out = []
        for layer, norm in zip(self.hidden, self.norms):
            a = layer(x)  # (N, d_hidden)
            out.append(a)
            x = self.drop(self.act(norm(a)))
        out.append(x)
        return out

    def features(self, idx: np.ndarray) -> list[Tensor]:
        ctx = self.contexts(idx)  # (B, T, n_context)
        b, t, n = ctx.shape
        feats = self.hidden_from_contexts(ctx.reshape(b * t, n))  # every position one row
        return [f.reshape(b, t, -1) for f in feats]  # (B·T, C) -> (B, T, C)

    def context_logits(self, ctx: np.ndarray) -> Tensor:
        """(N, n_context) independent contexts -> (N, vocab_size) logits of the next token."""
        return self.head(self.hidden_from_contexts(ctx)[-1])


def mlp_config(vocab_size: int, **kw: Any) -> MLPConfig:
    base = MLPConfig(vocab_size=vocab_size, n_context=3, d_embed=10, d_hidden=128, n_layers=2,
                     activation="tanh", head_init_scale=0.1, context_length=64)
    return replace(base, **kw)


@lru_cache(maxsize=2)
def names_data(n_context: int) -> dict[str, Any]:
    """Training pairs (X (N, n_context), Y (N,)) from names train; val as an id stream."""
    from spiral import data
    from spiral.tokenizers.char import CharTokenizer

    s = data.names_splits()
    train_stream = data.names_stream(s.train)
    tok = CharTokenizer.from_text(train_stream)
    ids = tok.encode_array(train_stream)
    windows = np.lib.stride_tricks.sliding_window_view(ids, n_context + 1)  # (N, n + 1)
    return {
        "x": windows[:, :-1].astype(np.int64), "y": windows[:, -1].astype(np.int64),
        "train_ids": ids,
        "val_ids": tok.encode_array(data.names_stream(s.val)), "vocab_size": tok.vocab_size,
    }


def train_on_contexts(models: list[NormedMLP], x: np.ndarray, y: np.ndarray, steps: int,
                      batch_size: int, lr: float, rng: np.random.Generator,
                      callback: Any = None) -> list[list[float]]:
    """AdamW on independent (context, next) pairs, constant lr; the loss per step per model.

    The models train side by side: each step draws ONE batch that every model sees (common
    random numbers, so differences are the models' own), and the models take their steps in
    turn, so a change in machine load hits all of them alike; ``model.step_times`` holds
    each one's wall time per step. ``callback(step, models)`` runs after every step. (The
    stage-4 loop, ``spiral.train``, samples windows of one stream; BatchNorm needs
    independent rows.)
    """
    import time

    from spiral.nn import functional as F
    from spiral.nn.module import param_groups
    from spiral.optim import AdamW

    opts = [AdamW(param_groups(m, 0.0), lr=lr) for m in models]
    losses: list[list[float]] = [[] for _ in models]
    for m in models:
        m.train()
        m.step_times = []
    for step in range(steps):
        idx = rng.integers(0, len(x), batch_size)
        xb, yb = x[idx], y[idx]  # (B, n_context), (B,)
        for m, opt, trace in zip(models, opts, losses):
            t0 = time.perf_counter()
            loss = F.cross_entropy(m.context_logits(xb), yb)  # (B, V) vs (B,)
            loss.backward()
            opt.step()
            opt.zero_grad()
            m.step_times.append(time.perf_counter() - t0)
            trace.append(float(loss.item()))
        if callback is not None:
            callback(step + 1, models)
    return losses
