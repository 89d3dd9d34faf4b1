"""The one evaluator every model in the book is scored with.

Mean negative log-likelihood over every position of a split:

    L = -(1/N) Σ_{t=1}^{N} log p(x_t | x_{<t} within the window),

in nats per token, with bits = L / ln 2 and perplexity = exp(L). The split is cut into
non-overlapping windows of the model's context length: window k holds tokens
``[kT, kT + T]`` (T + 1 tokens, overlapping the next window by one), so every token after
the first is scored exactly once and numbers from different chapters compare.

A model takes part by exposing ``context_length`` and ``window_nll(windows)``
(:class:`LanguageModel`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import numpy as np

LN2 = math.log(2.0)


@runtime_checkable
class LanguageModel(Protocol):
    """What the evaluator needs from a model."""

    context_length: int

    def window_nll(self, windows: np.ndarray) -> np.ndarray:
        """(B, L) int64 windows, L <= context_length + 1 -> (B, L - 1) NLL in nats of
        ``windows[:, 1:]`` given the in-window prefix."""
        ...


@dataclass(frozen=True)
class EvalResult:
    """Mean NLL of a split in nats, bits and perplexity, over ``n_tokens`` scored tokens."""

    nats: float
    n_tokens: int

    @property
    def bits(self) -> float:
        return self.nats / LN2

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats) if self.nats < 700 else math.inf

    def as_dict(self) -> dict[str, float]:
        d = asdict(self)
        d.update(bits=self.bits, perplexity=self.perplexity)
        return d


def windows_of(tokens: np.ndarray, context_length: int) -> list[np.ndarray]:
    """Cut a stream into (B, T + 1) full windows plus a shorter last window if any."""
    tokens = np.asarray(tokens, dtype=np.int64)
    T = int(context_length)
    n_targets = len(tokens) - 1
    n_full = n_targets // T
    out: list[np.ndarray] = []
    if n_full:
        starts = np.arange(n_full) * T
        out.append(tokens[starts[:, None] + np.arange(T + 1)[None, :]])  # (n_full, T + 1)
    rest = n_targets - n_full * T
    if rest:
        out.append(tokens[None, n_full * T :])  # (1, rest + 1)
    return out


def evaluate(
    model: LanguageModel, tokens: np.ndarray, *, batch_size: int = 64
) -> EvalResult:
    """Score every position of ``tokens`` (a 1-D id stream) with ``model``."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be a 1-D stream of ids, got shape {tokens.shape}")
    if len(tokens) < 2:
        raise ValueError("need at least two tokens to score one prediction")
    T = int(model.context_length)
    if T < 1:
        raise ValueError(f"model.context_length must be >= 1, got {T}")
    total, count = 0.0, 0
    for block in windows_of(tokens, T):
        for i in range(0, len(block), batch_size):
            batch = block[i : i + batch_size]
            nll = np.asarray(model.window_nll(batch), dtype=np.float64)
            if nll.shape != (batch.shape[0], batch.shape[1] - 1):
                raise ValueError(
                    f"window_nll returned shape {nll.shape}, expected "
                    f"{(batch.shape[0], batch.shape[1] - 1)}"
                )
            total += float(nll.sum())
            count += nll.size
    return EvalResult(nats=total / count, n_tokens=count)
