"""Sampling text from any model that maps ids (B, T) to next-token logits (B, T, V).

Autoregressive generation: x_{t+1} ~ p(· | x_{≤t}), append, repeat. The distribution is
reshaped before sampling:

- temperature τ: p_i ∝ exp(z_i / τ) (τ → 0 is greedy argmax, τ = 1 the model itself);
- top-k: keep the k largest logits (Fan et al., 2018);
- top-p (nucleus): keep the smallest set of tokens whose probability sums to ≥ p
  (Holtzman et al., 2020).

All randomness comes from the ``np.random.Generator`` passed in, so a seed fixes the text.
Chapter: stage 4 (generation); the same function samples the GPT in later stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spiral.autograd import no_grad


def filter_probs(logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None) -> np.ndarray:
    """(V,) logits -> (V,) float64 probabilities after temperature, top-k and top-p.

    >>> filter_probs(np.array([0.0, 1.0, 2.0]), top_k=1).tolist()
    [0.0, 0.0, 1.0]
    """
    z = np.asarray(logits, dtype=np.float64)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        p = np.zeros_like(z)
        p[int(np.argmax(z))] = 1.0
        return p
    z = z / temperature
    if top_k is not None and 0 < top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p is not None and top_p < 1.0:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        n_keep = int(np.searchsorted(cum, top_p) + 1)  # smallest prefix with mass >= top_p
        keep = np.zeros(p.size, dtype=bool)
        keep[order[:n_keep]] = True
        p = np.where(keep, p, 0.0)
        p /= p.sum()
    return p


def generate(model: Any, prompt: Sequence[int], max_new_tokens: int, rng: np.random.Generator,
             *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             stop_token: int | None = None) -> list[int]:
    """Continue ``prompt`` by up to ``max_new_tokens`` ids (stopping after ``stop_token``).

    The model sees at most ``model.receptive_field`` (else ``context_length``) last tokens.
    """
    ids = [int(t) for t in prompt]
    if not ids:
        raise ValueError("the prompt needs at least one token (e.g. the end-of-text marker)")
    window = int(getattr(model, "receptive_field", None) or model.context_length)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    out: list[int] = []
    try:
        with no_grad():
            for _ in range(max_new_tokens):
                x = np.asarray(ids[-window:], dtype=np.int64)[None, :]  # (1, T)
                logits = model(x)
                logits = getattr(logits, "data", logits)[0, -1]  # (V,) at the last position
                p = filter_probs(logits, temperature, top_k, top_p)
                nxt = int(rng.choice(p.size, p=p))
                ids.append(nxt)
                out.append(nxt)
                if stop_token is not None and nxt == stop_token:
                    break
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    return out
