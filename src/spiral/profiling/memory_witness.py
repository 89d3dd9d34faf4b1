"""Independent witnesses for the memory profiler: tracemalloc and torch.profiler.

NumPy reports every data buffer it allocates to Python's ``tracemalloc`` (in its own
domain, ``np.lib.tracemalloc_domain``), including the scratch arrays that live only inside
one kernel, which the engine's hooks cannot see. :func:`tracemalloc_step_peak` runs the same
training step as :func:`spiral.profiling.memory_profiler.profile_step` under tracemalloc:

    numpy peak = traced peak − Python objects (the graph's closures, tensors, dicts)
                 + resident arrays (allocated before tracing began)

The Python-object bytes are read from a snapshot at the end of the forward pass (domain
filter: everything but NumPy's), when the graph, and so the Python side, is largest.

:func:`torch_step_peak` reads PyTorch's allocator events on CPU (``torch.profiler`` with
``profile_memory=True``) and takes the maximum of their running sum: the same quantity for
the same step in another engine (torch is imported lazily; the core never needs it).
Chapter: stage 11 (memory analysis).
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import numpy as np

from spiral.nn import functional as F

__all__ = ["tracemalloc_step_peak", "torch_step_peak"]


def _resident(model: Any, optimizer: Any, arrays: tuple[np.ndarray, ...]) -> int:
    total = sum(int(p.data.nbytes) for p in model.parameters())
    if optimizer is not None:
        total += sum(int(v.nbytes) for st in optimizer.state.values() for v in st.values()
                     if isinstance(v, np.ndarray))
    return total + sum(int(a.nbytes) for a in arrays)


def tracemalloc_step_peak(model: Any, batch: tuple[Any, Any], optimizer: Any = None, *,
                          warmup: bool = True) -> dict[str, int]:
    """Peak NumPy bytes of one training step, as tracemalloc counts them.

    Returns ``numpy_peak`` (comparable to the profiler's peak), ``traced_peak`` (all
    domains, above the untraced resident arrays), ``python_objects`` and ``resident``.
    """
    x, y = (np.asarray(getattr(a, "data", a)) for a in batch)
    model.train()
    if warmup and optimizer is not None:
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    gc.collect()
    resident = _resident(model, optimizer, (x, y))
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        loss = F.cross_entropy(model(x), y)
        forward_peak = tracemalloc.get_traced_memory()[1]
        snap = tracemalloc.take_snapshot()
        python = sum(t.size for t in snap.filter_traces(
            [tracemalloc.DomainFilter(False, np.lib.tracemalloc_domain)]).traces)
        del snap
        tracemalloc.reset_peak()  # the snapshot's own objects must not count
        loss.backward()
        del loss
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        peak = max(tracemalloc.get_traced_memory()[1], forward_peak)
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return {"numpy_peak": peak - base - python + resident, "traced_peak": peak - base,
            "python_objects": python, "resident": resident}


def torch_step_peak(model: Any, ids: np.ndarray, targets: np.ndarray,
                    optimizer: Any = None) -> dict[str, Any]:
    """Peak CPU bytes of one torch training step from ``torch.profiler`` memory events.

    The resident tensors (weights, optimizer state after a warm-up step) were allocated
    before profiling; their bytes are added so the number is comparable to ours.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    x = torch.as_tensor(ids, dtype=torch.long)
    y = torch.as_tensor(targets, dtype=torch.long)

    def step() -> None:
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 y.reshape(-1))
        del logits
        loss.backward()
        del loss
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: the optimizer state exists from here on
    resident = sum(p.numel() * p.element_size() for p in model.parameters())
    if optimizer is not None:
        resident += sum(v.numel() * v.element_size() for st in optimizer.state.values()
                        for v in st.values() if torch.is_tensor(v) and v.dim() > 0)
    resident += x.numel() * x.element_size() + y.numel() * y.element_size()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    deltas = sorted((e.time_range.start, e.cpu_memory_usage) for e in prof.events()
                    if e.name == "[memory]")
    live = peak = 0
    for _, d in deltas:
        live += d
        peak = max(peak, live)
    by_op: dict[str, int] = {}
    for e in prof.key_averages():
        if e.cpu_memory_usage > 0:
            by_op[e.key] = int(e.cpu_memory_usage)
    return {"peak": int(peak) + resident, "resident": resident, "above_resident": int(peak),
            "self_bytes_by_op": by_op}
