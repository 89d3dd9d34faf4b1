"""Speculative decoding: a small draft model proposes, the target model verifies in one pass.

Each round the draft samples k tokens x_1..x_k from q_i = q(· | prefix, x_<i); the target
scores all of them in ONE forward of k + 1 positions, giving p_1..p_{k+1}. Then, in order,

    accept x_i with probability min(1, p_i(x_i) / q_i(x_i));
    at the first rejection, emit y ~ norm(max(0, p_i − q_i)) and end the round;
    if all k are accepted, emit a bonus y ~ p_{k+1}.

Every emitted token is distributed exactly as p_i (Leviathan et al., 2023, Thm. 1; Chen et
al., 2023): P(emit x) = q(x)·min(1, p(x)/q(x)) + (1 − Σ_z min(p(z), q(z)))·r(x) = min(p, q)
+ max(0, p − q) = p(x). With temperature 0 both p and q are one-hot, so the output is the
target's greedy output token for token. With per-token acceptance rate α the expected tokens
per round are (1 − α^{k+1}) / (1 − α); with a draft costing c target forwards, the speed-up
over plain decoding is that divided by (k·c + 1). Chapter: stage 17 (inference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spiral.generate import check_sampling_options, filter_probs
from spiral.inference.kv_cache import KVCache, forward_cached

__all__ = ["SpeculativeOutput", "speculative_generate", "expected_tokens_per_round",
           "expected_speedup"]


@dataclass
class SpeculativeOutput:
    """The new tokens and the round statistics (acceptance rate = accepted / drafted)."""

    tokens: list[int] = field(default_factory=list)
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    per_round: list[tuple[int, int]] = field(default_factory=list)  # (drafted, accepted)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else float("nan")

    @property
    def alpha(self) -> float:
        """Per-token acceptance probability: accepted over tokens actually tested (drafts
        after a rejection are never tested). The α of the tokens-per-round formula."""
        rejected = sum(a < d for d, a in self.per_round)
        tested = self.accepted + rejected
        return self.accepted / tested if tested else float("nan")


def expected_tokens_per_round(alpha: float, k: int) -> float:
    """(1 − α^{k+1}) / (1 − α): tokens one round emits with i.i.d. acceptance rate α."""
    if not 0.0 <= alpha <= 1.0 or k < 0:
        raise ValueError(f"need 0 <= alpha <= 1 and k >= 0, got alpha={alpha}, k={k}")
    return float(k + 1) if alpha == 1.0 else (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def expected_speedup(alpha: float, k: int, cost_ratio: float, verify_cost: float = 1.0
                     ) -> float:
    """Tokens per round over the round's cost in target decode steps, k·c + v (v: the
    verifying forward of k + 1 positions, 1 when it costs one decode step)."""
    return expected_tokens_per_round(alpha, k) / (k * cost_ratio + verify_cost)


def _sync(cache: KVCache, ids: list[int]) -> list[int]:
    """Roll the cache back to the committed ids (all but the last stay cached); return the
    ids the next forward must read."""
    cache.truncate(min(cache.length, len(ids) - 1))
    return ids[cache.length:]


def speculative_generate(target: Any, draft: Any, prompt: Sequence[int], max_new_tokens: int,
                         rng: np.random.Generator, *, k: int = 4, temperature: float = 1.0,
                         top_k: int | None = None, top_p: float | None = None,
                         stop_token: int | None = None) -> SpeculativeOutput:
    """Continue ``prompt`` by up to ``max_new_tokens`` ids from the target's distribution
    (after temperature / top-k / top-p, applied to both models), drafting ``k`` per round.

    Both models need prompt + max_new_tokens ≤ their context_length (no sliding window).
    """
    ids = [int(t) for t in prompt]
    check_sampling_options(temperature, top_k, top_p)
    if not ids:
        raise ValueError("the prompt needs at least one token (e.g. the end-of-text marker)")
    if k < 0 or max_new_tokens < 0:
        raise ValueError(f"k and max_new_tokens must be >= 0, got k={k}, "
                         f"max_new_tokens={max_new_tokens}")
    if target.config.vocab_size != draft.config.vocab_size:
        raise ValueError("the draft and target models must share one vocabulary")
    for m in (target, draft):
        if len(ids) + max_new_tokens > m.context_length:
            raise ValueError(f"prompt + max_new_tokens = {len(ids) + max_new_tokens} exceeds "
                             f"a context_length of {m.context_length}")
    t_cache, d_cache = KVCache.for_model(target), KVCache.for_model(draft)
    out = SpeculativeOutput()

    def probs(model: Any, cache: KVCache, new: list[int]) -> np.ndarray:
        logits = forward_cached(model, np.asarray(new, dtype=np.int64)[None, :], cache)[0]
        return np.stack([filter_probs(z, temperature, top_k, top_p) for z in logits])

    while len(out.tokens) < max_new_tokens:
        kr = min(k, max_new_tokens - len(out.tokens) - 1)  # never overshoot the budget
        xs: list[int] = []
        qs: list[np.ndarray] = []
        pending = _sync(d_cache, ids)
        for _ in range(kr):  # the draft proposes kr tokens, one cached step each
            q = probs(draft, d_cache, pending)[-1]
            xs.append(int(rng.choice(q.size, p=q)))
            qs.append(q)
            pending = xs[-1:]
        p = probs(target, t_cache, _sync(t_cache, ids) + xs)[-(kr + 1):]  # p_1 .. p_{kr+1}
        new: list[int] = []
        for i, x in enumerate(xs):
            if rng.random() < min(1.0, p[i, x] / qs[i][x]):
                new.append(x)
                continue
            residual = np.maximum(p[i] - qs[i], 0.0)
            new.append(int(rng.choice(residual.size, p=residual / residual.sum())))
            break
        else:
            new.append(int(rng.choice(p.shape[1], p=p[kr])))  # the bonus token
        n_accepted = len(new) - 1  # every token but the residual or bonus one
        out.rounds, out.drafted, out.accepted = (out.rounds + 1, out.drafted + kr,
                                                 out.accepted + n_accepted)
        out.per_round.append((kr, n_accepted))
        if stop_token is not None and stop_token in new:
            new = new[:new.index(stop_token) + 1]
            ids += new
            out.tokens += new
            break
        ids += new
        out.tokens += new
    return out
