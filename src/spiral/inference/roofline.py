"""The roofline: is a kernel limited by arithmetic or by memory traffic?

A kernel doing F FLOPs while moving Q bytes between memory and the cores has arithmetic
intensity I = F / Q (FLOP per byte). On a machine with peak compute π (FLOP/s) and memory
bandwidth β (byte/s) it cannot run faster than

    attainable(I) = min(π, β · I)                 (Williams, Waterman & Patterson, 2009)

the two lines meet at the ridge I* = π / β. Below it a kernel is memory-bound. One forward
of a GPT over T new tokens with t positions already cached reads every weight once
(N_mm matmul parameters), reads the cache (t positions, 2·L·Hkv·hd values each) and writes
T new positions, so with b bytes per number

    F = T·(2·N_mm + 4·L·H·hd·(t + T))        Q ≈ b·(N_mm + 2·L·Hkv·hd·(t + T) + T·C·(…))

(:func:`spiral.scaling.flops.matmul_parameters`; activations add O(T·C) bytes per layer).
Prefill (T = prompt length) reuses each weight T times: I grows with T. Decode (T = 1)
uses each weight once: I ≈ 2 / b FLOP per byte whatever the model, far below the ridge of
any modern chip — so decoding is memory-bandwidth bound, and batching B sequences
(T = B rows sharing one weight read) is how throughput is won back. π and β here are
measured: a large BLAS matmul and a large array copy. Chapter: stage 17 (inference).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from spiral.scaling.flops import matmul_parameters

__all__ = ["attainable", "best_time", "forward_bytes", "forward_flops_cached",
           "measure_bandwidth", "measure_peak_flops"]


def best_time(fn: Callable[[], Any], repeats: int = 5) -> float:
    """The fastest of ``repeats`` timed calls (seconds): the least disturbed by other load."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_peak_flops(n: int = 1024, dtype: Any = np.float32, repeats: int = 5) -> float:
    """FLOP/s of one n × n @ n × n BLAS matmul (2·n³ FLOPs), best of ``repeats``."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    a @ b  # warm-up: threads and pages
    return 2.0 * n ** 3 / best_time(lambda: a @ b, repeats)


def measure_bandwidth(n_bytes: int = 1 << 27, repeats: int = 5) -> float:
    """Memory bandwidth (byte/s) of copying ``n_bytes`` into a preallocated array: each copy
    reads n_bytes and writes n_bytes (2·n_bytes of traffic), best of ``repeats``."""
    src = np.ones(n_bytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    return 2.0 * src.nbytes / best_time(lambda: np.copyto(dst, src), repeats)


def forward_flops_cached(config: Any, n_new: int, n_cached: int = 0, batch: int = 1) -> int:
    """Matmul FLOPs of a forward over ``n_new`` tokens after ``n_cached`` cached ones, per
    batch of ``batch`` sequences: T·(2·N_mm) + attention 4·L·H·hd·T·(t + T) (each new query
    against all t + T keys, the full rectangle as our kernel computes it)."""
    if n_new < 1 or n_cached < 0 or batch < 1:
        raise ValueError(f"need n_new >= 1, n_cached >= 0, batch >= 1; got {n_new}, "
                         f"{n_cached}, {batch}")
    c = config
    hd = c.d_model // c.n_heads
    attn = 4 * c.n_layers * c.n_heads * hd * n_new * (n_cached + n_new)
    return batch * (2 * matmul_parameters(c) * n_new + attn)


def forward_bytes(config: Any, n_new: int, n_cached: int = 0, batch: int = 1,
                  itemsize: int = 4) -> int:
    """Minimum memory traffic of the same forward: the weights once (shared by the batch),
    each sequence's cache read, its new keys and values written, and each new token's
    residual stream read and written once per layer (2·L·C)."""
    c = config
    hd = c.d_model // c.n_heads
    kv_heads = c.n_heads if c.n_kv_heads is None else c.n_kv_heads
    kv = 2 * c.n_layers * kv_heads * hd * (n_cached + n_new)
    acts = 2 * c.n_layers * c.d_model * n_new
    return itemsize * (matmul_parameters(c) + batch * (kv + acts))


def attainable(intensity: float | np.ndarray, peak_flops: float, bandwidth: float
               ) -> float | np.ndarray:
    """The roofline: min(π, β·I) FLOP/s at arithmetic intensity I (FLOP per byte)."""
    return np.minimum(peak_flops, bandwidth * np.asarray(intensity, dtype=np.float64))
