"""Shared helper of the stage-6 experiments (no ``EXPERIMENT`` here).

``single_thread`` pins BLAS to one thread while an experiment runs. On a shared two-core
machine a multi-threaded GEMM oversubscribes the cores and ran ~10x slower than one thread
(measured: 50 layers of a 64 x 256 batch, 4.4 s vs 0.44 s; see the stage-6 lab notes).
Chapter: stage 6 (training stability).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Limit BLAS/OpenMP pools to one thread inside the block (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with the test extra
        yield
        return
    with threadpool_limits(limits=1):
        yield
