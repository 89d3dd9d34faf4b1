"""Request traces and a replay clock: throughput and latency of a batching engine.

Arrivals of a Poisson process of rate λ are separated by independent Exp(λ) gaps. Replay
runs the engine on a clock: requests join the queue when the clock passes their arrival;
each iteration advances the clock by its cost — its measured wall time, or a cost model
``step_time(info)`` (seconds as a function of what the iteration did), which makes a run
exactly reproducible on a loaded machine. An idle engine jumps to the next arrival.

    throughput = generated tokens / makespan        latency_i = finish_i − arrival_i

Continuous batching raises throughput because a decode step's cost grows slowly with the
batch (the weights are read once per step, whatever B): keeping the batch full amortizes
that read over more tokens. Chapter: stage 17 (inference).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spiral.inference.scheduler import Engine, Request, StepInfo

__all__ = ["TraceResult", "poisson_trace", "replay"]


def poisson_trace(n: int, rate: float, rng: np.random.Generator, *, vocab_size: int,
                  prompt_len: tuple[int, int] = (4, 16), new_tokens: tuple[int, int] = (4, 32),
                  temperature: float = 1.0) -> list[Request]:
    """``n`` requests arriving at rate ``rate`` per second, with prompt and output lengths
    uniform on the inclusive ranges given and random prompt ids."""
    if n < 1 or rate <= 0:
        raise ValueError(f"need n >= 1 and rate > 0, got n={n}, rate={rate}")
    arrivals = np.cumsum(rng.exponential(1.0 / rate, size=n))
    out = []
    for i, t in enumerate(arrivals):
        p = int(rng.integers(prompt_len[0], prompt_len[1] + 1))
        m = int(rng.integers(new_tokens[0], new_tokens[1] + 1))
        out.append(Request(prompt=rng.integers(0, vocab_size, p).tolist(), max_new_tokens=m,
                           temperature=temperature, seed=i, arrival=float(t)))
    return out


@dataclass
class TraceResult:
    """Per-request latencies and the run's totals (clock in seconds)."""

    latencies: list[float]
    first_token: list[float]
    tokens: int
    makespan: float
    steps: int
    preemptions: int
    max_blocks_used: int
    batch_sizes: list[int] = field(default_factory=list)
    timeline: list[tuple[float, int, int]] = field(default_factory=list)  # (clock, batch, blocks)

    @property
    def throughput(self) -> float:
        return self.tokens / self.makespan

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q))

    def to_dict(self) -> dict[str, Any]:
        return {"throughput": self.throughput, "p50": self.percentile(50),
                "p99": self.percentile(99), "tokens": self.tokens, "makespan": self.makespan,
                "steps": self.steps, "preemptions": self.preemptions,
                "max_blocks_used": self.max_blocks_used,
                "mean_batch": float(np.mean(self.batch_sizes)) if self.batch_sizes else 0.0}


def replay(engine: Engine, requests: list[Request],
           step_time: Callable[[StepInfo], float] | None = None,
           max_steps: int = 1_000_000) -> TraceResult:
    """Run every request of the trace to completion on ``engine``; see the module doc."""
    pending = sorted(requests, key=lambda r: r.arrival)
    clock, i, steps, preempted = 0.0, 0, 0, 0
    first: dict[int, float] = {}
    finish: dict[int, float] = {}
    batches: list[int] = []
    timeline: list[tuple[float, int, int]] = []
    while i < len(pending) or engine.has_work:
        if not engine.has_work and pending[i].arrival > clock:
            clock = pending[i].arrival
        while i < len(pending) and pending[i].arrival <= clock:
            engine.add(pending[i])
            i += 1
        t0 = time.perf_counter()
        info = engine.step()
        clock += step_time(info) if step_time else time.perf_counter() - t0
        steps += 1
        preempted += info.preempted
        batches.append(len({r.id for r, _ in info.emitted}))
        timeline.append((clock, batches[-1], info.blocks_used))
        for r, _ in info.emitted:
            first.setdefault(r.id, clock)
            if r.done:
                finish[r.id] = clock
        if steps >= max_steps:
            raise RuntimeError(f"the trace did not finish in {max_steps} steps")
    lat = [finish[r.id] - r.arrival for r in pending]
    ttft = [first[r.id] - r.arrival for r in pending]
    return TraceResult(lat, ttft, sum(len(r.output) for r in pending),
                       clock - pending[0].arrival, steps, preempted, engine.max_blocks_used,
                       batches, timeline)
