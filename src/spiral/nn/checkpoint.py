"""Gradient checkpointing: keep a segment's inputs, recompute its activations in backward.

A network of n layers whose forward pass stores a_i bytes per layer holds Σ a_i at the end
of the forward pass. Checkpointing a segment keeps only its INPUT; the segment runs under
``no_grad`` (nothing saved) and, when backward reaches it, runs again with gradients on,
backpropagates through the fresh sub-graph and frees it. Cutting n equal blocks into c
checkpointed segments of n/c blocks each stores c segment inputs (x bytes each) and, at the
worst moment of backward, one recomputed segment (n/c · a bytes):

    M(c) = c·x + (n/c)·a          minimised at  c* = √(n·a/x)

which is Chen et al.'s √n when a layer's stored activations are one input's worth (a = x);
a transformer block saves many times its input (a/x = r ≈ 15-30), so at block granularity
the optimum moves towards "every block" (c* = min(n, √(n·r))) — the chapter measures both.
The price is one extra forward pass of every checkpointed segment (≈ 1/3 more compute).

Semantics follow ``torch.utils.checkpoint`` (the reentrant variant): parameters used inside
``function`` receive their gradients when backward reaches the segment; the random state of
every NumPy ``Generator`` the segment uses (for a ``Module``: every generator held by it or
its submodules; otherwise pass ``rngs=``) is saved before the forward and replayed in the
recompute, and restored afterwards, so dropout masks — and therefore gradients — are
bit-identical to the run without checkpointing, and later random draws are unchanged.
Papers: Griewank & Walther (2000), "Revolve"; Chen et al. (2016), "Training deep nets with
sublinear memory cost"; Korthikanti et al. (2022) for selective recomputation.
Chapter: stage 12 (memory optimization).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from spiral.autograd import Tensor, enable_grad, is_grad_enabled, no_grad
from spiral.autograd.function import Function
from spiral.nn.module import Module

__all__ = ["checkpoint", "checkpoint_sequential", "run_segments", "segment_sizes",
           "CHECKPOINT_MODES", "generators_of"]

CHECKPOINT_MODES = ("none", "blocks", "sqrt", "selective")


def generators_of(obj: Any) -> list[np.random.Generator]:
    """Every distinct ``np.random.Generator`` held by a module and its submodules."""
    found: dict[int, np.random.Generator] = {}
    modules = list(obj.modules()) if isinstance(obj, Module) else []
    for m in modules:
        for value in vars(m).values():
            if isinstance(value, np.random.Generator):
                found.setdefault(id(value), value)
    return list(found.values())


class _CheckpointFn(Function):
    @staticmethod
    def forward(ctx: Any, run: Callable[..., Tensor], rngs: Sequence[np.random.Generator],
                kwargs: dict[str, Any], *arrays: Any) -> Any:
        ctx.run, ctx.rngs, ctx.kwargs, ctx.arrays = run, rngs, kwargs, arrays
        ctx.states = [g.bit_generator.state for g in rngs]  # replayed in the recompute
        with no_grad():  # nothing inside the segment is saved
            out = run(*[Tensor(a) if isinstance(a, np.ndarray) else a for a in arrays],
                      **kwargs)
        if not isinstance(out, Tensor):
            raise TypeError(f"checkpoint: the function must return one Tensor, got "
                            f"{type(out).__name__}")
        return out.data

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
        needs = ctx.needs_input_grad[3:]
        inputs = [Tensor(a, requires_grad=bool(n)) if isinstance(a, np.ndarray) else a
                  for a, n in zip(ctx.arrays, needs)]
        now = [g.bit_generator.state for g in ctx.rngs]
        for g, s in zip(ctx.rngs, ctx.states):
            g.bit_generator.state = s  # the same dropout masks as the first forward
        try:
            with enable_grad():
                out = ctx.run(*inputs, **ctx.kwargs)
        finally:
            for g, s in zip(ctx.rngs, now):
                g.bit_generator.state = s  # later draws as if no recompute had happened
        if out.requires_grad:
            out.backward(grad)  # parameters inside the segment get their .grad here
        ctx.arrays = ()
        grads = [t.grad if isinstance(t, Tensor) and n else None for t, n in zip(inputs, needs)]
        return (None, None, None, *grads)


def checkpoint(function: Callable[..., Tensor], *args: Any, use_reentrant: bool = True,
               preserve_rng_state: bool = True,
               rngs: Sequence[np.random.Generator] | None = None, **kwargs: Any) -> Tensor:
    """``function(*args, **kwargs)``, storing only ``args``; recomputed during backward.

    Like ``torch.utils.checkpoint.checkpoint`` (reentrant): at least one Tensor argument
    should require a gradient, or parameters inside the segment get none. ``rngs`` (default:
    the generators of ``function`` when it is a Module) are replayed when
    ``preserve_rng_state``.
    """
    if not use_reentrant:
        raise ValueError("checkpoint: only use_reentrant=True is implemented")
    if not callable(function):
        raise TypeError(f"checkpoint: function must be callable, got {type(function).__name__}")
    gens = list(rngs) if rngs is not None else generators_of(function)
    if not preserve_rng_state:
        gens = []
    if not is_grad_enabled():  # nothing to recompute: run it plainly
        return function(*args, **kwargs)
    return _CheckpointFn.apply(function, gens, kwargs, *args)


def segment_sizes(n: int, mode: str) -> list[int]:
    """How ``mode`` cuts n blocks into checkpointed segments (their lengths, summing to n).

    ``blocks``: n segments of 1; ``sqrt``: segments of ⌈√n⌉ (Chen et al.'s placement);
    ``none`` and ``selective``: one uncheckpointed run (returned as ``[]``)."""
    if mode not in CHECKPOINT_MODES:
        raise ValueError(f"checkpoint must be one of {CHECKPOINT_MODES}, got {mode!r}")
    if mode in ("none", "selective") or n == 0:
        return []
    size = 1 if mode == "blocks" else max(1, math.ceil(math.sqrt(n)))
    return [min(size, n - i) for i in range(0, n, size)]


def checkpoint_sequential(functions: Sequence[Callable[[Tensor], Tensor]], segments: int,
                          input: Tensor, use_reentrant: bool = True) -> Tensor:
    """Run ``functions`` in order, as ``segments`` checkpointed chunks of near-equal length.

    Unlike torch (which leaves its last segment unstored-but-plain) every segment here is
    checkpointed, so the stored inputs are exactly ``segments`` — the count the chapter's
    cost model M(c) = c·x + (n/c)·a varies."""
    n = len(functions)
    if not 1 <= segments <= max(n, 1):
        raise ValueError(f"segments must be in [1, {n}], got {segments}")
    bounds = np.linspace(0, n, segments + 1).round().astype(int)
    return run_segments(functions, list(np.diff(bounds)), input, use_reentrant)


def run_segments(functions: Sequence[Callable[[Tensor], Tensor]], sizes: Sequence[int],
                 x: Tensor, use_reentrant: bool = True) -> Tensor:
    """Run ``functions`` in order, checkpointing consecutive chunks of the given ``sizes``
    (each chunk's generators replayed); empty ``sizes`` runs them plainly."""
    if not sizes:
        for f in functions:
            x = f(x)
        return x
    if sum(sizes) != len(functions) or min(sizes) < 1:
        raise ValueError(f"segment sizes {list(sizes)} do not cut {len(functions)} functions")
    lo = 0
    for size in sizes:
        chunk = list(functions[lo:lo + int(size)])
        lo += int(size)

        def run(z: Tensor, chunk: list[Callable[[Tensor], Tensor]] = chunk) -> Tensor:
            for f in chunk:
                z = f(z)
            return z

        gens: list[np.random.Generator] = []
        for f in chunk:
            gens += [g for g in generators_of(f) if all(g is not h for h in gens)]
        x = checkpoint(run, x, use_reentrant=use_reentrant, rngs=gens)
    return x
