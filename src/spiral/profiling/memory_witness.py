"""Independent witnesses for the memory profiler: tracemalloc and torch.profiler.

NumPy reports every data buffer it allocates to Python's ``tracemalloc`` (in its own
domain, ``np.lib.tracemalloc_domain``), including the scratch arrays that live only inside
one kernel, which the engine's hooks cannot see. :func:`tracemalloc_step_peak` runs the same
training step as :func:`spiral.profiling.memory_profiler.profile_step` under tracemalloc:

    numpy peak = traced peak − Python objects (the graph's closures, tensors, dicts)
                 + resident arrays (allocated before tracing began)

The Python-object bytes are read from a snapshot at the end of the forward pass (domain
filter: everything but NumPy's), when the graph, and so the Python side, is largest.

:func:`torch_step_peak` reads PyTorch's own tagged memory timeline on CPU (``torch.profiler``
with ``profile_memory=True``): the same quantity for the same step in another engine, with
torch's tags beside ours (torch is imported lazily; the core never needs it).
Chapter: stage 11 (memory analysis).
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import numpy as np

from spiral.nn import functional as F
from spiral.profiling.memory_profiler import as_array

__all__ = ["tracemalloc_step_peak", "torch_step_peak", "torch_forward_bytes",
           "TORCH_CATEGORIES"]


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
    x, y = (as_array(a) for a in batch)
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


TORCH_CATEGORIES = ("param", "optimizer_state", "input", "temporary", "activation", "grad",
                    "autograd_detail", "unknown")


def torch_step_peak(model: Any, ids: np.ndarray, targets: np.ndarray,
                    optimizer: Any = None) -> dict[str, Any]:
    """Peak CPU bytes of one torch training step, by torch's own tags.

    ``torch.profiler`` (``profile_memory=True``, with shapes and stacks) records every
    allocation; its memory timeline tags each tensor as parameter, optimizer state, input,
    temporary, activation, gradient or autograd detail. Returns the peak, its time index
    and the bytes per tag there (one warm-up step first, so Adam's state exists).
    """
    import json
    import tempfile
    import warnings

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
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        path = f"{tmp}/timeline.json"
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as fh:
            _, sizes = json.load(fh)
    rows = np.asarray(sizes, dtype=np.int64)[:, 1:]  # column 0 is unused by torch
    totals = rows.sum(axis=1)
    i = int(totals.argmax())
    return {"peak": int(totals[i]), "peak_index": i, "n_samples": len(totals),
            "peak_by_tag": {k: int(v) for k, v in zip(TORCH_CATEGORIES, rows[i])}}


def torch_forward_bytes(model: Any, ids: np.ndarray, targets: np.ndarray) -> int:
    """Bytes torch holds for backward after the forward pass and the loss (CPU timeline,
    everything but parameters and inputs): the end-of-forward activations, comparable
    array for array with the analytic model's ``activations_end_of_forward``."""
    import json
    import tempfile
    import warnings

    import torch
    from torch.profiler import ProfilerActivity, profile

    x = torch.as_tensor(ids, dtype=torch.long)
    y = torch.as_tensor(targets, dtype=torch.long)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 y.reshape(-1))
        del logits
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        path = f"{tmp}/timeline.json"
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as fh:
            _, sizes = json.load(fh)
    del loss
    last = dict(zip(TORCH_CATEGORIES, sizes[-1][1:]))
    return int(sum(v for k, v in last.items() if k not in ("param", "input")))
