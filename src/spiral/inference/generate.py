"""Generation with a KV cache: one prefill of the prompt, then one-token decode steps.

Step for step the same as :func:`spiral.generate.generate` (same sampler,
:func:`spiral.generate.filter_probs`, same draws from the same ``rng``), but each new token
costs one position's forward instead of the whole window's: O(t·C) attention work and
O(C²) projections per step instead of O(t²·C) and O(t·C²).

When the sequence outgrows ``context_length`` the uncached sampler slides its window, so
every position shifts and no cached key stays valid; this function then re-prefills the
last ``context_length`` tokens each step, which reproduces the uncached sampler exactly.
Chapter: stage 17 (inference).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spiral.generate import check_sampling_options, filter_probs
from spiral.inference.kv_cache import KVCache, forward_cached

__all__ = ["generate_cached"]


def generate_cached(model: Any, prompt: Sequence[int], max_new_tokens: int,
                    rng: np.random.Generator, *, temperature: float = 1.0,
                    top_k: int | None = None, top_p: float | None = None,
                    stop_token: int | None = None) -> list[int]:
    """Continue ``prompt`` by up to ``max_new_tokens`` ids (stopping after ``stop_token``).

    >>> from spiral.models.gpt import GPT, GPTConfig
    >>> m = GPT(GPTConfig(vocab_size=5, context_length=8, n_layers=1, n_heads=1, d_model=4),
    ...         rng=np.random.default_rng(0))
    >>> len(generate_cached(m, [0], 3, np.random.default_rng(0), temperature=0))
    3
    """
    ids = [int(t) for t in prompt]
    if not ids:
        raise ValueError("the prompt needs at least one token (e.g. the end-of-text marker)")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    check_sampling_options(temperature, top_k, top_p)
    window = int(model.context_length)
    cache = KVCache.for_model(model, batch_size=1, capacity=window)
    pending = ids[-window:]  # what the next forward must read: the prompt, then one token
    out: list[int] = []
    for _ in range(max_new_tokens):
        if cache.length + len(pending) > window:  # window slides: positions shift, re-prefill
            cache.reset()
            pending = ids[-window:]
        logits = forward_cached(model, np.asarray(pending, dtype=np.int64)[None, :], cache)
        p = filter_probs(logits[0, -1], temperature, top_k, top_p)
        nxt = int(rng.choice(p.size, p=p))
        ids.append(nxt)
        out.append(nxt)
        pending = [nxt]
        if stop_token is not None and nxt == stop_token:
            break
    return out
