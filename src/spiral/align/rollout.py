"""Sampling completions in a batch and scoring them: token log-probabilities under a policy.

A batch of rows shares one layout: columns 0..P−1 hold the prompt, then the completion, then
padding (the end marker). Target index j scores token j + 1 from the logits at position j,

    log π(x_{j+1} | x_{≤j}) = log_softmax(model(x)[:, j])[x_{j+1}],

and the completion mask marks the targets from the first completion token up to and
including the end marker. A sequence's log-probability is the masked sum. Next-token
distributions come from :func:`spiral.generate.filter_probs`, the book's one sampler.
Chapter: stage 16.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral.autograd import Tensor, no_grad
from spiral.generate import filter_probs
from spiral.nn import functional as F


def sample(model: Any, prompts: np.ndarray, max_new_tokens: int, end_id: int,
           rng: np.random.Generator, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Complete each (B, P) prompt row: tokens (B, P + max_new), mask (B, P + max_new − 1).

    Rows stop at ``end_id`` and are padded with it; a row that never emits it is cut at
    ``max_new_tokens``. The randomness is one uniform draw per row and step.
    """
    prompts = np.asarray(prompts, dtype=np.int64)
    B, P = prompts.shape
    tokens = np.full((B, P + max_new_tokens), end_id, dtype=np.int64)
    tokens[:, :P] = prompts
    done = np.zeros(B, dtype=bool)
    length = np.full(B, max_new_tokens)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with no_grad():
            for t in range(max_new_tokens):
                logits = np.asarray(model(tokens[:, :P + t]).data)[:, -1]  # (B, V)
                u = np.asarray(rng.random(B))
                for i in np.flatnonzero(~done):
                    p = filter_probs(logits[i], temperature)
                    tokens[i, P + t] = min(int(np.searchsorted(np.cumsum(p), u[i])), p.size - 1)
                hit = (~done) & (tokens[:, P + t] == end_id)
                length[hit] = t + 1
                done |= hit
                if done.all():
                    break
    finally:
        model.train(was_training)
    return tokens, completion_mask(P, length, tokens.shape[1])


def completion_mask(prompt_len: int, lengths: np.ndarray, n_tokens: int) -> np.ndarray:
    """(B, n_tokens − 1) float mask of the completion targets (lengths include the end marker)."""
    j = np.arange(n_tokens - 1)[None, :]
    start = prompt_len - 1
    return ((j >= start) & (j < start + np.asarray(lengths)[:, None])).astype(np.float64)


def token_logprobs(model: Any, tokens: np.ndarray) -> Tensor:
    """(B, T) tokens -> (B, T − 1) log π(x_{j+1} | x_{≤j}) as a Tensor (differentiable)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    logp = F.log_softmax(model(tokens[:, :-1]), dim=-1)
    return logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)


def token_logprobs_np(model: Any, tokens: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The same without gradients, in chunks, as a float64 array."""
    out = []
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with no_grad():
            for i in range(0, len(tokens), batch_size):
                out.append(token_logprobs(model, tokens[i:i + batch_size]).data)
    finally:
        model.train(was_training)
    return np.concatenate(out).astype(np.float64)


def next_token_kl(model: Any, ref: Any, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B,) Σ_j KL(π(·|x_{≤j}) ‖ π_ref(·|x_{≤j})) over the masked states, exactly per state.

    By the chain rule this is an unbiased estimate of the sequence-level KL(π ‖ π_ref) when
    the rows are sampled from π, and never negative (the reported KL of the chapter).
    """
    with no_grad():
        was = (model.training, ref.training)
        model.eval()
        ref.eval()
        lp = F.log_softmax(model(tokens[:, :-1]), dim=-1).data.astype(np.float64)
        lq = F.log_softmax(ref(tokens[:, :-1]), dim=-1).data.astype(np.float64)
        model.train(was[0])
        ref.train(was[1])
    per_state = (np.exp(lp) * (lp - lq)).sum(-1)  # (B, T − 1)
    return np.asarray((per_state * mask).sum(-1))
