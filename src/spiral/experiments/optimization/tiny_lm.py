"""A tiny character MLP language model on names, for the optimizer experiments of stage 5.

Bengio et al. (2003) in four tensors: the previous ``context`` characters are embedded
(C: vocab × d_emb), concatenated, passed through one tanh layer and a softmax readout,

    h = tanh([C[x₁]; …; C[x_k]] W₁ + b₁),   p(next | x) = softmax(h W₂ + b₂),

and trained on minibatches of the deduplicated names split with our ``Tensor`` engine and
``spiral.optim``. It is small on purpose: an optimizer sweep trains it dozens of times.
(The stage-4 ``MLPLanguageModel`` is the same idea with the full training toolkit.)
This module has no ``EXPERIMENT``; it is shared by the ``optim_*`` experiments.
Chapter: stage 5 (optimization theory and our optimizers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from spiral.autograd import Tensor, no_grad
from spiral.nn import functional as F


@dataclass(frozen=True)
class TinyLM:
    context: int = 3
    d_emb: int = 10
    hidden: int = 64
    batch_size: int = 64


@lru_cache(maxsize=2)
def names_examples(context: int) -> dict[str, Any]:
    """(X, Y) pairs from the names training split: fit = first 90 %, tune = last 10 %."""
    from spiral import data
    from spiral.tokenizers.char import CharTokenizer

    train = data.names_splits().train
    cut = int(0.9 * len(train))
    tok = CharTokenizer.from_text(data.names_stream(train))

    def pairs(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = tok.encode_array(data.names_stream(names))
        windows = np.lib.stride_tricks.sliding_window_view(ids, context + 1)  # (N, k + 1)
        return windows[:, :-1].astype(np.int64), windows[:, -1].astype(np.int64)

    fit_x, fit_y = pairs(train[:cut])
    tune_x, tune_y = pairs(train[cut:])
    return {"fit": (fit_x, fit_y), "tune": (tune_x, tune_y), "vocab_size": tok.vocab_size}


def init_params(spec: TinyLM, vocab_size: int, rng: np.random.Generator) -> list[Tensor]:
    """[C, W₁, b₁, W₂, b₂], float32; tanh gain 5/3 on W₁, a small readout so the initial
    loss is close to log(vocab_size)."""
    fan_in = spec.context * spec.d_emb
    shapes_scales = [((vocab_size, spec.d_emb), 1.0),
                     ((fan_in, spec.hidden), (5 / 3) / np.sqrt(fan_in)),
                     ((spec.hidden,), 0.0),
                     ((spec.hidden, vocab_size), 0.1 / np.sqrt(spec.hidden)),
                     ((vocab_size,), 0.0)]
    return [Tensor((rng.standard_normal(shape) * scale).astype(np.float32), requires_grad=True)
            for shape, scale in shapes_scales]


def loss(params: list[Tensor], x: np.ndarray, y: np.ndarray) -> Tensor:
    """Mean cross-entropy of the next character; x (B, context) ids, y (B,) ids."""
    c, w1, b1, w2, b2 = params
    emb = c[x]                                            # (B, context, d_emb)
    flat = emb.reshape(x.shape[0], -1)                    # (B, context · d_emb)
    h = (flat @ w1 + b1).tanh()                           # (B, hidden)
    return F.cross_entropy(h @ w2 + b2, y)                # logits (B, vocab_size)


def eval_loss(params: list[Tensor], split: tuple[np.ndarray, np.ndarray],
              n: int = 20_000) -> float:
    """Mean loss on the first ``n`` examples of a split (deterministic)."""
    x, y = split
    with no_grad():
        return float(loss(params, x[:n], y[:n]).item())


def train(spec: TinyLM, make_optimizer: Callable[[list[Tensor]], Any], steps: int,
          rng: np.random.Generator, *, init_rng: np.random.Generator | None = None,
          on_step: Callable[[int, list[Tensor], Any], None] | None = None,
          lr_at: Callable[[int], float] | None = None) -> dict[str, Any]:
    """Minibatch training; returns the per-step training losses and the final tune loss.

    Stops early (``diverged``) when the loss becomes non-finite or exceeds 3 × its start.
    ``on_step(step, params, optimizer)`` runs after each update; ``lr_at`` sets the lr.
    """
    ex = names_examples(spec.context)
    params = init_params(spec, ex["vocab_size"], init_rng if init_rng is not None else rng)
    opt = make_optimizer(params)
    fit_x, fit_y = ex["fit"]
    losses: list[float] = []
    diverged = False
    for step in range(steps):
        idx = rng.integers(0, len(fit_x), size=spec.batch_size)
        value = loss(params, fit_x[idx], fit_y[idx])
        losses.append(float(value.item()))
        if not np.isfinite(losses[-1]) or losses[-1] > 3 * losses[0] + 1:
            diverged = True
            break
        opt.zero_grad()
        value.backward()
        if lr_at is not None:
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
        opt.step()
        if on_step is not None:
            on_step(step, params, opt)
    final = eval_loss(params, ex["tune"]) if not diverged else float("inf")
    if not np.isfinite(final):
        diverged = True
    return {"losses": losses, "tune_loss": final, "diverged": diverged, "params": params}
