"""Static and continuous batching over a paged KV cache, with a request scheduler.

Every call of :meth:`Engine.step` is one iteration:

1. **admit** waiting requests, oldest first, while a batch slot is free and the pool has
   the blocks their context needs (``ceil(n / block_size)``); each admitted request is
   **prefilled** (one forward of its prompt) and samples its first token;
2. **decode** one token for every request that was already running, in ONE batched forward
   (:func:`~spiral.inference.batched.forward_batch`); a request that needs a new block
   when none is free **preempts** the most recently admitted running request, whose blocks
   are freed and which goes back to the head of the queue to be recomputed later (its
   tokens so far become part of its prompt, as vLLM's recompute preemption does);
3. **retire** requests that hit ``max_new_tokens`` or their stop token; their blocks return.

With ``prefix_cache=True`` a new request whose prompt begins like the cached context of a
running request shares that prefix's blocks (:meth:`PagedKVCache.fork_prefix`, copy on
write) and prefills only the rest — a shared system prompt is computed and stored once.

``policy="continuous"`` admits into any free slot at every iteration (Yu et al., 2022,
Orca); ``policy="static"`` admits a whole batch only when the previous batch has finished,
so slots freed by short requests stay empty until the longest one ends. Sampling uses each
request's own generator, so a request's tokens do not depend on its batch mates.
Chapter: stage 17 (inference).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spiral.generate import check_sampling_options, filter_probs
from spiral.inference.batched import forward_batch
from spiral.inference.kv_cache import forward_cached
from spiral.inference.paged import OutOfBlocks, PagedKVCache

__all__ = ["Engine", "Request", "StepInfo"]


@dataclass
class Request:
    """A completion request and its progress; ``seed`` fixes its sampled tokens."""

    prompt: list[int]
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    stop_token: int | None = None
    seed: int = 0
    arrival: float = 0.0
    id: int = -1
    output: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    preemptions: int = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.prompt:
            raise ValueError("the prompt needs at least one token")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        check_sampling_options(self.temperature, self.top_k, self.top_p)
        self.rng = np.random.default_rng(self.seed)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def context(self) -> list[int]:
        return self.prompt + self.output


@dataclass
class StepInfo:
    """What one iteration did: tokens prefilled, rows decoded, preemptions, blocks in use."""

    prefill_tokens: int = 0
    decoded: int = 0
    preempted: int = 0
    blocks_used: int = 0
    emitted: list[tuple[Request, int]] = field(default_factory=list)


class Engine:
    """A scheduler over one model and one :class:`PagedKVCache` pool of ``num_blocks``."""

    def __init__(self, model: Any, num_blocks: int, block_size: int = 16, max_batch: int = 8,
                 policy: str = "continuous", prefix_cache: bool = False) -> None:
        if policy not in ("continuous", "static"):
            raise ValueError(f"policy must be 'continuous' or 'static', got {policy!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model, self.policy, self.max_batch = model, policy, max_batch
        self.pool = PagedKVCache.for_model(model, num_blocks, block_size)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # in admission order
        self.finished: list[Request] = []
        self.max_blocks_used = 0
        self.prefix_cache, self.shared_tokens, self._shared = prefix_cache, 0, 0
        self._next_id = 0

    def blocks_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.pool.block_size)

    def add(self, request: Request) -> Request:
        """Queue a request; one that could never fit the model or the pool is refused."""
        total = len(request.prompt) + request.max_new_tokens
        if total > self.model.context_length:
            raise ValueError(f"prompt ({len(request.prompt)} tokens) + max_new_tokens "
                             f"({request.max_new_tokens}) exceeds the context length "
                             f"{self.model.context_length}")
        if self.blocks_for(total) > self.pool.num_blocks:
            raise ValueError(f"the request needs {self.blocks_for(total)} blocks; the pool "
                             f"has {self.pool.num_blocks}")
        request.id, self._next_id = self._next_id, self._next_id + 1
        self.waiting.append(request)
        return request

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _sample(self, r: Request, logits: np.ndarray, info: StepInfo) -> None:
        p = filter_probs(logits, r.temperature, r.top_k, r.top_p)
        tok = int(r.rng.choice(p.size, p=p))
        r.output.append(tok)
        info.emitted.append((r, tok))
        if r.stop_token is not None and tok == r.stop_token:
            r.finish_reason = "stop"
        elif len(r.output) >= r.max_new_tokens:
            r.finish_reason = "length"

    def _admit(self, info: StepInfo) -> list[Request]:
        if self.policy == "static" and self.running:
            return []
        admitted = []
        while self.waiting and len(self.running) < self.max_batch:
            r = self.waiting[0]
            ctx = r.context()
            if self.blocks_for(len(ctx)) > self.pool.num_free:
                break  # first come, first served: no overtaking
            self.waiting.popleft()
            seq = self._start(r.id, ctx)
            logits = forward_cached(self.model, np.asarray(ctx[seq.length:])[None, :], seq)
            info.prefill_tokens += len(ctx) - self._shared
            self._sample(r, logits[0, -1], info)
            self.running.append(r)
            admitted.append(r)
        return admitted

    def _start(self, seq_id: int, ctx: list[int]) -> Any:
        """A new sequence for ``ctx``; with ``prefix_cache``, it shares the blocks of the
        longest prefix it has in common with a running request (at most len − 1 tokens, so
        one position is left to compute the next token's logits)."""
        self._shared = 0
        best, parent = 0, None
        if self.prefix_cache:
            for other in self.running:
                octx = other.context()[:self.pool.lengths[other.id]]  # what is cached
                n = 0
                for a, b in zip(octx, ctx[:-1]):
                    if a != b:
                        break
                    n += 1
                if n > best:
                    best, parent = n, other.id
        if parent is None:
            return self.pool.sequence(seq_id)
        self._shared = best
        self.shared_tokens += best
        return self.pool.fork_prefix(parent, seq_id, best)

    def _preempt(self, info: StepInfo) -> Request:
        victim = self.running.pop()  # the most recently admitted
        self.pool.free_sequence(victim.id)
        victim.preemptions += 1
        info.preempted += 1
        self.waiting.appendleft(victim)
        return victim

    def _decode(self, rows: list[Request], info: StepInfo) -> None:
        rows = [r for r in rows if not r.done]
        i = 0
        while i < len(rows):  # reserve one slot per row, preempting from the back
            try:
                self.pool.reserve(rows[i].id, 1)
                i += 1
            except OutOfBlocks:
                victim = self._preempt(info)
                if victim in rows:
                    rows.remove(victim)
        if not rows:
            return
        seqs = [self.pool.sequence(r.id) for r in rows]
        logits = forward_batch(self.model, np.array([[r.output[-1]] for r in rows]), seqs)
        info.decoded += len(rows)
        for r, z in zip(rows, logits[:, -1]):
            self._sample(r, z, info)

    def abort(self, request: Request, reason: str = "abort") -> None:
        """Stop a request now (a stop string matched, the client left); its blocks return."""
        if request in self.waiting:
            self.waiting.remove(request)
        if request in self.running:
            self.running.remove(request)
            self.pool.free_sequence(request.id)
        if request.finish_reason is None:
            request.finish_reason = reason
        self.finished.append(request)

    def step(self) -> StepInfo:
        """One iteration: admit and prefill, decode the others, retire the finished."""
        info = StepInfo()
        before = [r for r in self.running]
        self._admit(info)
        self._decode(before, info)
        info.blocks_used = self.pool.num_blocks - self.pool.num_free
        self.max_blocks_used = max(self.max_blocks_used, info.blocks_used)
        for r in [r for r in self.running if r.done]:
            self.running.remove(r)
            self.pool.free_sequence(r.id)
            self.finished.append(r)
        return info
