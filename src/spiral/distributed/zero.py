"""ZeRO (Rajbhandari et al. 2020): data parallelism without N copies of the model states.

Plain data parallelism keeps on every rank the parameters (Ψ elements), the gradients (Ψ)
and Adam's two moments (2Ψ): 4Ψ elements of b bytes each (all in one dtype here; with mixed
precision the paper's 16 bytes per parameter). ZeRO cuts every parameter into N pieces,
piece r of each parameter belonging to rank r (``chunk_bounds``), and removes redundancy
in three stages:

    stage 1 (optimizer states):  Ψ + Ψ + 2Ψ/N          rank r updates only its pieces
    stage 2 (+ gradients):       Ψ + Ψ/N + 2Ψ/N        a gradient is reduce-scattered the
                                                        moment backward finishes it
    stage 3 (+ parameters):      (Ψ + Ψ + 2Ψ)/N        parameters are all-gathered on use

Communication per step and rank (ring, n = Ψ·b bytes): stages 1 and 2 replace DP's
all-reduce by a reduce-scatter of gradients plus an all-gather of updated parameters, the
same 2(N−1)/N·n. Stage 3 gathers each parameter before its module's forward and
reduce-scatters its gradient; the paper's ZeRO-3 also frees a layer's parameters after its
forward and gathers them again for backward (3(N−1)/N·n). Ours keeps a gathered parameter
until backward has finished its gradient (our autograd's saved arrays hold it anyway), so it
moves 2(N−1)/N·n and its peak holds the gathered parameters — a trade-off the chapter
measures. Chapter: stage 13 (ZeRO's per-device memory and communication).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral.distributed.collectives import chunk_bounds, ring_all_gather, ring_reduce_scatter
from spiral.distributed.runtime import Comm
from spiral.nn.module import Module, Parameter
from spiral.optim import AdamW
from spiral.profiling.memory_profiler import MemoryProfiler

__all__ = ["StepMemoryProfiler", "ZeroRedundancyOptimizer", "model_state_bytes",
           "zero_memory_elements"]


def zero_memory_elements(psi: int, n: int, stage: int) -> dict[str, float]:
    """The derivation: elements of parameters, gradients and Adam states per rank."""
    frac = {0: (1, 1, 1), 1: (1, 1, 1 / n), 2: (1, 1 / n, 1 / n), 3: (1 / n, 1 / n, 1 / n)}
    if stage not in frac:
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {stage}")
    p, g, o = frac[stage]
    return {"params": psi * p, "grads": psi * g, "optim": 2 * psi * o,
            "total": psi * p + psi * g + 2 * psi * o}


def model_state_bytes(params: list[Any], optimizer: Any) -> dict[str, int]:
    """Bytes this rank holds in parameter, gradient and optimizer-state arrays right now."""
    seen: set[int] = set()
    out = {"params": 0, "grads": 0, "optim": 0}
    for p in params:
        for key, arr in (("params", p.data), ("grads", p.grad)):
            if arr is None:
                continue
            base = arr if arr.base is None else arr.base
            if id(base) not in seen:  # a view of an array already counted costs nothing
                seen.add(id(base))
                out[key] += base.nbytes
    for state in optimizer.state.values():
        out["optim"] += sum(v.nbytes for v in state.values() if isinstance(v, np.ndarray))
    return out


class StepMemoryProfiler(MemoryProfiler):
    """Stage 11's profiler inside one rank's step, plus the arrays no engine hook sees.

    The hooks see every tensor, saved array and leaf gradient the step allocates; ZeRO's
    pieces, their gradients (cut from a reduce-scattered buffer) and gathered parameters
    are set outside the engine, so ``track_states`` tags them (once per buffer, a view adds
    nothing). ``live_by_tag()`` is the live bytes per tag at the moment it is called.
    """

    def track_states(self, params: list[Any], optimizer: Any) -> None:
        for p in params:
            self.track(p.data, "param", "model state")
            if p.grad is not None:
                self.track(p.grad, "grad", "model state")
        for state in optimizer.state.values():
            for v in state.values():
                self.track(v, "optimizer_state", "model state")

    def live_by_tag(self) -> dict[str, int]:
        return dict(self._by_tag)


class ZeroRedundancyOptimizer:
    """AdamW over rank ``comm.rank``'s pieces of ``model``'s parameters (stages 1, 2, 3).

    Messages go in groups: the pieces of several parameters are packed rank-major
    ([every parameter's piece 0 | every parameter's piece 1 | ...]) so that ONE ring
    reduce-scatter or all-gather moves a whole bucket (gradients, ``bucket_cap_bytes``) or a
    whole unit (a transformer block's parameters, stage 3's gather on use).
    """

    def __init__(self, model: Module, comm: Comm, stage: int, *, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 1e-2,
                 bucket_cap_bytes: int = 2**20) -> None:
        if stage not in (1, 2, 3):
            raise ValueError(f"ZeRO stage must be 1, 2 or 3, got {stage}")
        self.model, self.comm, self.stage = model, comm, stage
        self.named = list(model.named_parameters())
        self.param = dict(self.named)
        self.shapes = {n: p.data.shape for n, p in self.named}
        self.chunks = {n: chunk_bounds(p.data.size, comm.size) for n, p in self.named}
        self.pieces: dict[str, Parameter] = {}
        for n, p in self.named:
            a, b = self.chunks[n][comm.rank]
            flat = p.data.reshape(-1)
            # stages 1-2: the piece is a VIEW of the full parameter (updated in place);
            # stage 3: the piece is all this rank keeps
            self.pieces[n] = Parameter(flat[a:b] if stage < 3 else flat[a:b].copy())
        decay = [self.pieces[n] for n, p in self.named if p.ndim >= 2]
        rest = [self.pieces[n] for n, p in self.named if p.ndim < 2]
        self.inner = AdamW([{"params": decay, "weight_decay": weight_decay},
                            {"params": rest, "weight_decay": 0.0}], lr=lr, betas=betas)
        self.buckets: list[list[str]] = [[]]
        size = 0
        for n, p in reversed(self.named):  # backward finishes the last layers first
            if size >= bucket_cap_bytes:
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(n)
            size += p.data.nbytes
        self._ready: dict[int, set[str]] = {i: set() for i in range(len(self.buckets))}
        if stage >= 2:
            where = {n: i for i, names in enumerate(self.buckets) for n in names}
            for n, p in self.named:
                p.register_post_accumulate_grad_hook(lambda t, n=n: self._on_grad(n, where[n]))
        if stage == 3:
            for _, p in self.named:
                self._release(p)
            self._wrap_units()

    # -- packing and communication ----------------------------------------------------------
    def _bounds(self, names: list[str]) -> list[tuple[int, int]]:
        sizes = [sum(self.chunks[n][q][1] - self.chunks[n][q][0] for n in names)
                 for q in range(self.comm.size)]
        edges = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]

    def _reduce_scatter(self, names: list[str]) -> None:
        """Sum the named gradients over ranks; keep (and average) only this rank's pieces."""
        dtype = self.pieces[names[0]].data.dtype
        parts = []
        for q in range(self.comm.size):
            for n in names:
                g = self.param[n].grad
                a, b = self.chunks[n][q]
                parts.append(np.zeros(b - a, dtype) if g is None else g.reshape(-1)[a:b])
        buf = np.concatenate(parts).astype(dtype, copy=False)
        lo, _ = ring_reduce_scatter(self.comm, buf, bounds=self._bounds(names))
        for n in names:
            a, b = self.chunks[n][self.comm.rank]
            mine = buf[lo:lo + b - a] / self.comm.size
            lo += b - a
            piece = self.pieces[n]
            piece.grad = mine if piece.grad is None else piece.grad + mine
            self.param[n].grad = None  # the full gradient is freed once its piece is safe
            if self.stage == 3:
                self._release(self.param[n])

    def _gather(self, names: list[str]) -> None:
        """All-gather the named parameters' pieces into full arrays."""
        bounds = self._bounds(names)
        buf = np.empty(bounds[-1][1], dtype=self.pieces[names[0]].data.dtype)
        lo = bounds[self.comm.rank][0]
        for n in names:
            piece = self.pieces[n].data
            buf[lo:lo + piece.size] = piece
            lo += piece.size
        ring_all_gather(self.comm, buf, bounds=bounds)
        lo = 0
        full = {n: np.empty(self.param[n].data.size if self.stage < 3 else
                            int(np.prod(self.shapes[n])), dtype=buf.dtype) for n in names}
        for q in range(self.comm.size):
            for n in names:
                a, b = self.chunks[n][q]
                full[n][a:b] = buf[lo:lo + b - a]
                lo += b - a
        for n in names:
            p = self.param[n]
            if self.stage == 3:
                p.data = full[n].reshape(self.shapes[n])
            else:
                p.data.reshape(-1)[:] = full[n]  # the piece is a view: keep the same array

    def _release(self, p: Any) -> None:
        p.data = np.empty(0, dtype=self.pieces[self.named[0][0]].data.dtype)

    def _on_grad(self, name: str, bucket: int) -> None:
        ready = self._ready[bucket]
        ready.add(name)
        if len(ready) == len(self.buckets[bucket]):
            self._reduce_scatter(self.buckets[bucket])
            ready.clear()

    def _wrap_units(self) -> None:
        """Stage 3: gather a unit's parameters (a block, or a module outside the blocks)
        just before its forward runs."""
        by_id = {id(p): n for n, p in self.named}
        blocks = list(getattr(self.model, "blocks", []))
        inside = {id(p) for blk in blocks for p in blk.parameters()}
        units = blocks + [m for m in self.model.modules()
                          if any(p is not None and id(p) not in inside
                                 for p in m._parameters.values())]
        for unit in units:
            names = [by_id[id(p)] for p in unit.parameters()]
            inner = unit.forward

            def forward(*args: Any, _inner: Any = inner, _names: Any = names, **kw: Any) -> Any:
                missing = [n for n in _names if self.param[n].data.size == 0]
                if missing:
                    self._gather(missing)
                return _inner(*args, **kw)

            object.__setattr__(unit, "forward", forward)

    # -- the step -------------------------------------------------------------------------
    def zero_grad(self) -> None:
        for _, p in self.named:
            p.grad = None
        self.inner.zero_grad()

    def step(self) -> None:
        """Stage 1 reduce-scatters all gradients now; update the pieces; stages 1-2
        all-gather the updated parameters."""
        if self.stage == 1:
            self._reduce_scatter([n for n, _ in self.named])
        else:  # buckets whose parameters got no gradient this step
            for i, names in enumerate(self.buckets):
                if self._ready[i]:
                    self._reduce_scatter(names)
                    self._ready[i].clear()
        self.inner.step()
        if self.stage < 3:
            self._gather([n for n, _ in self.named])
        else:
            for _, p in self.named:
                if p.data.size:  # a parameter that got no gradient: drop the stale copy
                    self._release(p)

    def memory(self) -> dict[str, int]:
        """Bytes of parameters, gradients and Adam states this rank holds now."""
        return model_state_bytes(self.state_params(), self.inner)

    def state_params(self) -> list[Any]:
        """The full parameters and this rank's pieces (views of them in stages 1-2)."""
        return [p for _, p in self.named] + list(self.pieces.values())
