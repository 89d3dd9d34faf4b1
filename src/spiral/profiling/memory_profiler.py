"""The memory profiler: every array of a training step, tagged, on a timeline (stage 11).

It listens to the engine's allocation hooks (:mod:`spiral.autograd.hooks`): each new Tensor
(``on_tensor``), each gradient array the backward sweep allocates (``on_grads``), and
walks each new graph node's backward closure to find the extra arrays the op saved for
backward (layer norm's x̂, GELU's Φ(x), attention's probabilities, cross-entropy's
softmax). Arrays are counted by the buffer that owns the memory (a view adds nothing) and
leave the count when that buffer is garbage collected (``weakref.finalize``). Each array
carries one tag:

    param            model parameters          optimizer_state  Adam's m and v, momentum
    grad             a leaf's .grad            activation       what the graph keeps for backward
    temporary        gradients in flight and tensors outside any graph (inference)
    input            the batch (token ids and targets)

What the hooks cannot see: scratch arrays that live only inside one kernel (the p·g product
inside softmax's backward, Adam's one scratch buffer). Those are measured by the
independent witness, :func:`spiral.profiling.memory_witness.tracemalloc_peak`, and predicted
by :mod:`spiral.profiling.memory_model` as the ``scratch`` term.

API reused by stages 12-18: ``profile_step(model, batch, optimizer) -> MemoryTimeline`` and
``profile_inference(model, ids)``; ``timeline.peak``, ``timeline.peak_by_tag``,
``timeline.peak_op``. Chapter: stage 11 (memory analysis).
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spiral.autograd import hooks as _hooks
from spiral.autograd import no_grad
from spiral.nn import functional as F

__all__ = ["TAGS", "MemoryEvent", "MemoryTimeline", "MemoryProfiler", "profile_step",
           "profile_inference"]

TAGS = ("param", "grad", "optimizer_state", "activation", "temporary", "input")
_RANK = {t: i for i, t in enumerate(("temporary", "activation", "input", "grad",
                                     "optimizer_state", "param"))}


@dataclass(frozen=True)
class MemoryEvent:
    """One change of live bytes: ``delta`` bytes of ``tag`` by ``op`` in ``phase``."""

    phase: str
    op: str
    tag: str
    delta: int
    live: int


@dataclass
class MemoryTimeline:
    """Live bytes over a step; ``peak`` and where it happened, with the bytes per tag there."""

    events: list[MemoryEvent] = field(default_factory=list)
    peak: int = 0
    peak_index: int = -1
    peak_by_tag: dict[str, int] = field(default_factory=dict)
    baseline: int = 0

    @property
    def peak_event(self) -> MemoryEvent | None:
        return self.events[self.peak_index] if self.peak_index >= 0 else None

    @property
    def peak_op(self) -> str:
        e = self.peak_event
        return "" if e is None else e.op

    @property
    def peak_phase(self) -> str:
        e = self.peak_event
        return "" if e is None else e.phase

    def phase_peak(self, phase: str) -> int:
        """Highest live bytes during one phase (0 if the phase had no events)."""
        return max((e.live for e in self.events if e.phase == phase), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {"peak": self.peak, "peak_op": self.peak_op, "peak_phase": self.peak_phase,
                "peak_index": self.peak_index, "peak_by_tag": dict(self.peak_by_tag),
                "baseline": self.baseline, "n_events": len(self.events)}


def _owner(a: np.ndarray) -> np.ndarray:
    """The array that owns the buffer a view looks into."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class MemoryProfiler:
    """Context manager: ``with MemoryProfiler() as prof: ...; prof.timeline``.

    ``prof.phase = "backward"`` labels the events that follow; ``track(array, tag)`` adds
    arrays the hooks cannot see (parameters, optimizer state, the batch).
    """

    def __init__(self) -> None:
        self.timeline = MemoryTimeline()
        self.phase = "setup"
        self.live = 0
        self._by_tag = {t: 0 for t in TAGS}
        self._arrays: dict[int, list[Any]] = {}  # id(owner) -> [nbytes, tag]
        self._finalizers: list[weakref.finalize] = []  # detached on exit: no leak
        self._handle: _hooks.RemovableHandle | None = None
        self._active = False

    # ---------------------------------------------------------------- hook protocol
    def __call__(self, event: str, nbytes: int, tensor_id: int) -> None:
        """Plain allocation events are not used: ``on_tensor`` sees the tensor itself."""

    def on_tensor(self, t: Any) -> None:
        tag = "activation" if t._backward is not None else "temporary"
        op = t._op.removesuffix("Backward") or "tensor"
        self.track(t.data, tag, op)
        if t._backward is not None:
            for a in _saved_arrays(t._backward):
                self.track(a, "activation", op)

    def on_grads(self, node: Any, arrays: Any) -> None:
        leaf = node._backward is None
        op = "backward:" + (node._op.removesuffix("Backward") or "leaf")
        for a in arrays:
            a = getattr(a, "grad", a)  # an unmaterialized slice gradient holds its piece
            if isinstance(a, np.ndarray):
                self.track(a, "grad" if leaf else "temporary", op)

    def track_scratch(self, op: str, arrays: Any) -> None:
        """Arrays a fused node allocates inside its backward (stage 12's lean nodes report
        the intermediate gradients and recomputed values that separate nodes would have
        handed over visibly), counted as ``temporary`` while they live."""
        for a in arrays:
            self.track(a, "temporary", "backward:" + op)

    # ---------------------------------------------------------------- bookkeeping
    def track(self, array: Any, tag: str, op: str = "") -> None:
        """Count ``array``'s owning buffer under ``tag`` (once; a stronger tag wins)."""
        if not self._active or not isinstance(array, np.ndarray):
            return
        owner = _owner(array)
        key = id(owner)
        entry = self._arrays.get(key)
        if entry is not None:
            if _RANK[tag] > _RANK[entry[1]]:
                self._by_tag[entry[1]] -= entry[0]
                self._by_tag[tag] += entry[0]
                entry[1] = tag
            return
        n = int(owner.nbytes)
        self._arrays[key] = [n, tag]
        self._finalizers.append(weakref.finalize(owner, self._free, key, op))
        self._record(op, tag, n)

    def _free(self, key: int, op: str) -> None:
        entry = self._arrays.pop(key, None)
        if entry is not None and self._active:
            self._record(op, entry[1], -entry[0])

    def _record(self, op: str, tag: str, delta: int) -> None:
        self.live += delta
        self._by_tag[tag] += delta
        tl = self.timeline
        tl.events.append(MemoryEvent(self.phase, op, tag, delta, self.live))
        if self.live > tl.peak:
            tl.peak, tl.peak_index, tl.peak_by_tag = self.live, len(tl.events) - 1, dict(
                self._by_tag)

    def __enter__(self) -> MemoryProfiler:
        self._active = True
        self._handle = _hooks.register_allocation_hook(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._active = False
        for f in self._finalizers:
            f.detach()
        self._finalizers.clear()
        self._arrays.clear()


def _saved_arrays(backward: Any, depth: int = 0) -> list[np.ndarray]:
    """Arrays reachable from a backward closure: the cells, a Function's ctx, tuples."""
    found: list[np.ndarray] = []
    cells = getattr(backward, "__closure__", None) or ()
    stack: list[tuple[Any, int]] = [(c.cell_contents, 0) for c in cells
                                    if _cell_ok(c)]
    while stack:
        obj, d = stack.pop()
        if isinstance(obj, np.ndarray):
            found.append(obj)
        elif d < 3 and isinstance(obj, (tuple, list)):
            stack.extend((o, d + 1) for o in obj)
        elif d < 3 and type(obj).__name__ == "FunctionCtx":
            stack.extend((o, d + 1) for o in vars(obj).values())
        elif d < 3 and hasattr(obj, "data") and hasattr(obj, "_backward"):
            stack.append((obj.data, d + 1))
    return found


def _cell_ok(cell: Any) -> bool:
    try:
        _ = cell.cell_contents
    except ValueError:  # an empty cell
        return False
    return True


def _step_phases(prof: MemoryProfiler, model: Any, x: np.ndarray, y: np.ndarray,
                 optimizer: Any) -> None:
    prof.phase = "forward"
    logits = model(x)
    prof.phase = "loss"
    loss = F.cross_entropy(logits, y)
    del logits
    prof.phase = "backward"
    loss.backward()
    del loss
    if optimizer is not None:
        prof.phase = "step"
        optimizer.step()
        for state in optimizer.state.values():
            for v in state.values():
                prof.track(v, "optimizer_state", "step")
        prof.phase = "zero_grad"
        optimizer.zero_grad(set_to_none=True)


def as_array(a: Any) -> np.ndarray:
    """The array behind a batch: a Tensor's ``.data``, an ndarray itself (never its ``.data``,
    a raw memoryview: an array made from it is a new owner, and two views of one buffer, such
    as ``ids[:, :-1]`` and ``ids[:, 1:]``, would be counted twice)."""
    return np.asarray(a if isinstance(a, np.ndarray) else getattr(a, "data", a))


def profile_step(model: Any, batch: tuple[Any, Any], optimizer: Any = None, *,
                 warmup: bool = True,
                 track_extra: Callable[[MemoryProfiler], None] | None = None) -> MemoryTimeline:
    """Profile one training step (forward, loss, backward, ``optimizer.step``, zero_grad).

    ``batch`` is (ids, targets), both (B, T) integers. With ``warmup`` one unprofiled step
    runs first, so the optimizer state already exists (the steady state of training).
    ``track_extra(profiler)`` runs after the resident arrays are tracked, for storage the
    parameters do not expose (stage 15's NF4 codes and scales).
    """
    x, y = (as_array(a) for a in batch)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"batch must be (ids, targets) of the same 2-D shape, got "
                         f"{x.shape} and {y.shape}")
    model.train()
    if warmup and optimizer is not None:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del loss
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with MemoryProfiler() as prof:
            _track_resident(prof, model, optimizer, x, y)
            if track_extra is not None:
                track_extra(prof)
            prof.timeline.baseline = prof.live
            _step_phases(prof, model, x, y, optimizer)
    finally:
        if was_enabled:
            gc.enable()
    return prof.timeline


def profile_inference(model: Any, ids: Any) -> MemoryTimeline:
    """Profile one forward pass under ``no_grad`` (eval mode): weights + transient outputs."""
    x = as_array(ids)
    model.eval()
    gc.collect()
    try:
        with MemoryProfiler() as prof, no_grad():
            _track_resident(prof, model, None, x, None)
            prof.timeline.baseline = prof.live
            prof.phase = "forward"
            out = model(x)
            del out
    finally:
        model.train()
    return prof.timeline


def _track_resident(prof: MemoryProfiler, model: Any, optimizer: Any, x: Any, y: Any) -> None:
    for p in model.parameters():
        prof.track(p.data, "param", "resident")
        if p.grad is not None:
            prof.track(p.grad, "grad", "resident")
    if optimizer is not None:
        for state in optimizer.state.values():
            for v in state.values():
                prof.track(v, "optimizer_state", "resident")
    for a in (x, y):
        if a is not None:
            prof.track(a, "input", "batch")
