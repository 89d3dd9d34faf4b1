"""Time and peak memory of one attention head against sequence length n.

Predictions (one head, head dimension d, batch 1, forward + backward):

    multiply-adds:  S = Q Kᵀ and O = A V cost n²·d each, so the forward is 4 n² d FLOPs and
                    the backward (dV, dA, dQ, dK: four more n × n × d products) 8 n² d;
    memory:         the n × n probabilities A are SAVED for the backward pass, and the backward
                    builds dA and dS of the same size: O(n²) floats, next to O(n·d) for Q, K, V.

We measure wall time (best of ``repeats``, interleaved across lengths, BLAS pinned to one
thread) and the peak of the
bytes NumPy allocates (NumPy reports its buffers to ``tracemalloc``, so the count is exact
and deterministic, not a noisy RSS reading). Chapter: stage 7 ("What attention costs").
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.nn import functional as F

__all__ = ["attention_flops", "attention_peak_bytes", "attention_seconds", "profile_attention",
           "predicted_score_bytes"]


def attention_flops(n: int, d: int, backward: bool = False) -> int:
    """FLOPs (2 per multiply-add) of softmax(QKᵀ)V for n positions: 4n²d, or 12n²d with backward.

    >>> attention_flops(2, 3)
    48
    """
    fwd = 2 * (2 * n * n * d)  # Q Kᵀ and A V
    return fwd * 3 if backward else fwd


def predicted_score_bytes(n: int, itemsize: int = 4, heads: int = 1, batch: int = 1) -> int:
    """Bytes of ONE n × n score/probability matrix per head and sequence."""
    return n * n * itemsize * heads * batch


def _inputs(n: int, d: int, dtype: Any, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    rng = np.random.default_rng(seed)
    return tuple(Tensor(rng.standard_normal((1, n, d)).astype(dtype), requires_grad=True)
                 for _ in range(3))  # type: ignore[return-value]


def _step(q: Tensor, k: Tensor, v: Tensor, grad: np.ndarray, causal: bool) -> None:
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    out.backward(grad)


def attention_peak_bytes(n: int, d: int, *, dtype: Any = np.float32, causal: bool = True,
                         backward: bool = True) -> int:
    """Peak bytes NumPy holds during one attention forward (+ backward) beyond the inputs."""
    q, k, v = _inputs(n, d, dtype)
    grad = np.ones((1, n, d), dtype=dtype)
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        if backward:
            _step(q, k, v, grad, causal)
        else:
            F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return int(peak - base)


def _timed_step(n: int, d: int, dtype: Any) -> Any:
    q, k, v = _inputs(n, d, dtype)
    grad = np.ones((1, n, d), dtype=dtype)

    def once() -> float:
        q.grad = k.grad = v.grad = None
        t0 = time.perf_counter()
        _step(q, k, v, grad, True)
        return time.perf_counter() - t0

    return once


def attention_seconds(n: int, d: int, *, dtype: Any = np.float32, repeats: int = 3) -> float:
    """Best-of-``repeats`` wall seconds of one causal forward + backward (one BLAS thread)."""
    return _interleaved_seconds([n], d, dtype, repeats)[0]


def _interleaved_seconds(ns: list[int] | tuple[int, ...], d: int, dtype: Any,
                         repeats: int) -> list[float]:
    """Best time per n, with the repeats interleaved across lengths (round robin), so that a
    burst of load from other processes hits every length alike instead of one."""
    from threadpoolctl import threadpool_limits

    best = [float("inf")] * len(ns)
    with threadpool_limits(limits=1, user_api="blas"):
        steps = [_timed_step(n, d, dtype) for n in ns]
        for step in steps:
            step()  # warm-up
        for _ in range(repeats):
            for i, step in enumerate(steps):
                best[i] = min(best[i], step())
    return best


def profile_attention(ns: list[int] | tuple[int, ...], d: int, *, repeats: int = 3,
                      dtype: Any = np.float32) -> list[dict[str, float]]:
    """One record per n: measured seconds and peak bytes next to the FLOP and n² predictions."""
    itemsize = np.dtype(dtype).itemsize
    seconds = _interleaved_seconds(ns, d, dtype, repeats)
    rows = []
    for n, sec in zip(ns, seconds, strict=True):
        peak = attention_peak_bytes(n, d, dtype=dtype)
        rows.append({"n": n, "d": d, "seconds": sec, "peak_bytes": peak,
                     "flops": attention_flops(n, d, backward=True),
                     "score_bytes": predicted_score_bytes(n, itemsize),
                     "input_bytes": 3 * n * d * itemsize})
    return rows
