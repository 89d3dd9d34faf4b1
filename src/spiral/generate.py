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
    check_sampling_options(temperature, top_k, top_p)
    if temperature == 0:
        p = np.zeros_like(z)
        p[int(np.argmax(z))] = 1.0
        return p
    z = z / temperature
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)  # ties with the k-th logit are kept, as in torch
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p is not None and top_p < 1.0:
        # The rule of Hugging Face's TopPLogitsWarper: sort the LOGITS ascending, drop the
        # tokens whose cumulative probability is <= 1 - top_p, and always keep the last
        # (largest) one. Sorting logits rather than rounded probabilities means a near-tie
        # (two logits 1e-66 apart, equal probabilities in float64) never drops the argmax.
        # ascending logits; among exact ties the lowest index sorts last, so the token kept
        # is np.argmax's (the one greedy decoding picks)
        order = np.lexsort((-np.arange(z.size), z))
        cum = np.cumsum(p[order])
        remove = cum <= 1.0 - top_p
        remove[-1] = False
        p[order[remove]] = 0.0
        p /= p.sum()
    return p


def check_sampling_options(temperature: float = 1.0, top_k: int | None = None,
                           top_p: float | None = None) -> None:
    """Raise ``ValueError`` with the accepted range for an out-of-range sampling option."""
    if not (np.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a whole number >= 1 (or omitted for no limit), "
                         f"got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p}")


def generate(model: Any, prompt: Sequence[int], max_new_tokens: int, rng: np.random.Generator,
             *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             stop_token: int | None = None, use_cache: bool = True) -> list[int]:
    """Continue ``prompt`` by up to ``max_new_tokens`` ids (stopping after ``stop_token``).

    The model sees at most ``model.receptive_field`` (else ``context_length``) last tokens.
    A GPT decodes with a KV cache (stage 17) unless ``use_cache=False``: the same tokens
    from the same ``rng``, one position's forward per step instead of the whole window's.
    """
    ids = [int(t) for t in prompt]
    if not ids:
        raise ValueError("the prompt needs at least one token (e.g. the end-of-text marker)")
    if use_cache and max_new_tokens > 0 and getattr(model, "receptive_field", None) is None:
        from spiral.inference.kv_cache import supports_cache

        if supports_cache(model):
            from spiral.inference.generate import generate_cached

            return generate_cached(model, ids, max_new_tokens, rng, temperature=temperature,
                                   top_k=top_k, top_p=top_p, stop_token=stop_token)
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


def sample_text(model: Any, tok: Any, rng: np.random.Generator, *, n: int = 20,
                prompt: str = "\n", names: bool = True, max_new_tokens: int = 500,
                temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None) -> str:
    """``n`` names (one per line) or one passage of ``max_new_tokens`` characters."""
    start = tok.encode(prompt)
    if names:
        nl = tok.encode("\n")[0]
        out = []
        for _ in range(n):
            ids = generate(model, start, 40, rng, temperature=temperature, top_k=top_k,
                           top_p=top_p, stop_token=nl)
            out.append(prompt.lstrip("\n") + tok.decode(ids).rstrip("\n"))
        return "\n".join(out)
    ids = generate(model, start, max_new_tokens, rng, temperature=temperature, top_k=top_k,
                   top_p=top_p)
    return prompt + tok.decode(ids)
