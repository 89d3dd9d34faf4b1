"""Pipeline parallelism: consecutive blocks on consecutive ranks, micro-batches flowing through.

Rank s of p holds blocks [L·s/p, L·(s+1)/p); rank 0 also the embeddings, rank p − 1 the final
norm and the (tied) output head. A forward step F_i of micro-batch i receives the activation
(b, T, d_model) from rank s − 1 and sends its output to rank s + 1; a backward step B_i
receives the output's gradient and sends the input's gradient back. Schedules:

- ``naive``: one micro-batch (the whole batch) goes forward through every stage, then back.
- ``gpipe`` (Huang et al. 2019): all m forwards, then all m backwards. With forward and
  backward times t_f, t_b per micro-batch and stage, the step lasts (m + p − 1)(t_f + t_b)
  while each stage works m(t_f + t_b), so the idle ("bubble") fraction is

      bubble = (p − 1) / (m + p − 1).

- ``1f1b`` (PipeDream-Flush; Narayanan et al. 2019, 2021): p − s − 1 warm-up forwards, then
  one forward, one backward alternately. The same bubble, but stage s never stores more
  than p − s micro-batches' activations instead of m.

The loss of micro-batch i is its mean cross-entropy divided by m, so the m backward passes
add up to the full batch's gradient. The embedding matrix, tied to the head, lives on the
first and the last rank; their two gradient contributions are summed across the pair
(as Megatron-LM does). Every step records a timeline: wall-clock start/end of each F/B, and
a logical clock (t_f = 1, t_b = 2 units) carried along with every message, which measures
the schedule's bubble free of this machine's noise; stage 11's memory profiler records the
peak of live activation bytes. Chapter: stage 13 (the bubble fraction).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.distributed.runtime import Comm
from spiral.nn import functional as F
from spiral.profiling.memory_profiler import MemoryProfiler

__all__ = ["SCHEDULES", "schedule", "PipelineStage", "bubble_fraction"]

SCHEDULES = ("naive", "gpipe", "1f1b")
COST = {"F": 1.0, "B": 2.0}  # logical time units per micro-batch and stage


def schedule(kind: str, m: int, p: int, s: int) -> list[tuple[str, int]]:
    """The order of forward ("F", i) and backward ("B", i) steps on stage s of p."""
    if kind == "naive" or kind == "gpipe":
        m = 1 if kind == "naive" else m
        return [("F", i) for i in range(m)] + [("B", i) for i in range(m)]
    if kind == "1f1b":
        warm = min(p - s - 1, m)
        ops = [("F", i) for i in range(warm)]
        for i in range(m - warm):
            ops += [("F", warm + i), ("B", i)]
        return ops + [("B", i) for i in range(m - warm, m)]
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")


def bubble_fraction(events: list[list[float]], start: int, end: int) -> float:
    """1 − Σ busy / (p · span) over timeline rows [stage, kind, micro, ...]; ``start`` and
    ``end`` are the columns of one clock (3, 4 logical; 5, 6 wall)."""
    stages = {int(e[0]) for e in events}
    t0 = min(e[start] for e in events)
    t1 = max(e[end] for e in events)
    busy = sum(e[end] - e[start] for e in events)
    return 1.0 - busy / (len(stages) * (t1 - t0))


def _message(array: np.ndarray, clock: float) -> np.ndarray:
    """The activation (or gradient) with the sender's logical clock appended, same dtype."""
    msg = np.empty(array.size + 1, dtype=array.dtype)
    msg[:-1] = array.reshape(-1)
    msg[-1] = clock
    return msg


class PipelineStage:
    """Rank ``comm.rank``'s slice of a GPT and the loop that runs one schedule step."""

    def __init__(self, model: Any, comm: Comm) -> None:
        p, s, L = comm.size, comm.rank, model.config.n_layers
        if L < p:
            raise ValueError(f"{L} layers cannot fill {p} pipeline stages")
        self.model, self.comm, self.p, self.s = model, comm, p, s
        self.first, self.last = s == 0, s == p - 1
        self.lo, self.hi = L * s // p, L * (s + 1) // p
        mine = [f"blocks.{i}." for i in range(self.lo, self.hi)]
        if self.first:
            mine += ["tok_emb.", "pos_emb."]
        if self.last:
            mine += ["final_norm.", "tok_emb."]  # the head is the tied embedding
        self.named = [(n, q) for n, q in model.named_parameters() if n.startswith(tuple(mine))]
        self.events: list[list[float]] = []
        self.peak_live_bytes = 0
        self.peak_in_flight = 0

    def parameters(self) -> list[Any]:
        return [q for _, q in self.named]

    def _forward(self, h: Any, y: np.ndarray | None, m: int) -> Tensor:
        if self.first:
            h = self.model._embed(np.asarray(h))
        for blk in self.model.blocks[self.lo:self.hi]:
            h = blk(h)
        if not self.last or y is None:
            return h
        logits = F.linear(self.model.final_norm(h), self.model.head_weight)
        return F.cross_entropy(logits, y) * (1.0 / m)

    def step(self, x: np.ndarray, y: np.ndarray, kind: str, m: int) -> float:
        """One training step's forward and backward passes on the global batch (x, y)."""
        m = 1 if kind == "naive" else m
        xs, ys = np.split(x, m), np.split(y, m)
        b, T, C = xs[0].shape[0], x.shape[1], self.model.config.d_model
        dtype = self.model.tok_emb.weight.data.dtype
        stored: dict[int, tuple[Any, Tensor]] = {}
        sends: list[Any] = []
        clock, loss = 0.0, 0.0
        profiler = MemoryProfiler()  # stage 11: live bytes of every tensor and saved array
        profiler.__enter__()
        try:
            for op, i in schedule(kind, m, self.p, self.s):
                t0 = time.perf_counter()
                if op == "F":
                    if self.first:
                        inp: Any = xs[i]
                    else:
                        buf = np.empty(b * T * C + 1, dtype=dtype)
                        self.comm.recv(buf, self.s - 1)
                        t0 = time.perf_counter()  # busy from here: waiting is idle time
                        clock = max(clock, float(buf[-1]))
                        inp = Tensor(buf[:-1].reshape(b, T, C), requires_grad=True)
                    out = self._forward(inp, ys[i], m)
                    stored[i] = (inp, out)
                    start, clock = clock, clock + COST["F"]
                    if self.last:
                        loss += float(out.item())
                    else:
                        msg = _message(out.data, clock)
                        sends.append((self.comm.isend(msg, self.s + 1, op="pp"), msg))
                else:
                    inp, out = stored.pop(i)
                    if self.last:
                        out.backward()
                    else:
                        buf = np.empty(b * T * C + 1, dtype=dtype)
                        self.comm.recv(buf, self.s + 1)
                        t0 = time.perf_counter()
                        clock = max(clock, float(buf[-1]))
                        out.backward(buf[:-1].reshape(b, T, C))
                    start, clock = clock, clock + COST["B"]
                    if not self.first:
                        msg = _message(inp.grad, clock)
                        sends.append((self.comm.isend(msg, self.s - 1, op="pp"), msg))
                    del inp, out
                self.peak_in_flight = max(self.peak_in_flight, len(stored))
                self.peak_live_bytes = max(self.peak_live_bytes, profiler.timeline.peak)
                self.events.append([self.s, 0.0 if op == "F" else 1.0, i, start, clock,
                                    t0, time.perf_counter()])
        finally:
            profiler.__exit__(None, None, None)
        for work, _ in sends:
            work.wait()
        self._sync_tied()
        return loss

    def _sync_tied(self) -> None:
        """Sum the tied embedding's two gradients (first and last rank)."""
        if self.p == 1:
            return
        w = self.model.tok_emb.weight
        if not (self.first or self.last):
            return
        g = np.ascontiguousarray(w.grad) if w.grad is not None else np.zeros_like(w.data)
        other = np.empty_like(g)
        peer = self.p - 1 if self.first else 0
        work = self.comm.isend(g, peer, op="pp_tied")
        self.comm.recv(other, peer)
        work.wait()
        w.grad = g + other if self.first else other + g
